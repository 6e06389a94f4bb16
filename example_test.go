package ezthrottle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// exampleEngine stands in for an *ezclient.Client in these examples.
var exampleEngine = ezthrottle.SubmitterFunc(func(_ context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
	u, _ := url.Parse(job.URL)
	fmt.Printf("engine got: %s %s body=%q\n", job.Method, u.Path, job.Body)
	return &ezclient.Submission{JobID: "job_123", Status: ezclient.StatusQueued, IdempotentKey: "key_abc"}, nil
})

func tooManyRequests() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	}))
}

// Wrap the *http.Client you already use (or hand to an SDK). The original
// client is not modified.
func ExampleWrap() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-EZTHROTTLE-RPS", "5") // the API may steer the pace
		fmt.Fprint(w, "hello")
	}))
	defer api.Close()

	// In production: ezclient.New() (reads EZTHROTTLE_API_KEY), then
	// ezthrottle.WithClient(client, ...).
	hc, err := ezthrottle.Wrap(http.DefaultClient,
		ezthrottle.WithForwarding(exampleEngine, ezthrottle.JobWebhook("https://app.example/webhook")))
	if err != nil {
		log.Fatal(err)
	}
	resp, err := hc.Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(b))
	// Output: 200 hello
}

// Limits per host: exact hosts, host:port, and *.domain wildcards.
func ExampleWithHostLimit() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer api.Close()

	tr, err := ezthrottle.New(
		ezthrottle.WithDefaultLimit(ezthrottle.DefaultLimit()), // 2 rps, 2 in flight
		ezthrottle.WithHostLimit("api.stripe.com", ezthrottle.Limit{Rate: 25, Burst: 5, MaxInFlight: 10}),
		ezthrottle.WithHostLimit("*.openai.com", ezthrottle.Limit{Rate: 1, MaxInFlight: 1}),
		ezthrottle.WithHostLimit("127.0.0.1", ezthrottle.Limit{Rate: 50, Burst: 10, MaxInFlight: 4}),
		ezthrottle.WithHostLimit("localhost", ezthrottle.Unlimited()),
	)
	if err != nil {
		log.Fatal(err)
	}
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	u, _ := url.Parse(api.URL)
	st, _ := tr.Limiter().(*ezthrottle.MemoryLimiter).Stats(ezthrottle.HostKey(u))
	fmt.Printf("%v rps, burst %d, %d in flight\n", st.Rate, st.Burst, st.MaxInFlight)
	// Output: 50 rps, burst 10, 4 in flight
}

// A 429 becomes a job; the caller gets a 202 whose headers name the job.
func ExampleJobFromResponse() {
	api := tooManyRequests()
	defer api.Close()
	hc, _ := ezthrottle.Wrap(nil, ezthrottle.WithForwarding(exampleEngine))

	resp, err := hc.Get(api.URL + "/v1/items")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	if info, ok := ezthrottle.JobFromResponse(resp); ok {
		fmt.Println(resp.StatusCode, info.JobID(), info.Reason, info.UpstreamStatus)
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// engine got: GET /v1/items body=""
	// 202 job_123 status 429
	// {"job_id":"job_123","idempotent_key":"key_abc","status":"queued"}
}

// SDKs that decode any 2xx into an empty result hide the 202: plant a
// receipt in the context and read it after the call.
func ExampleWithReceipt() {
	api := tooManyRequests()
	defer api.Close()
	hc, _ := ezthrottle.Wrap(nil, ezthrottle.WithForwarding(exampleEngine))

	ctx, receipt := ezthrottle.WithReceipt(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "DELETE", api.URL+"/v1/items/7", nil)
	resp, err := hc.Do(req) // typically hidden inside an SDK call
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()

	if receipt.Forwarded() {
		fmt.Println("queued as", receipt.JobID())
	}
	// Output:
	// engine got: DELETE /v1/items/7 body=""
	// queued as job_123
}

// With WithForwardedError the forwarded call returns a typed error instead
// of the 202.
func ExampleWithForwardedError() {
	api := tooManyRequests()
	defer api.Close()
	hc, _ := ezthrottle.Wrap(nil, ezthrottle.WithForwarding(exampleEngine), ezthrottle.WithForwardedError())

	_, err := hc.Get(api.URL + "/v1/models")
	var fe *ezthrottle.ForwardedError
	if errors.As(err, &fe) {
		fmt.Println("forwarded as", fe.JobID())
	}
	// Output:
	// engine got: GET /v1/models body=""
	// forwarded as job_123
}

// AutoForward is the Go form of the @auto_forward decorator: legacy code
// returns a *ForwardError and the job is submitted directly, never re-run.
func ExampleAutoForward() {
	charge := func(ctx context.Context) (string, error) {
		// ... the call failed with a 429 or a network error ...
		return "", &ezthrottle.ForwardError{
			Job: ezclient.Job{
				URL:           "https://api.stripe.com/v1/charges",
				Method:        "POST",
				Body:          "amount=1000&currency=usd",
				IdempotentKey: "order-12345",
				Metadata:      map[string]any{"order_id": "12345"},
			},
			Cause: errors.New("429 Too Many Requests"),
		}
	}
	_, sub, err := ezthrottle.AutoForward(context.Background(), exampleEngine, charge,
		ezthrottle.JobWebhook("https://app.example/payment-complete"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("job", sub.JobID, sub.Status)
	// Output:
	// engine got: POST /v1/charges body="amount=1000&currency=usd"
	// job job_123 queued
}

// The middleware form composes with other RoundTripper middleware, such as
// otelhttp (outside: one span per logical call; inside: one per attempt).
// All Transports made by one middleware share one limiter.
func ExampleMiddleware() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("X-Tag"))
	}))
	defer api.Close()

	throttle, err := ezthrottle.Middleware(ezthrottle.WithHostLimit("127.0.0.1", ezthrottle.Limit{Rate: 100, MaxInFlight: 8}))
	if err != nil {
		log.Fatal(err)
	}
	tagging := func(next http.RoundTripper) http.RoundTripper {
		return rtFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context()) // never mutate the caller's request
			r.Header.Set("X-Tag", "tagged")
			return next.RoundTrip(r)
		})
	}
	hc := &http.Client{Transport: throttle(tagging(http.DefaultTransport))}
	resp, err := hc.Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Println(string(b))
	// Output: tagged
}
