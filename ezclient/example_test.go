package ezclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// fakeProxy stands in for EZThrottle Cloud's metering proxy: it unwraps the
// envelope and answers like the engine behind it.
func fakeProxy() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			TargetURL string `json:"target_url"`
			Body      string `json:"body"`
		}
		if r.Header.Get("Authorization") != "Bearer my-api-key" || json.NewDecoder(r.Body).Decode(&env) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"Unauthorized","message":"Invalid API key"}`)
			return
		}
		engineReply := `{"job_id":"job_1763674210055_853341","status":"queued","idempotent_key":"hash_5f2c","queued_at":1763674210055}`
		_ = json.NewEncoder(w).Encode(map[string]any{
			"status": "allowed",
			"forwarded_response": map[string]any{
				"status_code": 201,
				"body":        engineReply,
			},
		})
	}))
}

// Constructing a client: the API key comes from WithAPIKey or the
// EZTHROTTLE_API_KEY environment variable; without one, New fails at once.
func ExampleNew() {
	client, err := ezclient.New(ezclient.WithAPIKey("my-api-key"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.Dialect(), client.ProxyURL(), client.EngineURL())

	// A self-hosted engine needs no key, but a user ID.
	self, err := ezclient.New(ezclient.WithSelfHosted("http://localhost:8080", "user-42"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(self.Dialect(), self.EngineURL())
	// Output:
	// cloud https://tracktags.fly.dev https://ezthrottle.fly.dev
	// self-hosted http://localhost:8080
}

// Submitting a job to EZThrottle Cloud (here a local stand-in for the proxy).
func ExampleClient_Submit() {
	proxy := fakeProxy()
	defer proxy.Close()

	client, err := ezclient.New(
		ezclient.WithAPIKey("my-api-key"),
		ezclient.WithProxyURL(proxy.URL),
	)
	if err != nil {
		log.Fatal(err)
	}
	sub, err := client.Submit(context.Background(), &ezclient.Job{
		URL:      "https://api.example.com/endpoint",
		Method:   "POST",
		Body:     `{"hello":"world"}`,
		Webhooks: []ezclient.Webhook{{URL: "https://your-app.com/webhook"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("job", sub.JobID, sub.Status, "duplicate:", sub.Duplicate)
	fmt.Println("queued at", sub.QueuedAt.UTC().Format("2006-01-02 15:04:05.000"))
	// Output:
	// job job_1763674210055_853341 queued duplicate: false
	// queued at 2025-11-20 21:30:10.055
}

// Errors are typed: check the class with errors.Is and read the details
// with errors.As.
func ExampleClient_Submit_errors() {
	proxy := fakeProxy()
	defer proxy.Close()

	client, err := ezclient.New(ezclient.WithAPIKey("wrong-key"), ezclient.WithProxyURL(proxy.URL))
	if err != nil {
		log.Fatal(err)
	}
	_, err = client.Submit(context.Background(), &ezclient.Job{URL: "https://api.example.com/endpoint"})
	var authErr *ezclient.AuthError
	if errors.Is(err, ezclient.ErrUnauthorized) && errors.As(err, &authErr) {
		fmt.Println(authErr.StatusCode, authErr.Message)
	}

	// A self-hosted engine cannot carry regions: the job fails before any
	// network call, naming the field.
	self, err := ezclient.New(ezclient.WithSelfHosted("http://localhost:8080", "user-42"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = self.Submit(context.Background(), &ezclient.Job{
		URL:      "https://api.example.com/endpoint",
		Regions:  []ezclient.Region{ezclient.RegionIAD, ezclient.RegionLAX},
		Webhooks: []ezclient.Webhook{{URL: "https://your-app.com/webhook"}},
	})
	fmt.Println(errors.Is(err, ezclient.ErrUnsupported), err)
	// Output:
	// 401 Unauthorized: Invalid API key
	// true ezthrottle: field "regions" not supported: self-hosted engines cannot carry it
}

// Waiting for a job on a self-hosted engine through its event stream.
func ExampleClient_StreamJob() {
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: queued\ndata: {\"job_id\":\"abc\"}\n\n"+
			"event: position\ndata: {\"position\":1}\n\n"+
			": keepalive\n\n"+
			"event: dispatching\n\n"+
			"event: completed\ndata: {\"job_id\":\"abc\",\"response_status\":200,\"body\":\"{\\\"ok\\\":true}\"}\n\n")
	}))
	defer engine.Close()

	client, err := ezclient.New(ezclient.WithSelfHosted(engine.URL, "user-42"))
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range client.StreamJob(context.Background(), "abc") {
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Type {
		case ezclient.EventPosition:
			fmt.Println("position in queue:", ev.Position)
		case ezclient.EventCompleted:
			fmt.Println("completed:", ev.ResponseStatus, ev.Body)
		default:
			fmt.Println(ev.Type)
		}
	}
	// Output:
	// queued
	// position in queue: 1
	// dispatching
	// completed: 200 {"ok":true}
}

// Building a job with a fallback chain and a workflow: the JSON is exactly
// what the engine expects.
func ExampleJob() {
	job := &ezclient.Job{
		URL:    "https://primary-api.com/charge",
		Method: "post",
		Fallback: &ezclient.Fallback{
			Trigger: ezclient.OnError(500, 502, 503),
			Job:     &ezclient.Job{URL: "https://backup-api.com/charge", Method: "POST"},
		},
		OnSuccess: &ezclient.Job{URL: "https://analytics.com/track"},
		Webhooks: []ezclient.Webhook{
			{URL: "https://app.com/payment-complete"},
			{URL: "https://analytics.com/hook", HasQuorumVote: ezclient.Bool(false)},
		},
	}
	b, err := json.Marshal(job)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(b))
	// Output:
	// {"url":"https://primary-api.com/charge","method":"POST","webhooks":[{"url":"https://app.com/payment-complete"},{"url":"https://analytics.com/hook","has_quorum_vote":false}],"fallback_job":{"url":"https://backup-api.com/charge","method":"POST","trigger":{"type":"on_error","codes":[500,502,503]}},"on_success":{"url":"https://analytics.com/track","method":"GET"}}
}
