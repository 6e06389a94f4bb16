// Package demo is the plumbing shared by the runnable examples: it decides
// where jobs go and hosts the simulated API and the webhook receiver, so that
// each example's main.go only tells its story.
//
// Offline (the default, when EZTHROTTLE_API_KEY is not set) it starts an
// embedded ezlocal engine and serves the simulated API and the webhook
// receiver on a loopback port: no account, no network.
//
// With EZTHROTTLE_API_KEY set, jobs go to the real EZThrottle Cloud
// (EZTHROTTLE_PROXY_URL / EZTHROTTLE_URL override the endpoints, e.g. the URL
// printed by 'ezthrottle dev'). The engine must then reach this process, so
// the simulated API and the receiver listen on EZTHROTTLE_EXAMPLE_ADDR
// (default 127.0.0.1:8080) and are announced as EZTHROTTLE_EXAMPLE_PUBLIC_URL,
// a public URL that tunnels to it (ngrok, cloudflared, ...).
// EZTHROTTLE_WEBHOOK_SECRET, when set, makes the receiver verify signatures.
package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// Secret is the webhook signing secret of the offline engine's account.
const Secret = "whsec_demo_0123456789abcdef"

// HookPath is where the webhook receiver is mounted.
const HookPath = "/webhooks/ezthrottle"

// Env is an example's world.
type Env struct {
	// Offline is true when the embedded engine is used.
	Offline bool
	// Engine is the embedded engine (nil with the real Cloud).
	Engine *ezlocal.Engine
	// Client talks to the engine (embedded or Cloud).
	Client *ezclient.Client
	// Mux serves the simulated API; mount its routes before using them.
	Mux *http.ServeMux
	// BaseURL is the URL at which the engine reaches Mux.
	BaseURL string
	// Hooks receives the jobs' results at HookURL.
	Hooks   *webhook.Handler
	HookURL string
	// Verifying is true when the receiver checks signatures.
	Verifying bool

	srv   *http.Server
	start time.Time
	mu    sync.Mutex
	tr    *http.Transport
}

// Start sets up the example's world. opts tune the embedded engine.
func Start(opts ...ezlocal.Option) (*Env, error) {
	e := &Env{Mux: http.NewServeMux(), start: time.Now(), tr: &http.Transport{}}
	hc := &http.Client{Transport: e.tr, Timeout: 30 * time.Second}
	secret := Secret
	addr := "127.0.0.1:0"
	var clientOpts []ezclient.Option
	if os.Getenv(ezclient.EnvAPIKey) == "" {
		e.Offline = true
		eng, err := ezlocal.Start(append([]ezlocal.Option{
			ezlocal.WithWebhookSecrets(ezlocal.DefaultCustomerID, Secret, ""),
			ezlocal.WithWebhookRetries(100*time.Millisecond, 200*time.Millisecond),
			ezlocal.WithRetryDelay(200 * time.Millisecond),
		}, opts...)...)
		if err != nil {
			return nil, err
		}
		e.Engine = eng
		clientOpts = []ezclient.Option{
			ezclient.WithAPIKey(eng.APIKey()), ezclient.WithProxyURL(eng.URL()), ezclient.WithEngineURL(eng.URL()),
		}
	} else {
		secret = os.Getenv("EZTHROTTLE_WEBHOOK_SECRET")
		addr = envOr("EZTHROTTLE_EXAMPLE_ADDR", "127.0.0.1:8080")
		e.BaseURL = strings.TrimRight(os.Getenv("EZTHROTTLE_EXAMPLE_PUBLIC_URL"), "/")
		if e.BaseURL == "" {
			return nil, errors.New("EZTHROTTLE_API_KEY is set, so this example uses the real EZThrottle Cloud, " +
				"which must reach the simulated API and the webhook receiver: set EZTHROTTLE_EXAMPLE_PUBLIC_URL to a public URL " +
				"that tunnels to EZTHROTTLE_EXAMPLE_ADDR (default 127.0.0.1:8080), or unset EZTHROTTLE_API_KEY to run offline")
		}
	}
	clientOpts = append(clientOpts, ezclient.WithHTTPClient(hc), ezclient.WithLocalHTTPClient(&http.Client{Transport: e.tr}))
	c, err := ezclient.New(clientOpts...)
	if err != nil {
		e.Close()
		return nil, err
	}
	e.Client = c

	var hopts []webhook.Option
	if secret != "" {
		hopts = append(hopts, webhook.WithSecret(secret))
		e.Verifying = true
	}
	if e.Hooks, err = webhook.NewHandler(hopts...); err != nil {
		e.Close()
		return nil, err
	}
	e.Mux.Handle("POST "+HookPath, e.Hooks)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		e.Close()
		return nil, err
	}
	e.srv = &http.Server{Handler: e.Mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	if e.BaseURL == "" {
		e.BaseURL = "http://" + ln.Addr().String()
	}
	e.HookURL = e.BaseURL + HookPath
	return e, nil
}

// Describe returns one line saying where jobs go.
func (e *Env) Describe() string {
	if e.Offline {
		return fmt.Sprintf("offline: embedded EZThrottle engine at %s, simulated API and webhook receiver at %s", e.Engine.URL(), e.BaseURL)
	}
	return fmt.Sprintf("EZThrottle Cloud via %s (API key from EZTHROTTLE_API_KEY); simulated API and receiver at %s", e.Client.ProxyURL(), e.BaseURL)
}

// WaitTimeout bounds waiting for a webhook: short offline, longer on the
// real Cloud.
func (e *Env) WaitTimeout() time.Duration {
	if e.Offline {
		return 15 * time.Second
	}
	return 2 * time.Minute
}

// Wait waits for the result of a job at the receiver.
func (e *Env) Wait(ctx context.Context, k webhook.Key) (webhook.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, e.WaitTimeout())
	defer cancel()
	return e.Hooks.Wait(ctx, k)
}

// Since returns the time since Start, rounded for printing.
func (e *Env) Since() time.Duration { return time.Since(e.start).Round(10 * time.Millisecond) }

// Printf prints a line prefixed with the elapsed time.
func (e *Env) Printf(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Printf("[%6.2fs] %s\n", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

// Close stops everything Start started.
func (e *Env) Close() {
	if e.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = e.srv.Shutdown(ctx)
		cancel()
	}
	if e.Hooks != nil {
		_ = e.Hooks.Close()
	}
	if e.Engine != nil {
		_ = e.Engine.Close()
	}
	e.tr.CloseIdleConnections()
}

// Fatal prints err and exits with status 1.
func Fatal(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
