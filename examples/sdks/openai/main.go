// OpenAI: the real openai-go client, throttled and protected by EZThrottle.
//
//	cd examples/sdks && go run ./openai
//
// openai-go decodes any 2xx into a result without an error, so a synthetic
// 202 would look like an empty completion. This example therefore uses the
// Transport's forwarded-error mode (ezthrottle.WithForwardedError): a call
// that became an EZThrottle job returns an error that errors.As turns into
// an *ezthrottle.ForwardedError carrying the job ID. (A Receipt, see the
// stripe example, works as well.)
//
// Offline, openai-go talks to a local fake of the OpenAI API
// (option.WithBaseURL) that announces its quota with the
// x-ratelimit-limit-requests / -remaining-requests / -reset-requests headers
// (the Transport learns the budget of 60 requests a minute from them and
// keeps to it instead of its default pace) and answers one call with a 429.
// The 429 becomes a job whose completion arrives at the webhook.
//
// Then (budget.go) a batch of chat completions of mixed sizes goes to a
// simulated OpenAI API that limits tokens per minute per model: a bare
// client runs into 429s, the Transport learns the budgets from the
// x-ratelimit-* headers and finishes the batch without any.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/examples/internal/demo"
)

func main() {
	env, err := demo.Start()
	if err != nil {
		demo.Fatal(err)
	}
	defer env.Close()
	env.Mux.Handle("POST /v1/chat/completions", &fakeOpenAI{})

	fmt.Println("openai-go through EZThrottle")
	fmt.Println("  " + env.Describe())
	fmt.Println()

	hc, err := ezthrottle.Wrap(&http.Client{Timeout: 60 * time.Second},
		ezthrottle.WithClient(env.Client, ezthrottle.JobWebhook(env.HookURL)),
		ezthrottle.WithForwardedError())
	if err != nil {
		demo.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	client := openai.NewClient(
		option.WithAPIKey("sk-test-example"),
		option.WithBaseURL(env.BaseURL+"/v1/"), // in production: leave the default
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0), // EZThrottle retries; SDK retries would resend
	)

	var jobs []string
	for i, q := range []string{"What is a token bucket?", "What is a 429?", "Why pace requests?", "What is a webhook?"} {
		done, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    "gpt-5-mini", // any model name: the fake answers them all
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(q)},
		})
		var fwd *ezthrottle.ForwardedError
		switch {
		case errors.As(err, &fwd):
			env.Printf("question %d: OpenAI said %d → forwarded to EZThrottle as job %s", i+1, fwd.UpstreamStatus, fwd.JobID())
			jobs = append(jobs, fwd.JobID())
		case err != nil:
			demo.Fatal(err)
		default:
			env.Printf("question %d: %q", i+1, done.Choices[0].Message.Content)
		}
	}

	fmt.Println()
	for _, id := range jobs {
		r, err := env.Hooks.WaitJob(context.Background(), id)
		if err != nil {
			demo.Fatal(err)
		}
		var c openai.ChatCompletion
		if err := json.Unmarshal([]byte(r.Body), &c); err != nil || len(c.Choices) == 0 {
			demo.Fatal(fmt.Errorf("job %s: unexpected body %q", id, r.Body))
		}
		env.Printf("webhook for job %s: HTTP %d, completion %q", id, r.StatusCode, c.Choices[0].Message.Content)
	}
	fmt.Println("\nThe rate-limited question was answered anyway, decoded with openai-go's own types.")

	budgetDemo()
}

// fakeOpenAI answers chat completions. It announces a request quota
// (x-ratelimit-*-requests) and answers the third call with a 429, as when
// another process sharing the API key used up the quota.
type fakeOpenAI struct {
	mu sync.Mutex
	n  int
}

func (f *fakeOpenAI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &in)
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-ratelimit-limit-requests", "60")
	w.Header().Set("x-ratelimit-remaining-requests", fmt.Sprint(max(0, 60-n)))
	w.Header().Set("x-ratelimit-reset-requests", "1m0s")
	if n == 3 {
		w.Header().Set("retry-after", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}`)
		return
	}
	q := ""
	if len(in.Messages) > 0 {
		q = in.Messages[len(in.Messages)-1].Content
	}
	answer, _ := json.Marshal("A short answer to: " + q)
	fmt.Fprintf(w, `{"id":"chatcmpl-%d","object":"chat.completion","created":%d,"model":"gpt-5-mini",`+
		`"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":%s}}]}`, n, time.Now().Unix(), answer)
}
