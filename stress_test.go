package ezthrottle_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// inflightBody decrements the host's in-flight count when closed.
type inflightBody struct {
	io.Reader
	once sync.Once
	dec  func()
}

func (b *inflightBody) Close() error { b.once.Do(b.dec); return nil }

// TestConcurrentHosts runs 200 goroutines against 20 hosts (run it with
// -race; goleak checks nothing is left running): the in-flight cap of every
// host holds, every request gets an outcome, every body is closed.
func TestConcurrentHosts(t *testing.T) {
	const (
		hosts      = 20
		goroutines = 200
		perG       = 10
		maxFlight  = 3
	)
	var (
		mu       sync.Mutex
		inflight = map[string]int{}
		peak     = map[string]int{}
		served   atomic.Int64
	)
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		h := r.URL.Host
		mu.Lock()
		inflight[h]++
		if inflight[h] > peak[h] {
			peak[h] = inflight[h]
		}
		mu.Unlock()
		n := served.Add(1)
		status := 200
		if n%17 == 0 {
			status = 429
		}
		resp := respond(r, status, "body")
		resp.Body = &inflightBody{Reader: resp.Body, dec: func() {
			mu.Lock()
			inflight[h]--
			mu.Unlock()
		}}
		return resp, nil
	})
	sub := &fakeSubmitter{}
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 5000, Burst: 50, MaxInFlight: maxFlight}))

	var wg sync.WaitGroup
	var ok, forwarded, cancelled atomic.Int64
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < perG; i++ {
				ctx := context.Background()
				var cancel context.CancelFunc = func() {}
				if (g+i)%23 == 0 {
					ctx, cancel = context.WithCancel(ctx)
					cancel() // some callers give up at once
				}
				u := fmt.Sprintf("https://h%d.test/g%d/%d", (g+i)%hosts, g, i)
				req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
				if i%2 == 0 { // a body without GetBody: captured while sent
					req.Method = "PUT"
					req.Body = io.NopCloser(strings.NewReader(u))
				}
				resp, err := tr.RoundTrip(req)
				cancel()
				if err != nil {
					cancelled.Add(1)
					continue
				}
				if ezthrottle.IsForwarded(resp) {
					forwarded.Add(1)
				} else {
					ok.Add(1)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}(g)
	}
	wg.Wait()
	assert.Equal(t, int64(goroutines*perG), ok.Load()+forwarded.Load()+cancelled.Load())
	assert.Greater(t, forwarded.Load(), int64(0))
	assert.Greater(t, cancelled.Load(), int64(0))
	assert.Equal(t, int(forwarded.Load()), len(sub.Jobs()))
	puts := 0
	for _, j := range sub.Jobs() {
		if j.Method == "PUT" {
			puts++
			assert.Equal(t, j.URL, j.Body, "each forwarded job carries its own captured body")
		}
	}
	assert.Greater(t, puts, 0)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, peak, hosts)
	for h, p := range peak {
		assert.LessOrEqual(t, p, maxFlight, "host %s exceeded its in-flight cap", h)
		assert.Equal(t, 0, inflight[h], "host %s: a response body was never closed", h)
	}
	ml := tr.Limiter().(*ezthrottle.MemoryLimiter)
	for i := 0; i < hosts; i++ {
		s, found := ml.Stats(fmt.Sprintf("https://h%d.test:443", i))
		require.True(t, found)
		assert.Equal(t, 0, s.InFlight)
		assert.Equal(t, 0, s.Waiting)
	}
}
