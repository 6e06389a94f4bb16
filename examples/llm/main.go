// LLM token budgets: a batch of Anthropic-style /v1/messages calls that would
// hit 429s finishes without any through the Transport, with no
// configuration.
//
//	go run ./examples/llm
//
// A simulated LLM API (package llmsim) enforces, per model, requests per
// minute and input/output tokens per minute as Anthropic describes them, and
// announces them in its anthropic-ratelimit-* headers. The same batch of
// requests of mixed sizes (100 to 2,000 tokens) is sent twice from 16
// goroutines: through a bare http.Client, which runs into 429s once the
// budget is spent, then through ezthrottle.Wrap, which learns the budgets
// from the first response, estimates each request's cost from its body
// (about 4 characters a token, plus max_tokens) and paces the rest so the
// API never refuses a call.
package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/llmsim"
)

// Per-model limits, scaled up so the demo takes seconds, not minutes.
const (
	rpm      = 60_000
	tpm      = 600_000
	inputTPM = 450_000
	outTPM   = 150_000
)

func main() {
	models := []string{"claude-demo-large", "claude-demo-small"}
	batch := newBatch(models, tpm*11/10) // 1.1 minutes of each model's budget

	fmt.Println("An Anthropic-style API limited per model to", rpm, "RPM,", tpm, "TPM (", inputTPM, "in /", outTPM, "out )")
	fmt.Printf("The batch: %d requests of 100 to 2,000 tokens, %d per model, from 16 goroutines.\n",
		len(batch.bodies), len(batch.bodies)/len(models))
	fmt.Println("The first minute's worth fits the API's buckets; the rest (about 6 s of budget) must be paced.")
	fmt.Println()

	bare := run("bare http.Client", http.DefaultTransport, batch)
	tr, err := ezthrottle.New(ezthrottle.WithBase(http.DefaultTransport))
	if err != nil {
		fail(err)
	}
	paced := run("ezthrottle.Wrap  ", tr, batch)

	ideal := batch.ideal()
	fmt.Println()
	fmt.Printf("Bare: %d of %d calls refused with 429 (each one a retry, a sleep, or a lost call).\n", bare.limited, len(batch.bodies))
	fmt.Printf("Through the Transport: %d refused; the batch took %.1fs, the ideal pace %.1fs (%.0f%% efficiency).\n",
		paced.limited, paced.took.Seconds(), ideal.Seconds(), 100*ideal.Seconds()/paced.took.Seconds())
	if paced.limited > 1 {
		fail(fmt.Errorf("the Transport let %d calls run into 429", paced.limited))
	}
}

type batch struct {
	bodies []string
	// per model: tokens in all, input and output tokens
	total, in, out map[string]int64
}

// ideal is the shortest time the API's budgets allow for the batch: for
// each model and budget, what exceeds a full bucket at the refill rate.
func (b *batch) ideal() time.Duration {
	var minutes float64
	for m := range b.total {
		minutes = max(minutes, float64(b.total[m]-tpm)/tpm, float64(b.in[m]-inputTPM)/inputTPM, float64(b.out[m]-outTPM)/outTPM)
	}
	return time.Duration(minutes * float64(time.Minute))
}

// newBatch builds requests for each model until each totals n tokens.
func newBatch(models []string, n int64) *batch {
	rng := rand.New(rand.NewPCG(7, 7))
	b := &batch{total: map[string]int64{}, in: map[string]int64{}, out: map[string]int64{}}
	for _, m := range models {
		for b.total[m] < n {
			size := 100 + rng.IntN(1901)
			in, out := size*3/4, size-size*3/4
			b.bodies = append(b.bodies, fmt.Sprintf(`{"model":%q,"max_tokens":%d,"messages":[{"role":"user","content":%q}]}`,
				m, out, strings.Repeat("x", in*4-4)))
			b.total[m] += int64(size)
			b.in[m] += int64(in)
			b.out[m] += int64(out)
		}
	}
	rng.Shuffle(len(b.bodies), func(i, j int) { b.bodies[i], b.bodies[j] = b.bodies[j], b.bodies[i] })
	return b
}

type result struct {
	limited int64
	took    time.Duration
}

// run sends the batch to a fresh simulated API through rt.
func run(name string, rt http.RoundTripper, b *batch) result {
	sim := llmsim.New(llmsim.WithDefaultLimits(llmsim.Limits{RPM: rpm, TPM: tpm, InputTPM: inputTPM, OutputTPM: outTPM}))
	srv := httptest.NewServer(sim)
	defer srv.Close()
	client := &http.Client{Transport: rt, Timeout: time.Minute}
	var next, limited atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(len(b.bodies)); i = next.Add(1) - 1 {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/v1/messages", strings.NewReader(b.bodies[i]))
				req.Header.Set("content-type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					limited.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	r := result{limited: limited.Load(), took: time.Since(start)}
	st := sim.Stats()
	fmt.Printf("  %s  %5.1fs  %4d answered  %4d refused (429)\n", name, r.took.Seconds(), st.Admitted, st.Limited)
	return r
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}
