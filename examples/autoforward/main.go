// Autoforward: bring EZThrottle to legacy code without rewriting it.
//
//	go run ./examples/autoforward
//
// The Go form of the Python SDK's @auto_forward decorator. Existing code keeps
// its plain http.Client and its error handling; where it used to give up on a
// 429 or a network error it returns an *ezthrottle.ForwardError describing the
// request. ezthrottle.AutoForward runs the function and submits that request
// as a durable EZThrottle job, returning the submission (never re-running the
// failed call locally). The job's result arrives at the webhook.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/examples/internal/demo"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

// chargesURL is where the legacy code sends payments (set in main).
var chargesURL string

// httpClient is the legacy code's own client: not wrapped by anything.
var httpClient = &http.Client{Timeout: 5 * time.Second}

// processPayment is the "legacy" function. The only change made for
// EZThrottle: the two places that used to return an error now return a
// *ForwardError carrying the request.
func processPayment(ctx context.Context, orderID string) (map[string]any, error) {
	body := fmt.Sprintf(`{"amount":1000,"currency":"usd","order":%q}`, orderID)
	forward := func(cause error) error {
		return &ezthrottle.ForwardError{Cause: cause, Job: ezclient.Job{
			URL:           chargesURL,
			Method:        http.MethodPost,
			Headers:       map[string]string{"Content-Type": "application/json", "Authorization": "Bearer sk_test_legacy"},
			Body:          body,
			IdempotentKey: "order_" + orderID, // retries of this order are one job
			Metadata:      map[string]any{"order_id": orderID, "customer_id": "cust_123"},
		}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, chargesURL, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk_test_legacy")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, forward(err) // network errors are forwarded too
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		return nil, forward(fmt.Errorf("charges API: %s", resp.Status))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("charges API: %s", resp.Status) // a real failure: not forwarded
	}
	var out map[string]any
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

func main() {
	env, err := demo.Start()
	if err != nil {
		demo.Fatal(err)
	}
	defer env.Close()
	api := &chargesAPI{}
	env.Mux.Handle("/v1/charges", api)
	chargesURL = env.BaseURL + "/v1/charges"
	defer httpClient.CloseIdleConnections()

	fmt.Println("EZThrottle autoforward (legacy code)")
	fmt.Println("  " + env.Describe())
	fmt.Println()
	ctx := context.Background()

	// Job options AutoForward adds to every forwarded job: where results go.
	opts := []ezthrottle.JobOption{ezthrottle.JobWebhook(env.HookURL), ezthrottle.JobMeta("source", "autoforward")}

	var pending []*ezclient.Submission
	for _, order := range []string{"1001", "1002", "1003", "1004"} {
		charge, sub, err := ezthrottle.AutoForward(ctx, env.Client, func(ctx context.Context) (map[string]any, error) {
			return processPayment(ctx, order)
		}, opts...)
		var fe *ezthrottle.ForwardError
		switch {
		case err != nil && errors.As(err, &fe):
			env.Printf("order %s: wanted forwarding but the submission failed: %v", order, err)
		case err != nil:
			env.Printf("order %s: failed for good (not forwarded): %v", order, err)
		case sub != nil:
			env.Printf("order %s: not completed locally → forwarded to EZThrottle as job %s (key %s)", order, sub.JobID, sub.IdempotentKey)
			pending = append(pending, sub)
		default:
			env.Printf("order %s: charged locally: %v", order, charge)
		}
	}

	fmt.Println()
	fmt.Println("EZThrottle retries the forwarded payments; their results arrive at the webhook:")
	for _, sub := range pending {
		r, err := env.Wait(ctx, webhook.KeyOf(sub))
		if err != nil {
			demo.Fatal(err)
		}
		env.Printf("order %v (job %s): %s, HTTP %d, %s", r.Metadata["order_id"], r.JobID, r.Status, r.StatusCode, strings.TrimSpace(r.Body))
	}
	fmt.Println()
	fmt.Printf("The charges API saw %d calls for %d orders: each forwarded order was tried once locally,\n", api.calls(), 4)
	fmt.Println("then once by EZThrottle; none was charged twice and the legacy code kept its shape.")
}

// chargesAPI is a simulated payments API: order 1001 succeeds, 1002 is
// rate limited once, 1003 loses its connection once, 1004 is declined.
type chargesAPI struct {
	mu    sync.Mutex
	n     int
	tried map[string]int
}

func (a *chargesAPI) calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func (a *chargesAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var in struct{ Order string }
	_ = json.Unmarshal(b, &in)
	a.mu.Lock()
	if a.tried == nil {
		a.tried = map[string]int{}
	}
	a.n++
	a.tried[in.Order]++
	first := a.tried[in.Order] == 1
	a.mu.Unlock()

	switch {
	case in.Order == "1002" && first:
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"rate_limited"}`, http.StatusTooManyRequests)
		return
	case in.Order == "1003" && first:
		// Drop the connection without an answer: a network error.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	case in.Order == "1004":
		http.Error(w, `{"error":"card_declined"}`, http.StatusPaymentRequired)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"ch_%s","status":"succeeded"}`, in.Order)
}
