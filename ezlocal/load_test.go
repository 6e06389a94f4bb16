package ezlocal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// queued returns how many requests wait for a slot of host in region.
func (e *Engine) queued(region, host string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.pacers[host]; ok {
		if l, ok := p.lanes[region]; ok {
			return l.waiters.Len()
		}
	}
	return 0
}

// freshConns returns how many connections have not sent a request.
func (e *Engine) freshConns() int {
	e.connMu.Lock()
	defer e.connMu.Unlock()
	return len(e.freshConn)
}

// waitQueued waits until n requests wait for a slot of host in region. The
// deadline only guards against a hung test; nothing is timed.
func waitQueued(t *testing.T, e *Engine, region, host string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return e.queued(region, host) == n }, 20*time.Second, time.Millisecond,
		"want %d queued", n)
}

// laneInflight returns the requests in flight of host in region.
func laneInflight(e *Engine, region, host string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pacerLocked(host).lane(region).inflight
}

// A freed slot goes to the longest-waiting request: waiters are served in
// arrival order, one per released slot, however many wait.
func TestPaceLaneFIFO(t *testing.T) {
	e, err := New(WithClock(newTestClock()), WithDefaultPace(1000, 1))
	require.NoError(t, err)
	defer e.Close()
	ctx := context.Background()
	hold, err := e.acquire(ctx, "iad", "h")
	require.NoError(t, err)

	const n = 40
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := e.acquire(ctx, "iad", "h")
			if err != nil {
				order <- -1
				return
			}
			order <- i // sent while holding the only slot
			rel(nil)
		}()
		waitQueued(t, e, "iad", "h", i+1) // i+1 arrives after i
	}
	hold(nil)
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	assert.Equal(t, want, got, "slots are granted in arrival order")
	assert.Equal(t, 0, laneInflight(e, "iad", "h"))
}

// One release grants one slot; a newcomer does not overtake the queue.
func TestPaceLaneOneGrantPerRelease(t *testing.T) {
	e, err := New(WithClock(newTestClock()), WithDefaultPace(1000, 2))
	require.NoError(t, err)
	defer e.Close()
	ctx := context.Background()
	r1, err := e.acquire(ctx, "iad", "h")
	require.NoError(t, err)
	r2, err := e.acquire(ctx, "iad", "h")
	require.NoError(t, err)

	const n = 5
	granted := make(chan func(http.Header) string, n)
	for i := range n {
		go func() {
			rel, err := e.acquire(ctx, "iad", "h")
			if err == nil {
				granted <- rel
			}
		}()
		waitQueued(t, e, "iad", "h", i+1)
	}
	r1(nil)
	first := <-granted
	assert.Equal(t, n-1, e.queued("iad", "h"), "one release grants exactly one waiter")
	assert.Equal(t, 2, laneInflight(e, "iad", "h"))
	// A newcomer finds the slots taken by the queue it arrived behind.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = e.acquire(cctx, "iad", "h")
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, n-1, e.queued("iad", "h"), "a cancelled waiter leaves the queue")

	// A raised max_concurrent grants as many waiters as it frees slots.
	h := http.Header{}
	h.Set("X-EZTHROTTLE-MAX-CONCURRENT", "10")
	assert.Equal(t, "max_concurrent 2→10", r2(h))
	rels := []func(http.Header) string{first}
	for range n - 1 {
		rels = append(rels, <-granted)
	}
	assert.Equal(t, 0, e.queued("iad", "h"))
	for _, rel := range rels {
		rel(nil)
	}
	assert.Equal(t, 0, laneInflight(e, "iad", "h"))
}

// A waiter cancelled after being granted hands its slot on instead of
// leaking it; one cancelled before leaves the queue.
func TestPaceLaneCancelledWaiters(t *testing.T) {
	e, err := New(WithClock(newTestClock()), WithDefaultPace(1000, 1))
	require.NoError(t, err)
	defer e.Close()
	ctx := context.Background()
	hold, err := e.acquire(ctx, "iad", "h")
	require.NoError(t, err)

	actx, cancelA := context.WithCancel(ctx)
	aDone := make(chan error, 1)
	go func() {
		rel, err := e.acquire(actx, "iad", "h")
		if err == nil {
			rel(nil)
		}
		aDone <- err
	}()
	waitQueued(t, e, "iad", "h", 1)
	bDone := make(chan func(http.Header) string, 1)
	go func() {
		rel, err := e.acquire(ctx, "iad", "h")
		if err == nil {
			bDone <- rel
		}
	}()
	waitQueued(t, e, "iad", "h", 2)
	cancelA()
	require.ErrorIs(t, <-aDone, context.Canceled)
	assert.Equal(t, 1, e.queued("iad", "h"))
	hold(nil)
	(<-bDone)(nil)
	assert.Equal(t, 0, laneInflight(e, "iad", "h"))

	// Granted and cancelled at once: whichever way the race goes, the slot
	// comes back.
	for range 50 {
		hold, err := e.acquire(ctx, "iad", "h")
		require.NoError(t, err)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if rel, err := e.acquire(cctx, "iad", "h"); err == nil {
				rel(nil)
			}
		}()
		waitQueued(t, e, "iad", "h", 1)
		go cancel()
		hold(nil)
		<-done
		require.Equal(t, 0, laneInflight(e, "iad", "h"))
		require.Equal(t, 0, e.queued("iad", "h"))
	}
}

var profHook func(bool)

// instantClock reads wall time and makes every engine delay instant.
type instantClock struct{}

func (instantClock) Now() time.Time { return time.Now() }

func (instantClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// BenchmarkPaceQueue measures the engine's throughput for one destination
// host with 2 requests in flight while 2,000 or 20,000 jobs wait for a slot:
// the time to complete 1,000 jobs once the queue is full. The pace lane
// hands each freed slot to one waiter, so the queue's length must not matter
// (issue 18 item 6: 984 vs 114 jobs/s when every waiter was woken). The two
// queue lengths alternate within each iteration, so the machine's drift
// affects both alike; ratio is jobs/s with 20,000 queued over jobs/s with
// 2,000 (median-ratio: the median of the iterations' ratios, less exposed
// to a burst of load on a shared machine).
//
//	go test -run '^$' -bench PaceQueue -benchtime 5x ./ezlocal/
func BenchmarkPaceQueue(b *testing.B) {
	const measured = 1000
	var small, large time.Duration
	var ratios []float64
	for range b.N {
		s := paceQueueRun(b, 2000, measured)
		l := paceQueueRun(b, 20000, measured)
		small, large = small+s, large+l
		ratios = append(ratios, s.Seconds()/l.Seconds())
	}
	rate := func(d time.Duration) float64 { return float64(measured*b.N) / d.Seconds() }
	b.ReportMetric(rate(small), "jobs/s-2k-queued")
	b.ReportMetric(rate(large), "jobs/s-20k-queued")
	b.ReportMetric(rate(large)/rate(small), "ratio")
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "median-ratio")
	b.ReportMetric(0, "ns/op")
}

// paceQueueRun queues n jobs for one host behind a closed gate, then times
// the completion of the first measured ones.
func paceQueueRun(b *testing.B, n, measured int) time.Duration {
	b.StopTimer()
	gate := make(chan struct{})
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-gate
		w.WriteHeader(http.StatusOK)
	}))
	defer dst.Close()
	var dispatched, completed atomic.Int64
	done := make(chan struct{})
	e, err := New(WithClock(instantClock{}), WithRegions(RegionConfig{Name: "iad"}), WithDefaultPace(1e6, 2),
		WithEventHook(func(_ string, ev Event) {
			switch ev.Type {
			case EventDispatched:
				dispatched.Add(1)
			case EventCompleted:
				if completed.Add(1) == int64(measured) {
					close(done)
				}
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	host := dst.Listener.Addr().String()
	for i := range n {
		if _, err := e.submit(ezclient.DialectCloud, "cus", fmt.Sprint(i), &ezclient.Job{URL: dst.URL}, "", ""); err != nil {
			b.Fatal(err)
		}
	}
	for dispatched.Load() < int64(n) || e.queued("iad", host) < n-2 {
		time.Sleep(time.Millisecond)
	}
	runtime.GC() // the setup's garbage is not the measured phase's cost
	b.StartTimer()
	if profHook != nil {
		profHook(true)
	}
	start := time.Now()
	close(gate)
	<-done
	elapsed := time.Since(start)
	if profHook != nil {
		profHook(false)
	}
	b.StopTimer()
	return elapsed
}

// Close closes at once the connections that are idle or have not sent a
// complete request, instead of waiting out http.Server.Shutdown's 5 s grace
// for new connections (issue 18 item 7). The client's side must see the
// connection closed well before that grace; the 2 s read deadline only
// bounds the failure on the old code.
func TestCloseClosesQuietConnections(t *testing.T) {
	dial := func(t *testing.T, e *Engine) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", e.ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, e *Engine) []net.Conn
	}{
		{"connected, nothing sent", func(t *testing.T, e *Engine) []net.Conn {
			c := dial(t, e)
			require.Eventually(t, func() bool { return e.freshConns() == 1 }, 20*time.Second, time.Millisecond)
			return []net.Conn{c}
		}},
		{"half a request header", func(t *testing.T, e *Engine) []net.Conn {
			c := dial(t, e)
			_, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n")
			require.NoError(t, err)
			require.Eventually(t, func() bool { return e.freshConns() == 1 }, 20*time.Second, time.Millisecond)
			return []net.Conn{c}
		}},
		{"idle after a request, and half of the next", func(t *testing.T, e *Engine) []net.Conn {
			c := dial(t, e)
			_, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
			require.NoError(t, err)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			_, err = io.WriteString(c, "GET /health HTTP/1.1\r\n")
			require.NoError(t, err)
			return []net.Conn{c}
		}},
		{"many quiet connections after concurrent submissions", func(t *testing.T, e *Engine) []net.Conn {
			dst := okServer(t)
			cl := cloudClient(t, e)
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := cl.Submit(context.Background(), &ezclient.Job{URL: dst.URL + "/" + strconv.Itoa(i)})
					assert.NoError(t, err)
				}()
			}
			wg.Wait()
			var cs []net.Conn
			for range 10 {
				cs = append(cs, dial(t, e))
			}
			// At least ours: the client's pool may hold dials that lost the
			// race to a reused connection and never carried a request (quiet
			// connections too).
			require.Eventually(t, func() bool { return e.freshConns() >= 10 }, 20*time.Second, time.Millisecond)
			return cs
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Start(WithClock(newTestClock()))
			require.NoError(t, err)
			conns := tc.setup(t, e)
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				_ = e.Close()
			}()
			for _, c := range conns {
				require.NoError(t, c.SetReadDeadline(time.Now().Add(2*time.Second)))
				_, err := io.Copy(io.Discard, c) // returns when the engine closes the connection
				var ne net.Error
				require.False(t, errors.As(err, &ne) && ne.Timeout(), "the engine kept a quiet connection open during Close")
			}
			<-closed
			assert.Zero(t, e.freshConns())
		})
	}
}

// countingServer is an httptest server counting the connections opened to
// it.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var opened atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			opened.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &opened
}

// The engine's default client keeps the connections of concurrent jobs and
// deliveries for the next ones (issue 18 item 5: over a clone of
// http.DefaultTransport it kept 2 per host, and 20,000 jobs opened 25,345
// connections).
func TestDefaultClientPoolsConnections(t *testing.T) {
	const conc, bursts = 16, 8
	e, _ := startEngine(t, WithDefaultPace(1e6, conc), WithWebhookRetries())
	dst, dstOpened := countingServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	hook, hookOpened := countingServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
	n := 0
	for range bursts {
		for range conc {
			n++
			_, err := e.submit(ezclient.DialectCloud, "cus", strconv.Itoa(n),
				&ezclient.Job{URL: dst.URL, Webhooks: []ezclient.Webhook{{URL: hook.URL}}}, "", "")
			require.NoError(t, err)
		}
		require.NoError(t, e.WaitIdle(context.Background()))
	}
	for _, ji := range e.Jobs() {
		require.True(t, ji.Has(EventWebhookDelivered), "%v", ji.Events)
	}
	assert.LessOrEqual(t, dstOpened.Load(), int64(2*conc), "connections to the destination for %d jobs", n)
	assert.LessOrEqual(t, hookOpened.Load(), int64(2*conc), "connections to the webhook for %d deliveries", n)
}

// BenchmarkEngineConnections runs 2,000 jobs (64 in flight to one host, a
// webhook each) through an engine whose client pools as http.DefaultTransport
// does (2 idle connections per host, the previous default) and through the
// default client, and reports the connections opened per job.
//
//	go test -run '^$' -bench EngineConnections -benchtime 3x ./ezlocal/
func BenchmarkEngineConnections(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts func() []Option
	}{
		{"pool=2(http.DefaultTransport)", func() []Option {
			return []Option{WithHTTPClient(&http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()})}
		}},
		{fmt.Sprintf("pool=%d(default)", ezclient.DefaultMaxIdleConnsPerHost), func() []Option { return nil }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 2000
			var opened atomic.Int64
			count := func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					opened.Add(1)
				}
			}
			dst := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
			dst.Config.ConnState = count
			dst.Start()
			defer dst.Close()
			hook := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
			hook.Config.ConnState = count
			hook.Start()
			defer hook.Close()
			opts := append([]Option{WithClock(instantClock{}), WithDefaultPace(1e6, 64), WithWebhookRetries(), WithMaxFinishedJobs(100)}, tc.opts()...)
			e, err := New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			defer e.hc.CloseIdleConnections()
			seq := 0
			b.ResetTimer()
			for range b.N {
				for range n {
					seq++
					if _, err := e.submit(ezclient.DialectCloud, "cus", strconv.Itoa(seq),
						&ezclient.Job{URL: dst.URL, Webhooks: []ezclient.Webhook{{URL: hook.URL}}}, "", ""); err != nil {
						b.Fatal(err)
					}
				}
				if err := e.WaitIdle(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(opened.Load())/float64(n*b.N), "conns/job")
		})
	}
}
