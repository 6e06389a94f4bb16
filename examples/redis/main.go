// Redis: several pods share one per-host limit.
//
//	EZTHROTTLE_REDIS_ADDR=127.0.0.1:6379 go run ./examples/redis
//
// Four Transports stand for four pods of one service: each has its own
// go-redis client, its own redislimit.Limiter and its own connection pool,
// exactly as separate processes would. They call one simulated API whose
// limit is 10 requests per second (bursts of 2) and 3 in flight. With
// per-process limiters the API would see 4 x 10 = 40 requests per second;
// with the shared limit it sees 10, whichever pod sends them.
//
// Without a Redis at $EZTHROTTLE_REDIS_ADDR (default 127.0.0.1:6379) the
// program says so and exits successfully.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/redislimit"
)

const (
	pods       = 4
	perPod     = 6
	rate       = 10
	burst      = 2
	inFlight   = 3
	apiLatency = 150 * time.Millisecond
)

func main() {
	addr := os.Getenv("EZTHROTTLE_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	if err := ping(addr); err != nil {
		fmt.Printf("No Redis reachable at %s (%v).\n", addr, err)
		fmt.Println("Start one (e.g. `redis-server --port 6379 --save ''`) or set EZTHROTTLE_REDIS_ADDR=host:port, then run this example again.")
		return
	}
	if err := run(context.Background(), addr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func ping(addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return rdb.Ping(ctx).Err()
}

// api is the simulated rate-limited API: it records when each request
// arrives and how many run at once.
type api struct {
	start      time.Time
	mu         sync.Mutex
	arrivals   []time.Duration
	cur, peak  atomic.Int64
	perPodSeen [pods]atomic.Int64
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.arrivals = append(a.arrivals, time.Since(a.start))
	a.mu.Unlock()
	n := a.cur.Add(1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	time.Sleep(apiLatency)
	a.cur.Add(-1)
	fmt.Fprintln(w, "ok")
}

// pod is one process-equivalent.
type pod struct {
	rdb     *redis.Client
	limiter *redislimit.Limiter
	base    *http.Transport
	client  *http.Client
}

func newPod(addr, prefix string) (*pod, error) {
	rdb := redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  300 * time.Millisecond,
		ReadTimeout:  300 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond,
	})
	limiter, err := redislimit.New(rdb, redislimit.WithPrefix(prefix))
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	base := &http.Transport{}
	tr, err := ezthrottle.New(
		ezthrottle.WithBase(base),
		ezthrottle.WithLimiter(limiter),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: rate, Burst: burst, MaxInFlight: inFlight}),
	)
	if err != nil {
		_ = limiter.Close()
		_ = rdb.Close()
		return nil, err
	}
	return &pod{rdb: rdb, limiter: limiter, base: base, client: &http.Client{Transport: tr}}, nil
}

func (p *pod) close() {
	p.base.CloseIdleConnections()
	_ = p.limiter.Close()
	_ = p.rdb.Close()
}

func run(ctx context.Context, addr string, out io.Writer) error {
	a := &api{}
	srv := httptest.NewServer(a)
	defer srv.Close()

	// One namespace per run, so runs never see each other's state.
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	prefix := "ezthrottle-example:" + hex.EncodeToString(rnd[:]) + ":"

	ps := make([]*pod, pods)
	for i := range ps {
		p, err := newPod(addr, prefix)
		if err != nil {
			return err
		}
		defer p.close()
		ps[i] = p
	}

	fmt.Fprintf(out, "%d pods share one limit on %s: %d req/s (bursts of %d), %d in flight; the API takes %v per request.\n",
		pods, srv.URL, rate, burst, inFlight, apiLatency)
	fmt.Fprintf(out, "Each pod sends %d requests at once: %d in total.\n\n", perPod, pods*perPod)

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a.start = time.Now()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, p := range ps {
		for j := 0; j < perPod; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
				if err == nil {
					var resp *http.Response
					if resp, err = p.client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
						a.perPodSeen[i].Add(1)
						mu.Lock()
						fmt.Fprintf(out, "  %6.2fs  pod %d  %s\n", time.Since(a.start).Seconds(), i+1, resp.Status)
						mu.Unlock()
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(a.start)
	if len(errs) > 0 {
		return fmt.Errorf("%d requests failed, first: %w", len(errs), errs[0])
	}

	a.mu.Lock()
	n := len(a.arrivals)
	maxInSecond := 0
	for i := range a.arrivals {
		k := 0
		for j := i; j < n && a.arrivals[j]-a.arrivals[i] < time.Second; j++ {
			k++
		}
		maxInSecond = max(maxInSecond, k)
	}
	a.mu.Unlock()

	fmt.Fprintf(out, "\nThe API received %d requests in %.2fs.\n", n, elapsed.Seconds())
	fmt.Fprintf(out, "Busiest second: %d requests (limit %d + burst %d; without sharing up to %d).\n",
		maxInSecond, rate, burst, pods*(rate+burst))
	fmt.Fprintf(out, "Most in flight at once: %d (limit %d; without sharing up to %d).\n",
		a.peak.Load(), inFlight, pods*inFlight)
	for i, p := range ps {
		s := p.limiter.Stats()
		fmt.Fprintf(out, "pod %d: %d requests, %d Redis decisions, redis available=%t, outages=%d\n",
			i+1, a.perPodSeen[i].Load(), s.Decisions, s.Available, s.Outages)
	}
	return nil
}
