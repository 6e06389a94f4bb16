// Quickstart: wrap an http.Client with the EZThrottle Transport and call an
// API that rate-limits you.
//
//	go run ./examples/quickstart
//
// Offline by default: an embedded EZThrottle engine and a simulated API run
// in this process. The story:
//
//  1. The API asks for a pace (X-EZTHROTTLE-RPS: 4): the Transport spaces the
//     calls accordingly, no code needed.
//  2. The API's quota runs out and it answers 429. Instead of an error, the
//     Transport hands the call to EZThrottle and returns 202 Accepted with
//     the job's ID.
//  3. EZThrottle retries the call when the API allows it again and delivers
//     the result, signed, to your webhook, where the code that made the call
//     is waiting for it.
//
// While it runs, the embedded engine's dashboard (its root URL) and the
// Transport's live view (/debug/ezthrottle on the simulated API's server)
// show the same story in a browser; run with -hold to keep both up after
// the story ends, until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/examples/internal/demo"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

func main() {
	hold := flag.Bool("hold", false, "keep the engine, its dashboard and the Transport's live view up after the story, until Ctrl-C")
	flag.Parse()
	env, err := demo.Start()
	if err != nil {
		demo.Fatal(err)
	}
	defer env.Close()
	env.Mux.Handle("/v1/reports", newReportsAPI())

	// The whole integration: wrap your http.Client. Requests are throttled
	// per host; failed ones (429, 5xx, network errors) become EZThrottle jobs
	// whose results go to your webhook.
	client, err := ezthrottle.Wrap(&http.Client{Timeout: 10 * time.Second},
		ezthrottle.WithClient(env.Client, ezthrottle.JobWebhook(env.HookURL)))
	if err != nil {
		demo.Fatal(err)
	}
	defer client.CloseIdleConnections()
	// The Transport's live state (hosts, learned limits, pauses, forwarded
	// jobs), mounted like net/http/pprof; protect it in a real service.
	env.Mux.Handle("GET /debug/ezthrottle", client.Transport.(*ezthrottle.Transport).LiveHandler())

	fmt.Println("EZThrottle quickstart")
	fmt.Println("  " + env.Describe())
	if env.Engine != nil {
		fmt.Printf("  engine dashboard:    %s/\n", env.Engine.URL())
	}
	fmt.Printf("  Transport live view: %s/debug/ezthrottle\n", env.BaseURL)
	fmt.Println()
	url := env.BaseURL + "/v1/reports"

	fmt.Println("1. Pacing: the API answers with X-EZTHROTTLE-RPS: 4, so calls are spaced ~250 ms apart.")
	for i := 1; i <= 4; i++ {
		resp, err := client.Get(url)
		if err != nil {
			demo.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		env.Printf("GET /v1/reports → %d %s  (%s)", resp.StatusCode, http.StatusText(resp.StatusCode), strings.TrimSpace(string(body)))
	}

	fmt.Println()
	fmt.Println("2. The API's quota is used up: it answers 429 Too Many Requests (Retry-After: 1).")
	fmt.Println("   The Transport forwards the call to EZThrottle instead of failing:")
	resp, err := client.Get(url)
	if err != nil {
		demo.Fatal(err)
	}
	resp.Body.Close()
	env.Printf("GET /v1/reports → %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	info, forwarded := ezthrottle.JobFromResponse(resp)
	if !forwarded {
		demo.Fatal(fmt.Errorf("expected a forwarded 202, got %d", resp.StatusCode))
	}
	env.Printf("  %s: %s", ezthrottle.HeaderJobID, info.JobID())
	env.Printf("  %s: %s (upstream said %d)", ezthrottle.HeaderForwardedReason, info.Reason, info.UpstreamStatus)

	fmt.Println()
	fmt.Println("3. EZThrottle waits for the API's Retry-After, calls it again, and delivers the result")
	fmt.Println("   to the webhook; this code waits for it by job ID:")
	res, err := env.Wait(context.Background(), webhook.KeyFromHeader(resp.Header))
	if err != nil {
		demo.Fatal(fmt.Errorf("waiting for the webhook: %w", err))
	}
	verified := "signature verified"
	if !env.Verifying {
		verified = "unsigned: set EZTHROTTLE_WEBHOOK_SECRET to verify"
	}
	env.Printf("webhook for %s: %s, HTTP %d, body %s (%s)", res.JobID, res.Status, res.StatusCode, strings.TrimSpace(res.Body), verified)

	if env.Engine != nil {
		job, _ := env.Engine.Job(res.JobID)
		fmt.Println()
		fmt.Println("What the engine did with the job:")
		for _, ev := range job.Events {
			fmt.Println("  " + ev.String())
		}
	}
	fmt.Println()
	fmt.Println("Done: no request was lost, and no retry loop was written.")
	if *hold {
		fmt.Println()
		if env.Engine != nil {
			fmt.Printf("Holding: the dashboard stays up at %s/ and the live view at %s/debug/ezthrottle; Ctrl-C to stop.\n", env.Engine.URL(), env.BaseURL)
		} else {
			fmt.Printf("Holding: the live view stays up at %s/debug/ezthrottle; Ctrl-C to stop.\n", env.BaseURL)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		<-ctx.Done()
		stop()
	}
}

// reportsAPI is a simulated API with a pace header and a small quota: four
// calls, then 429 for one second.
type reportsAPI struct {
	mu        sync.Mutex
	remaining int
	emptyAt   time.Time
	served    int
}

func newReportsAPI() *reportsAPI { return &reportsAPI{remaining: 4} }

func (a *reportsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	if a.remaining == 0 && time.Since(a.emptyAt) >= time.Second {
		a.remaining = 4 // the quota window reset
	}
	ok := a.remaining > 0
	if ok {
		a.remaining--
		a.served++
		if a.remaining == 0 {
			a.emptyAt = time.Now()
		}
	}
	n := a.served
	a.mu.Unlock()

	w.Header().Set("X-EZTHROTTLE-RPS", "4")
	if !ok {
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"rate limited"}`, http.StatusTooManyRequests)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"report":%d,"ready":true}`+"\n", n)
}
