// Package e2e holds the end-to-end tests: the library's real clients
// (ezclient, Steps, the Transport, webhook.Handler) against a real ezlocal
// engine, a simulated API and webhook receivers, all over loopback HTTP.
//
// The engine runs on an instant clock, so retries, pacing, timeouts and
// webhook redeliveries cost no wall time; every test is deterministic.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secret is the webhook signing secret of the test account.
const secret = "whsec_e2e_0123456789abcdef"

// instantClock makes every engine delay instant: Sleep advances the clock.
// The webhook receivers read the same clock, so signature timestamps stay
// within the tolerance however far the engine's time has advanced.
type instantClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *instantClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *instantClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return nil
}

// env is one test's world: an engine, a client, a simulated API and a
// verifying webhook receiver.
type env struct {
	t      *testing.T
	clk    *instantClock
	engine *ezlocal.Engine
	client *ezclient.Client
	api    *fakeAPI
	hooks  *webhook.Handler
	hookWS *httptest.Server
}

// newEnv starts everything, closed at cleanup. opts configure the engine.
func newEnv(t *testing.T, opts ...ezlocal.Option) *env {
	t.Helper()
	clk := &instantClock{now: time.Now().Truncate(time.Second)}
	base := []ezlocal.Option{
		ezlocal.WithClock(clk),
		ezlocal.WithWebhookSecrets(ezlocal.DefaultCustomerID, secret, ""),
		ezlocal.WithWebhookRetries(time.Second, 2*time.Second),
	}
	e, err := ezlocal.Start(append(base, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })

	hooks, err := webhook.NewHandler(webhook.WithSecret(secret), webhook.WithClock(clk.Now))
	require.NoError(t, err)
	t.Cleanup(func() { _ = hooks.Close() })
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := ezclient.New(
		ezclient.WithAPIKey(e.APIKey()), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()),
		ezclient.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}),
		ezclient.WithLocalHTTPClient(&http.Client{Transport: tr}),
		ezclient.WithRetry(1, 0, 0),
	)
	require.NoError(t, err)
	return &env{t: t, clk: clk, engine: e, client: c, api: newFakeAPI(t), hooks: hooks, hookWS: hookSrv}
}

// hookURL is the URL of the verifying receiver.
func (e *env) hookURL() string { return e.hookWS.URL + "/webhooks/ezthrottle" }

// ctx returns a context that only guards against a hung test; nothing is
// timed.
func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// waitJob waits until the engine settled the job (executed, children
// spawned, deliveries finished).
func (e *env) waitJob(id string) ezlocal.JobInfo {
	e.t.Helper()
	info, err := e.engine.WaitJob(e.ctx(), id)
	require.NoError(e.t, err, "job %s: %v", id, info.Events)
	return info
}

// waitHook waits for the verified webhook delivery of a job.
func (e *env) waitHook(id string) webhook.Result {
	e.t.Helper()
	r, err := e.hooks.WaitJob(e.ctx(), id)
	require.NoError(e.t, err, "no webhook for job %s", id)
	return r
}

// fakeAPI is the rate-limited, flaky API the jobs call. Routes:
//
//	/seq/<name>?codes=429,200     the n-th call gets codes[n-1] (then the last)
//	/region/<name>?iad=502&default=200
//	                              answers by the engine's region header; a
//	                              region without a code blocks until cancelled
//	/block/<name>                 never answers (until cancelled)
//	/gate/<name>                  answers 200 once the test calls open(name)
//
// Every answer's body is "<path> <status> #<n>[ from <region>]".
type fakeAPI struct {
	*httptest.Server
	mu    sync.Mutex
	hits  map[string]int
	hdr   map[string][]http.Header
	gates map[string]chan struct{}
}

func newFakeAPI(t *testing.T) *fakeAPI {
	a := &fakeAPI{hits: map[string]int{}, hdr: map[string][]http.Header{}, gates: map[string]chan struct{}{}}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	a.mu.Lock()
	a.hits[r.URL.Path]++
	n := a.hits[r.URL.Path]
	a.hdr[r.URL.Path] = append(a.hdr[r.URL.Path], r.Header.Clone())
	a.mu.Unlock()
	gate := a.gate(r.URL.Path)
	region := r.Header.Get("X-EZThrottle-Region")
	code := 0
	switch {
	case strings.HasPrefix(r.URL.Path, "/seq/"):
		codes := strings.Split(r.URL.Query().Get("codes"), ",")
		code, _ = strconv.Atoi(codes[min(n, len(codes))-1])
	case strings.HasPrefix(r.URL.Path, "/region/"):
		q := r.URL.Query()
		v := q.Get(region)
		if v == "" {
			v = q.Get("default")
		}
		code, _ = strconv.Atoi(v)
	case strings.HasPrefix(r.URL.Path, "/gate/"):
		select {
		case <-gate:
			code = http.StatusOK
		case <-r.Context().Done():
		}
	}
	if code == 0 {
		<-r.Context().Done()
		return
	}
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	fmt.Fprintf(w, "%s %d #%d", r.URL.Path, code, n)
	if region != "" {
		fmt.Fprintf(w, " from %s", region)
	}
}

func (a *fakeAPI) gate(path string) chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, ok := a.gates[path]
	if !ok {
		g = make(chan struct{})
		a.gates[path] = g
	}
	return g
}

// open lets the calls to /gate/<name> answer.
func (a *fakeAPI) open(name string) { close(a.gate("/gate/" + name)) }

// url returns the API's URL for a path (with its query).
func (a *fakeAPI) url(pathAndQuery string) string { return a.URL + pathAndQuery }

// count returns how many calls the path got.
func (a *fakeAPI) count(path string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hits[path]
}

// headers returns the headers of the calls the path got.
func (a *fakeAPI) headers(path string) []http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]http.Header(nil), a.hdr[path]...)
}

// receiver is a plain webhook endpoint answering with a fixed status and
// counting deliveries (for quorum and signature tests).
type receiver struct {
	*httptest.Server
	mu  sync.Mutex
	got int
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.got++
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}
