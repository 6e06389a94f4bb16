// Stripe: the real stripe-go client, throttled and protected by EZThrottle.
//
//	cd examples/sdks && go run ./stripe
//
// The only integration is the *http.Client handed to stripe-go:
//
//	hc, _ := ezthrottle.Wrap(http.DefaultClient, ezthrottle.WithClient(ez, ...))
//	sc := stripe.NewClient(key, stripe.WithBackends(stripe.NewBackendsWithConfig(
//		&stripe.BackendConfig{HTTPClient: hc})))
//
// Offline, stripe-go talks to a local fake of the Stripe API (BackendConfig.URL)
// that rate-limits the third payment. The Transport paces the calls, turns the
// 429 into an EZThrottle job (stripe-go's own Idempotency-Key becomes the
// job's key, so Stripe never charges twice) and stripe-go receives a 202: the
// caller learns the job ID from the response headers or from a Receipt, and
// the real payment intent arrives at the webhook.
package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	stripe "github.com/stripe/stripe-go/v82"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/examples/internal/demo"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

func main() {
	env, err := demo.Start()
	if err != nil {
		demo.Fatal(err)
	}
	defer env.Close()
	env.Mux.Handle("POST /v1/payment_intents", &fakeStripe{})
	fakeURL := env.BaseURL // in production: leave BackendConfig.URL unset

	fmt.Println("stripe-go through EZThrottle")
	fmt.Println("  " + env.Describe())
	fmt.Println()

	// Throttle the Stripe host at 5 requests/s, at most 2 in flight (for
	// the real API: ezthrottle.WithHostLimit("api.stripe.com", ...)), and
	// forward rate-limited calls to EZThrottle with results to our webhook.
	host := mustHost(fakeURL)
	hc, err := ezthrottle.Wrap(&http.Client{Timeout: 30 * time.Second},
		ezthrottle.WithHostLimit(host, ezthrottle.Limit{Rate: 5, Burst: 1, MaxInFlight: 2}),
		ezthrottle.WithClient(env.Client, ezthrottle.JobWebhook(env.HookURL)))
	if err != nil {
		demo.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	sc := stripe.NewClient("sk_test_example", stripe.WithBackends(stripe.NewBackendsWithConfig(&stripe.BackendConfig{
		HTTPClient:        hc,
		URL:               stripe.String(fakeURL),
		MaxNetworkRetries: stripe.Int64(0), // EZThrottle retries for us
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})))

	var forwarded []webhook.Key
	for i := 1; i <= 4; i++ {
		ctx, receipt := ezthrottle.WithReceipt(context.Background())
		pi, err := sc.V1PaymentIntents.Create(ctx, &stripe.PaymentIntentCreateParams{
			Amount:   stripe.Int64(int64(1000 * i)),
			Currency: stripe.String(string(stripe.CurrencyUSD)),
		})
		if err != nil {
			demo.Fatal(err)
		}
		if receipt.Forwarded() {
			// stripe-go decoded the 202's body: pi.ID is empty. The job
			// is in the receipt and in pi.LastResponse's headers.
			info, _ := receipt.Info()
			env.Printf("payment %d: Stripe said %d → forwarded, HTTP %d, job %s (key = stripe-go's Idempotency-Key %s)",
				i, info.UpstreamStatus, pi.LastResponse.StatusCode, receipt.JobID(), pi.LastResponse.Header.Get(ezthrottle.HeaderIdempotentKey))
			forwarded = append(forwarded, webhook.KeyFromHeader(pi.LastResponse.Header))
			continue
		}
		env.Printf("payment %d: %s %s, amount %d", i, pi.ID, pi.Status, pi.Amount)
	}

	fmt.Println()
	for _, k := range forwarded {
		r, err := env.Wait(context.Background(), k)
		if err != nil {
			demo.Fatal(err)
		}
		env.Printf("webhook for job %s: HTTP %d, Stripe's answer: %s", r.JobID, r.StatusCode, r.Body)
	}
	fmt.Println("\nEvery payment went through exactly once; stripe-go never saw a 429.")
}

func mustHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		demo.Fatal(err)
	}
	return u.Host
}

// fakeStripe answers POST /v1/payment_intents like Stripe, rate limiting the
// third call once, and replaying the answer for a repeated Idempotency-Key.
type fakeStripe struct {
	mu    sync.Mutex
	calls int
	seen  map[string]string
}

func (f *fakeStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	key := r.Header.Get("Idempotency-Key")
	f.mu.Lock()
	f.calls++
	n := f.calls
	if f.seen == nil {
		f.seen = map[string]string{}
	}
	prev, replay := f.seen[key]
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", fmt.Sprintf("req_%d", n))
	if replay {
		fmt.Fprint(w, prev)
		return
	}
	if n == 3 {
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests hit the API too quickly."}}`)
		return
	}
	body := fmt.Sprintf(`{"id":"pi_%04d","object":"payment_intent","amount":%s,"currency":%q,"status":"requires_payment_method"}`,
		n, r.PostForm.Get("amount"), r.PostForm.Get("currency"))
	f.mu.Lock()
	f.seen[key] = body
	f.mu.Unlock()
	fmt.Fprint(w, body)
}
