package redisbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/redislimit"
)

func redisAddr(b *testing.B) string {
	addr := os.Getenv("EZTHROTTLE_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6390"
	}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		b.Skipf("no Redis at %s (set EZTHROTTLE_REDIS_ADDR): %v", addr, err)
	}
	return addr
}

// newClient is the client both libraries get: go-redis's defaults (a pool
// of 10 connections per CPU), as an application would use it.
func newClient(b *testing.B, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func prefix() string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return "ezthrottle-bench:" + hex.EncodeToString(r[:]) + ":"
}

// contender is one way of deciding: it admits (and releases) one request
// of host.
type contender struct {
	name   string
	decide func(ctx context.Context, host string) error
	trips  func() uint64 // Redis round trips so far; nil: one per decision
}

// BenchmarkDecisions: admission decisions per second against the same local
// Redis: go-redis/redis_rate/v10 (one script call per decision, no cap in
// flight) against redislimit without and with a cap in flight (an admitted
// request holds a lease, released right after), from one goroutine, from 64
// goroutines over 64 hosts, and from 64 goroutines on one host. The limits
// never refuse (1e6/s, bursts of 1e6): the benchmark measures the cost of a
// decision.
//
// The contenders take turns in rounds (a few hundred decisions each, each
// round starting with the next contender) within one run, so that the load
// of a shared machine weighs on all of them alike; each reports its own
// decisions/s (b.N decisions each) and Redis round trips per decision.
func BenchmarkDecisions(b *testing.B) {
	addr := redisAddr(b)
	shapes := []struct {
		name       string
		goroutines int
		hosts      int
	}{
		{"1-goroutine", 1, 1},
		{"64-goroutines-64-hosts", 64, 64},
		{"64-goroutines-1-host", 64, 1},
	}
	for _, sh := range shapes {
		hosts := make([]string, sh.hosts)
		for i := range hosts {
			hosts[i] = fmt.Sprintf("https://host%02d.example:443", i)
		}
		b.Run(sh.name, func(b *testing.B) {
			ctx := context.Background()
			rr := redis_rate.NewLimiter(newClient(b, addr))
			rrLimit := redis_rate.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
			rrPrefix := prefix()
			cs := []contender{{
				name: "redis_rate",
				decide: func(ctx context.Context, host string) error {
					res, err := rr.Allow(ctx, rrPrefix+host, rrLimit)
					if err == nil && res.Allowed != 1 {
						err = fmt.Errorf("not allowed: %+v", res)
					}
					return err
				},
			}}
			for _, c := range []struct {
				name string
				lim  ezthrottle.Limit
			}{
				{"redislimit", ezthrottle.Limit{Rate: 1_000_000, Burst: 1_000_000}},
				{"redislimit+cap", ezthrottle.Limit{Rate: 1_000_000, Burst: 1_000_000, MaxInFlight: 1_000_000}},
			} {
				l, err := redislimit.New(newClient(b, addr), redislimit.WithPrefix(prefix()))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() {
					if s := l.Stats(); s.Errors > 0 || s.FallbackAcquires > 0 {
						b.Errorf("%s: Redis failed during the benchmark: %+v", c.name, s)
					}
					_ = l.Close()
				})
				cs = append(cs, contender{
					name: c.name,
					decide: func(ctx context.Context, host string) error {
						p, err := l.Acquire(ctx, ezthrottle.Admission{Key: host, Limit: c.lim})
						if err != nil {
							return err
						}
						p.Release()
						return nil
					},
					trips: func() uint64 { return l.Stats().RoundTrips },
				})
			}
			round := 400
			if sh.goroutines > 1 {
				round = 50 * sh.goroutines
			}
			elapsed := make([]time.Duration, len(cs))
			trips := make([]uint64, len(cs))
			for i, c := range cs {
				if c.trips != nil {
					trips[i] = c.trips()
				}
				// Warm up: connections, script cache.
				if err := rounds(ctx, c, sh.goroutines, 2*sh.goroutines, hosts); err != nil {
					b.Fatal(err)
				}
				if c.trips != nil {
					trips[i] = c.trips()
				}
			}
			b.ResetTimer()
			for r, done := 0, 0; done < b.N; r, done = r+1, done+round {
				n := min(round, b.N-done)
				for k := range cs {
					// Each round starts with another contender: no one
					// always runs right after the same one.
					i := (k + r) % len(cs)
					c := cs[i]
					start := time.Now()
					if err := rounds(ctx, c, sh.goroutines, n, hosts); err != nil {
						b.Fatal(err)
					}
					elapsed[i] += time.Since(start)
				}
			}
			b.StopTimer()
			for i, c := range cs {
				b.ReportMetric(float64(b.N)/elapsed[i].Seconds(), c.name+"-decisions/s")
				if c.trips != nil {
					b.ReportMetric(float64(c.trips()-trips[i])/float64(b.N), c.name+"-roundtrips/decision")
				}
			}
			b.ReportMetric(elapsed[0].Seconds()/elapsed[len(cs)-1].Seconds(), "cap-vs-redis_rate-speed")
		})
	}
}

// rounds makes n decisions with c from g goroutines; goroutine i's j-th
// decision is for host (i+j) mod len(hosts).
func rounds(ctx context.Context, c contender, g, n int, hosts []string) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	per, extra := n/g, n%g
	for i := 0; i < g; i++ {
		k := per
		if i < extra {
			k++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < k; j++ {
				if err := c.decide(ctx, hosts[(i+j)%len(hosts)]); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// BenchmarkPacing4Pods: four pods (each its own Redis client, limiter and
// Transport, two goroutines each) share one host limited to 50 requests
// per second, burst 1; the host counts arrivals. achieved = (arrivals - 1)
// / (last - first) over 1 + 4 x 50 requests. redis_rate is driven as its
// documentation shows (Allow, sleep RetryAfter, try again) in the same run.
func BenchmarkPacing4Pods(b *testing.B) {
	addr := redisAddr(b)
	const (
		rate   = 50.0
		pods   = 4
		perPod = 2
		total  = 1 + 4*int(rate)
	)
	measure := func(b *testing.B, newRT func(pod int) http.RoundTripper) {
		var errPct []float64
		var achieved float64
		for n := 0; n < b.N; n++ {
			var (
				mu       sync.Mutex
				arrivals []time.Time
			)
			srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
				mu.Lock()
				arrivals = append(arrivals, time.Now())
				mu.Unlock()
			}))
			var (
				wg    sync.WaitGroup
				left  = make(chan struct{}, total)
				fails = make(chan error, pods*perPod)
			)
			for i := 0; i < total; i++ {
				left <- struct{}{}
			}
			close(left)
			for p := 0; p < pods; p++ {
				client := &http.Client{Transport: newRT(p)}
				for w := 0; w < perPod; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range left {
							resp, err := client.Get(srv.URL)
							if err != nil {
								fails <- err
								return
							}
							_, _ = io.Copy(io.Discard, resp.Body)
							_ = resp.Body.Close()
						}
					}()
				}
			}
			wg.Wait()
			srv.Close()
			close(fails)
			for err := range fails {
				b.Fatal(err)
			}
			sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
			achieved = float64(len(arrivals)-1) / arrivals[len(arrivals)-1].Sub(arrivals[0]).Seconds()
			errPct = append(errPct, 100*(achieved-rate)/rate)
		}
		worst := 0.0
		for _, e := range errPct {
			if math.Abs(e) > math.Abs(worst) {
				worst = e
			}
		}
		b.ReportMetric(achieved, "achieved-rps")
		b.ReportMetric(worst, "error-%")
	}

	b.Run("redis_rate", func(b *testing.B) {
		p := prefix()
		measure(b, func(int) http.RoundTripper {
			return &redisRateTransport{
				rl:   redis_rate.NewLimiter(newClient(b, addr)),
				key:  p + "host",
				lim:  redis_rate.Limit{Rate: int(rate), Burst: 1, Period: time.Second},
				base: http.DefaultTransport,
			}
		})
	})
	b.Run("redislimit", func(b *testing.B) {
		p := prefix()
		measure(b, func(int) http.RoundTripper {
			l, err := redislimit.New(newClient(b, addr), redislimit.WithPrefix(p))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = l.Close() })
			tr, err := ezthrottle.New(ezthrottle.WithLimiter(l),
				ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: rate, Burst: 1}))
			if err != nil {
				b.Fatal(err)
			}
			return tr
		})
	})
}

// redisRateTransport throttles with redis_rate the way its README does:
// Allow, and when refused sleep RetryAfter and ask again.
type redisRateTransport struct {
	rl   *redis_rate.Limiter
	key  string
	lim  redis_rate.Limit
	base http.RoundTripper
}

func (t *redisRateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for {
		res, err := t.rl.Allow(req.Context(), t.key, t.lim)
		if err != nil {
			return nil, err
		}
		if res.Allowed > 0 {
			return t.base.RoundTrip(req)
		}
		time.Sleep(res.RetryAfter)
	}
}
