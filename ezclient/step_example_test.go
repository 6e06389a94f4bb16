package ezclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// exampleCloud is a stand-in for EZThrottle Cloud's proxy: it accepts every
// job, numbering them job_1, job_2, ..., and keeps the job JSON it received.
type exampleCloud struct {
	*httptest.Server
	mu   sync.Mutex
	jobs []string
}

func newExampleCloud() *exampleCloud {
	ec := &exampleCloud{}
	ec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			Body string `json:"body"` // the job, as a JSON string
		}
		_ = json.NewDecoder(r.Body).Decode(&env)
		var job struct {
			Regions []string `json:"regions"`
		}
		_ = json.Unmarshal([]byte(env.Body), &job)
		ec.mu.Lock()
		ec.jobs = append(ec.jobs, env.Body)
		id := fmt.Sprintf("job_%d", len(ec.jobs))
		ec.mu.Unlock()
		status := "queued"
		if len(job.Regions) > 1 {
			status = "racing"
		}
		inner, _ := json.Marshal(map[string]string{"job_id": id, "status": status})
		_ = json.NewEncoder(w).Encode(map[string]any{
			"status":             "allowed",
			"forwarded_response": map[string]any{"status_code": 201, "body": string(inner)},
		})
	}))
	return ec
}

func (ec *exampleCloud) client() *ezclient.Client {
	c, err := ezclient.New(
		ezclient.WithAPIKey("example-api-key"),
		ezclient.WithProxyURL(ec.URL),
		ezclient.WithEngineURL("https://ezthrottle.example"),
	)
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// exampleAPI is a stand-in for a rate-limited API: /status/N answers N.
func exampleAPI() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := 200
		_, _ = fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/status/"), "%d", &code)
		w.WriteHeader(code)
		_, _ = io.WriteString(w, http.StatusText(code))
	}))
}

// A PERFORMANCE step (the default) is submitted to the engine at once; the
// engine races it across regions and delivers the result to the webhook.
func ExampleStep_Execute_performance() {
	cloud := newExampleCloud()
	defer cloud.Close()
	client := cloud.client()

	res, err := client.Step().
		URL("https://api.stripe.example/charges").
		Method("POST").
		Body(`{"amount":1000,"currency":"usd"}`).
		Webhook(ezclient.Webhook{URL: "https://app.example/webhook"}).
		Regions(ezclient.RegionIAD, ezclient.RegionLAX, ezclient.RegionORD).
		ExecutionMode(ezclient.ExecutionRace).
		IdempotentKey("order-12345").
		Execute(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Outcome, res.JobID(), res.Submission.Status)
	// Output: submitted job_1 racing
}

// A FRUGAL step runs locally first and costs nothing when the API answers;
// on 429 (or 500, 502, 503, 504, a network error, a timeout) it is handed to
// the engine, once.
func ExampleStep_Execute_frugal() {
	cloud := newExampleCloud()
	defer cloud.Close()
	api := exampleAPI()
	defer api.Close()
	client := cloud.client()

	for _, path := range []string{"/status/200", "/status/429", "/status/404"} {
		res, err := client.Step().
			URL(api.URL + path).
			Type(ezclient.StepFrugal).
			Timeout(10 * time.Second).
			Webhook(ezclient.Webhook{URL: "https://app.example/webhook"}).
			Execute(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: local %d %q, outcome %s, job %q\n", path, res.StatusCode, res.Body, res.Outcome, res.JobID())
	}
	// Output:
	// /status/200: local 200 "OK", outcome succeeded, job ""
	// /status/429: local 429 "Too Many Requests", outcome forwarded, job "job_1"
	// /status/404: local 404 "Not Found", outcome failed, job ""
}

// Several Fallback calls build a chain, each with its trigger. A PERFORMANCE
// step carries the whole chain in one job; this is the JSON the engine gets.
func ExampleStep_Fallback() {
	cloud := newExampleCloud()
	defer cloud.Close()
	client := cloud.client()

	res, err := client.Step().
		URL("https://primary.example/v1/charge").
		Webhook(ezclient.Webhook{URL: "https://app.example/webhook"}).
		Fallback(new(ezclient.Step).URL("https://backup.example/v1/charge"), ezclient.OnError(500, 502, 503)).
		Fallback(new(ezclient.Step).URL("https://last-resort.example/v1/charge"), ezclient.OnTimeout(500*time.Millisecond)).
		Execute(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Outcome, res.JobID())
	fmt.Println(cloud.jobs[0])
	// Output:
	// submitted job_1
	// {"url":"https://primary.example/v1/charge","method":"GET","webhooks":[{"url":"https://app.example/webhook"}],"fallback_job":{"url":"https://backup.example/v1/charge","method":"GET","fallback_job":{"url":"https://last-resort.example/v1/charge","method":"GET","trigger":{"type":"on_timeout","timeout_ms":500}},"trigger":{"type":"on_error","codes":[500,502,503]}}}
}

// The product README's mixed workflow: a cheap FRUGAL call, then a
// PERFORMANCE notification raced across regions once it succeeded.
func ExampleStep_OnSuccess() {
	cloud := newExampleCloud()
	defer cloud.Close()
	api := exampleAPI()
	defer api.Close()
	client := cloud.client()

	// No client: a child step runs with its parent's.
	notification := new(ezclient.Step).
		URL("https://api.sendgrid.example/send").
		Type(ezclient.StepPerformance).
		Webhook(ezclient.Webhook{URL: "https://app.example/email-sent"}).
		Regions(ezclient.RegionIAD, ezclient.RegionLAX, ezclient.RegionORD)

	res, err := client.Step().
		URL(api.URL+"/status/200"). // e.g. https://api.openai.com/v1/chat/completions
		Method("POST").
		Type(ezclient.StepFrugal).
		FallbackOnError(429, 500).
		OnSuccess(notification).
		Execute(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("primary:", res.Outcome, "locally with", res.StatusCode)
	fmt.Println("notification:", res.OnSuccess.Outcome, res.OnSuccess.JobID(), res.OnSuccess.Submission.Status)
	// Output:
	// primary: succeeded locally with 200
	// notification: submitted job_1 racing
}

// ForwardOrFallback submits the step and runs the caller's own fallback only
// when EZThrottle cannot be reached at all.
func ExampleStep_ForwardOrFallback() {
	client, err := ezclient.New(
		ezclient.WithAPIKey("example-api-key"),
		ezclient.WithProxyURL("http://127.0.0.1:1"), // nothing listens there
		ezclient.WithRetry(1, 0, 0),
	)
	if err != nil {
		log.Fatal(err)
	}
	res, err := client.Step().
		URL("https://api.example/report").
		ForwardOrFallback(context.Background(), func(ctx context.Context) error {
			fmt.Println("engine unreachable: queueing the report in the local outbox")
			return nil
		})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Outcome, ezclient.IsUnreachable(res.Err))
	// Output:
	// engine unreachable: queueing the report in the local outbox
	// fell back true
}
