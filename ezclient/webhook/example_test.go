package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

func ExampleSign() {
	body := []byte(`{"job_id":"job_1","status":"success"}`)
	header := webhook.Sign("whsec_0123456789abcdef", time.Unix(1763674210, 0), body)
	fmt.Println(header)
	// Output: t=1763674210,v1=d6b30357b329742cfb11248ffc6e5d88bd5aa6b3609aa93f9e5d073dc9561995
}

func ExampleVerify() {
	body := []byte(`{"job_id":"job_1","status":"success"}`)
	header := webhook.Sign("the-old-secret-0123", time.Now(), body)

	// During a rotation the old secret is still accepted as the secondary.
	fmt.Println(webhook.Verify(header, body, "the-new-secret-4567", "the-old-secret-0123"))

	err := webhook.Verify(header, []byte(`{"job_id":"job_1","status":"failed"}`), "the-old-secret-0123")
	fmt.Println(errors.Is(err, webhook.ErrInvalidSignature), errors.Is(err, webhook.ErrMismatch))
	// Output:
	// <nil>
	// true true
}

// Mount the handler on a router. With a secret configured, unsigned or
// badly signed deliveries get 401; each result is stored for waiters and
// passed to the optional callback off the request path.
func ExampleNewHandler() {
	const secret = "whsec_0123456789abcdef"
	results := make(chan webhook.Result, 1)
	h, err := webhook.NewHandler(
		webhook.WithSecret(secret),
		webhook.WithCallback(func(ctx context.Context, r webhook.Result) {
			// Runs on a worker after the delivery was answered; a panic
			// here is recovered and logged.
			results <- r
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()

	mux := http.NewServeMux()
	mux.Handle("POST /webhooks/ezthrottle", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// What EZThrottle Cloud sends.
	body, _ := json.Marshal(webhook.CloudPayload{
		JobID: "job_1763674210055_853341", IdempotentKey: "order_1", Status: webhook.CloudSuccess,
		Response: &webhook.CloudResponse{StatusCode: 200, Body: `{"charged":true}`},
		Metadata: map[string]any{},
	})
	deliver := func(signed bool) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/ezthrottle", bytes.NewReader(body))
		if signed {
			req.Header.Set(webhook.SignatureHeader, webhook.Sign(secret, time.Now(), body))
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		reply, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s", resp.StatusCode, reply)
	}
	deliver(false) // rejected
	deliver(true)  // accepted
	r := <-results
	fmt.Printf("callback: job %s succeeded=%v status_code=%d body=%s\n", r.JobID, r.Succeeded, r.StatusCode, r.Body)
	deliver(true) // the engine's redelivery: acknowledged, not passed on again
	// Output:
	// 401 {"code":"invalid_signature","error":"missing X-EZThrottle-Signature header"}
	// 200 {"duplicate":false,"job_id":"job_1763674210055_853341","ok":true}
	// callback: job job_1763674210055_853341 succeeded=true status_code=200 body={"charged":true}
	// 200 {"duplicate":true,"job_id":"job_1763674210055_853341","ok":true}
}

// Wait for the result of a request the Transport forwarded to EZThrottle:
// its synthetic 202 Accepted carries the job ID and idempotent key.
func ExampleHandler_Wait() {
	h, err := webhook.NewHandler() // add webhook.WithSecret in production
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	srv := httptest.NewServer(h)
	defer srv.Close()

	// The answer an http.Client wrapped by the Transport returns when a call
	// was forwarded (built by hand here).
	resp := &http.Response{StatusCode: http.StatusAccepted, Header: http.Header{}}
	resp.Header.Set(webhook.JobIDHeader, "job_42")
	resp.Header.Set(webhook.IdempotentKeyHeader, "charge:order_42")
	key := webhook.KeyFromHeader(resp.Header)

	// The engine delivers the outcome later, possibly before Wait starts.
	delivered := make(chan struct{})
	defer func() { <-delivered }()
	go func() {
		defer close(delivered)
		body := []byte(`{"job_id":"job_42","idempotent_key":"charge:order_42","status":"success",` +
			`"response":{"status_code":201,"headers":{"content-type":"application/json"},"body":"{\"id\":\"ch_1\"}"},"metadata":{}}`)
		r, err := srv.Client().Post(srv.URL, "application/json", bytes.NewReader(body))
		if err == nil {
			r.Body.Close()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := h.Wait(ctx, key)
	if err != nil {
		log.Fatal(err) // context.DeadlineExceeded if it never came
	}
	fmt.Println(r.JobID, r.StatusCode, r.Header.Get("Content-Type"), r.Body)
	// Output: job_42 201 application/json {"id":"ch_1"}
}

// The Go counterpart of the README's asyncio section: submit many jobs
// concurrently, then collect their results as their webhooks arrive. A tiny
// fake self-hosted engine stands in for EZThrottle and delivers every result
// twice (delivery is at least once); the handler de-duplicates.
func Example_submitManyThenCollect() {
	h, err := webhook.NewHandler()
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	hooks := httptest.NewServer(h)
	defer hooks.Close()

	engine, deliveries := fakeEngine(hooks.Client())
	defer engine.Close()
	defer deliveries.Wait() // let the fake engine finish its deliveries

	client, err := ezclient.New(ezclient.WithSelfHosted(engine.URL, "user_1"), ezclient.WithHTTPClient(engine.Client()))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Submit concurrently.
	orders := []string{"order_1", "order_2", "order_3"}
	subs := make([]*ezclient.Submission, len(orders))
	var wg sync.WaitGroup
	for i, order := range orders {
		wg.Go(func() {
			sub, err := client.Submit(ctx, &ezclient.Job{
				URL:           "https://api.example.com/process",
				Method:        "POST",
				Body:          order,
				IdempotentKey: "order_" + order,
				Webhooks:      []ezclient.Webhook{{URL: hooks.URL}},
			})
			if err != nil {
				log.Printf("submit %s: %v", order, err)
				return
			}
			subs[i] = sub
		})
	}
	wg.Wait()

	// Collect: results that arrived before Wait began are returned at once.
	for i, sub := range subs {
		if sub == nil {
			continue
		}
		r, err := h.Wait(ctx, webhook.KeyOf(sub))
		if err != nil {
			fmt.Println(orders[i], "no result:", err)
			continue
		}
		fmt.Println(orders[i], r.Status, r.StatusCode, r.Body)
	}
	// Output:
	// order_1 completed 200 processed order_1
	// order_2 completed 200 processed order_2
	// order_3 completed 200 processed order_3
}

// fakeEngine is a minimal self-hosted engine: POST /jobs answers 201 and
// delivers the job's result to its webhook_url twice, from a goroutine
// tracked by the returned WaitGroup.
func fakeEngine(hc *http.Client) (*httptest.Server, *sync.WaitGroup) {
	var (
		wg sync.WaitGroup
		n  atomic.Int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var job struct {
			Body       string `json:"body"`
			WebhookURL string `json:"webhook_url"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/jobs" || json.NewDecoder(r.Body).Decode(&job) != nil {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		id := fmt.Sprintf("%032x", n.Add(1))
		payload, _ := json.Marshal(webhook.SelfHostedPayload{
			JobID: id, Status: webhook.SelfHostedCompleted, ResponseStatus: 200, Body: "processed " + job.Body,
		})
		wg.Go(func() {
			for range 2 {
				resp, err := hc.Post(job.WebhookURL, "application/json", bytes.NewReader(payload))
				if err == nil {
					resp.Body.Close()
				}
			}
		})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"job_id":%q,"status":"queued"}`, id)
	}))
	return srv, &wg
}
