package ezthrottle_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/llmsim"
)

// llmBatch is a batch of chat requests of mixed sizes for two models.
type llmBatch struct {
	bodies []string
	models []string
	tokens map[string]int64 // per model, as the simulator counts them
}

// newLLMBatch builds requests of 100 to 2,000 tokens (70 % input, 30 %
// requested output) until each model's total reaches total tokens.
func newLLMBatch(total int64) *llmBatch {
	rng := rand.New(rand.NewPCG(1, 2))
	b := &llmBatch{tokens: map[string]int64{}}
	for _, m := range []string{"model-a", "model-b"} {
		for b.tokens[m] < total {
			size := 100 + rng.IntN(1901)
			in := size * 7 / 10
			out := size - in
			b.bodies = append(b.bodies, chat(m, in, out))
			b.models = append(b.models, m)
			b.tokens[m] += int64(in + out)
		}
	}
	rng.Shuffle(len(b.bodies), func(i, j int) {
		b.bodies[i], b.bodies[j] = b.bodies[j], b.bodies[i]
		b.models[i], b.models[j] = b.models[j], b.models[i]
	})
	return b
}

// run sends the batch from 16 goroutines and returns the 429s seen and the
// wall time.
func (b *llmBatch) run(c *http.Client, url string) (limited int64, took time.Duration, errs int64) {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(b.bodies) {
					return
				}
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(b.bodies[i]))
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					atomic.AddInt64(&errs, 1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					atomic.AddInt64(&limited, 1)
				}
			}
		}()
	}
	wg.Wait()
	return limited, time.Since(start), errs
}

// BenchmarkLLMBudget sends a batch of chat requests of mixed sizes (100 to
// 2,000 tokens) from 16 goroutines to the simulated LLM API, limited per
// model to 6,000 RPM and 60,000 TPM, two models, each model's share
// totalling 1.75 minutes of its budget: the first minute's worth fits the
// full bucket, the rest (45 s at 1,000 tokens/s) must be paced. It reports
// the 429s seen through the Transport (budgets learned from the headers,
// and configured), the paced share's efficiency (ideal duration / actual),
// and the 429s of the same batch through the bare transport.
//
//	go test -run '^$' -bench LLMBudget -benchtime 1x .
//
// EZTHROTTLE_LLM_BENCH_SCALE=N multiplies the limits and the batch by N
// (more requests, the same duration).
func BenchmarkLLMBudget(b *testing.B) {
	scale := int64(1)
	if v, err := strconv.Atoi(os.Getenv("EZTHROTTLE_LLM_BENCH_SCALE")); err == nil && v > 0 {
		scale = int64(v)
	}
	rpm, tpm := 6000*scale, 60000*scale
	for _, mode := range []string{"learned", "configured", "bare"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				sim := llmsim.New(llmsim.WithDefaultLimits(llmsim.Limits{RPM: int(rpm), TPM: int(tpm)}))
				srv := httptest.NewServer(sim)
				batch := newLLMBatch(tpm * 7 / 4)
				base := &http.Transport{MaxIdleConnsPerHost: 64}
				var rt http.RoundTripper = base
				if mode != "bare" {
					opts := []ezthrottle.Option{ezthrottle.WithBase(base)}
					if mode == "configured" {
						opts = append(opts, ezthrottle.WithTokenBudget("127.0.0.1", "",
							ezthrottle.TokenBudget{RequestsPerMinute: rpm, TokensPerMinute: tpm}),
							ezthrottle.WithHostLimit("127.0.0.1", ezthrottle.Unlimited()))
					}
					tr, err := ezthrottle.New(opts...)
					if err != nil {
						b.Fatal(err)
					}
					rt = tr
				}
				limited, took, errs := batch.run(&http.Client{Transport: rt}, srv.URL+"/v1/chat/completions")
				srv.Close()
				base.CloseIdleConnections()
				if errs > 0 {
					b.Fatalf("%d transport errors", errs)
				}
				var paced int64
				for _, n := range batch.tokens {
					paced = max(paced, n-tpm)
				}
				ideal := time.Duration(float64(paced) / float64(tpm) * float64(time.Minute))
				b.ReportMetric(float64(limited), "429s")
				b.ReportMetric(took.Seconds(), "s/batch")
				if mode != "bare" {
					b.ReportMetric(100*ideal.Seconds()/took.Seconds(), "%efficiency")
				}
				b.ReportMetric(float64(len(batch.bodies)), "requests")
				if testing.Verbose() {
					fmt.Printf("%s: %d requests, %d 429s, %.1fs (ideal %.1fs), server admitted %d\n",
						mode, len(batch.bodies), limited, took.Seconds(), ideal.Seconds(), sim.Stats().Admitted)
				}
			}
		})
	}
}
