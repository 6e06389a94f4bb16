package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/examples/internal/demo"
	"github.com/ezthrottle/ezthrottle-go/llmsim"
)

// Per-model limits of the simulated API, scaled up so the demo takes
// seconds: the batch is 1.1 minutes' worth of each model's budget.
const (
	budgetRPM = 60_000
	budgetTPM = 600_000
)

// budgetDemo sends a batch of chat completions of mixed sizes with openai-go
// from 16 goroutines to a simulated OpenAI API that enforces RPM and TPM per
// model (package llmsim, with OpenAI's x-ratelimit-* headers): once through
// a bare http.Client, once through ezthrottle.Wrap, which learns the token
// budgets from the headers and paces the calls by their estimated cost.
func budgetDemo() {
	models := []string{"gpt-demo-large", "gpt-demo-small"}
	type call struct {
		model    string
		question string
		max      int64
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var calls []call
	tokens := map[string]int64{}
	for _, m := range models {
		for tokens[m] < budgetTPM*11/10 {
			size := int64(100 + rng.IntN(1901))
			in := size * 7 / 10
			calls = append(calls, call{m, strings.Repeat("x", int(in*4-4)), size - in})
			tokens[m] += size
		}
	}
	rng.Shuffle(len(calls), func(i, j int) { calls[i], calls[j] = calls[j], calls[i] })

	fmt.Println()
	fmt.Println("Token budgets: openai-go sends", len(calls), "chat completions of 100 to 2,000 tokens from 16 goroutines")
	fmt.Println("to an API limited per model to", budgetRPM, "RPM and", budgetTPM, "TPM (1.1 minutes' worth of each budget).")

	run := func(name string, hc *http.Client) (refused int64, took time.Duration) {
		sim := llmsim.New(llmsim.WithDefaultLimits(llmsim.Limits{RPM: budgetRPM, TPM: budgetTPM}))
		srv := httptest.NewServer(sim)
		defer srv.Close()
		client := openai.NewClient(
			option.WithAPIKey("sk-test-example"),
			option.WithBaseURL(srv.URL+"/v1/"),
			option.WithHTTPClient(hc),
			option.WithMaxRetries(0), // count the 429s instead of hiding them in retries
		)
		var next, limited atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < int64(len(calls)); i = next.Add(1) - 1 {
					c := calls[i]
					_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
						Model:     c.model,
						Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(c.question)},
						MaxTokens: openai.Int(c.max),
					})
					var apiErr *openai.Error
					switch {
					case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests:
						limited.Add(1)
					case err != nil:
						demo.Fatal(err)
					}
				}
			}()
		}
		wg.Wait()
		took = time.Since(start)
		fmt.Printf("  %s  %5.1fs  %4d answered  %4d refused (429)\n", name, took.Seconds(), sim.Stats().Admitted, limited.Load())
		return limited.Load(), took
	}

	bare, _ := run("bare http.Client", &http.Client{})
	hc, err := ezthrottle.Wrap(&http.Client{})
	if err != nil {
		demo.Fatal(err)
	}
	paced, took := run("ezthrottle.Wrap  ", hc)
	var over int64
	for _, n := range tokens {
		over = max(over, n-budgetTPM)
	}
	ideal := time.Duration(float64(over) / budgetTPM * float64(time.Minute))
	fmt.Printf("Bare, %d calls were refused; through the Transport %d, in %.1fs for the %.1fs the budgets allow at best.\n",
		bare, paced, took.Seconds(), ideal.Seconds())
	if paced > 1 {
		demo.Fatal(fmt.Errorf("the Transport let %d calls run into 429", paced))
	}
}
