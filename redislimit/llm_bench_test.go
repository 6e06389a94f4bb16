package redislimit

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/llmsim"
)

// BenchmarkLLMBudgetShared is the root package's BenchmarkLLMBudget with
// four processes sharing the budgets through Redis: four Transports, each
// with its own Redis client and Limiter, send the same batch (chat requests
// of 100 to 2,000 tokens, 1.75 minutes of each of two models' budgets of
// 6,000 RPM and 60,000 TPM) from 4 goroutines each. The budgets are learned
// from the simulated API's headers; it reports the 429s, and the duration
// against the ideal (what exceeds a full bucket, at the refill rate).
//
//	go test -run '^$' -bench LLMBudgetShared -benchtime 1x ./redislimit/
func BenchmarkLLMBudgetShared(b *testing.B) {
	addr := redisAddr(b)
	const rpm, tpm = 6000, 60000
	for i := 0; i < b.N; i++ {
		sim := llmsim.New(llmsim.WithDefaultLimits(llmsim.Limits{RPM: rpm, TPM: tpm}))
		srv := httptest.NewServer(sim)
		prefix := testPrefix(b)
		rng := rand.New(rand.NewPCG(1, 2))
		var bodies []string
		tokens := map[string]int{}
		for _, m := range []string{"model-a", "model-b"} {
			for tokens[m] < tpm*7/4 {
				size := 100 + rng.IntN(1901)
				in := size * 7 / 10
				bodies = append(bodies, fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],"max_tokens":%d}`,
					m, strings.Repeat("a", in*4-4), size-in))
				tokens[m] += size
			}
		}
		rng.Shuffle(len(bodies), func(i, j int) { bodies[i], bodies[j] = bodies[j], bodies[i] })
		var clients []*http.Client
		var limiters []*Limiter
		for p := 0; p < 4; p++ {
			l := newTestLimiter(b, newClient(b, addr), WithPrefix(prefix))
			limiters = append(limiters, l)
			tr, err := ezthrottle.New(ezthrottle.WithLimiter(l), ezthrottle.WithBase(&http.Transport{MaxIdleConnsPerHost: 16}))
			if err != nil {
				b.Fatal(err)
			}
			clients = append(clients, &http.Client{Transport: tr})
		}
		var next, limited, errs atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func(c *http.Client) {
				defer wg.Done()
				for j := next.Add(1) - 1; j < int64(len(bodies)); j = next.Add(1) - 1 {
					resp, err := c.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(bodies[j]))
					if err != nil {
						errs.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusTooManyRequests {
						limited.Add(1)
						if testing.Verbose() {
							fmt.Printf("429 after %.2fs rem-tokens=%s rem-req=%s body=%d\n", time.Since(start).Seconds(), resp.Header.Get("X-Ratelimit-Remaining-Tokens"), resp.Header.Get("X-Ratelimit-Remaining-Requests"), len(bodies[j]))
						}
					}
				}
			}(clients[g%4])
		}
		wg.Wait()
		took := time.Since(start)
		srv.Close()
		for _, c := range clients {
			c.CloseIdleConnections()
		}
		for _, l := range limiters {
			if s := l.Stats(); s.Errors > 0 || s.FallbackAcquires > 0 {
				b.Logf("limiter stats: %+v", s)
			}
		}
		if errs.Load() > 0 {
			b.Fatalf("%d transport errors", errs.Load())
		}
		paced := 0
		for _, n := range tokens {
			paced = max(paced, n-tpm)
		}
		ideal := time.Duration(float64(paced) / tpm * float64(time.Minute))
		b.ReportMetric(float64(limited.Load()), "429s")
		b.ReportMetric(took.Seconds(), "s/batch")
		b.ReportMetric(100*ideal.Seconds()/took.Seconds(), "%efficiency")
		b.ReportMetric(float64(len(bodies)), "requests")
	}
}
