package ezthrottle

import (
	"fmt"
	"math"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// funcClock is a handClock with AfterFunc (an AfterFuncClock): the
// functions come due as it is advanced, and are called then, outside its
// locks, one after the other.
type funcClock struct {
	handClock
	mu    sync.Mutex
	funcs []*pendingFunc
}

type pendingFunc struct {
	at   time.Time
	f    func()
	done bool
}

func (c *funcClock) AfterFunc(d time.Duration, f func()) func() bool {
	p := &pendingFunc{at: c.Now().Add(d), f: f}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.funcs = append(c.funcs, p)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		stopped := !p.done
		p.done = true
		return stopped
	}
}

// advance moves the clock by d and calls the functions that came due.
func (c *funcClock) advance(d time.Duration) {
	c.handClock.advance(d)
	now := c.Now()
	c.mu.Lock()
	var due []*pendingFunc
	c.funcs = slices.DeleteFunc(c.funcs, func(p *pendingFunc) bool {
		if !p.done && p.at.After(now) {
			return false
		}
		if !p.done {
			p.done = true
			due = append(due, p)
		}
		return true
	})
	c.mu.Unlock()
	for _, p := range due {
		p.f()
	}
}

// pending is the number of functions waiting to be called.
func (c *funcClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.funcs)
}

var _ AfterFuncClock = (*funcClock)(nil)
var _ AfterFuncClock = systemClock{}

// TestIdleHostsEvictedWithoutCalls: after a burst to 20,000 hosts and no
// call at all since, every host is evicted from the limiter and from the
// host cache within 1.5 × the idle timeout and their memory is released,
// with the MemoryLimiter or another Limiter; then no timer is left armed,
// so nothing holds the Transport any more.
func TestIdleHostsEvictedWithoutCalls(t *testing.T) {
	for _, name := range []string{"memory", "other"} {
		t.Run(name, func(t *testing.T) {
			clk := &funcClock{handClock: handClock{t: time.Now()}}
			opts := []Option{WithBase(noBodyRT{}), WithClock(clk), WithIdleTimeout(time.Minute),
				WithDefaultLimit(Limit{Rate: math.Inf(1), MaxInFlight: 10})}
			if name == "other" {
				opts = append(opts, WithLimiter(nopLimiter{}))
			}
			tr, err := New(opts...)
			require.NoError(t, err)
			heap := func() int64 {
				runtime.GC()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return int64(ms.HeapAlloc)
			}
			before := heap()
			const n = 20000
			for i := range n {
				req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("https://h%d.example/", i), nil)
				require.NoError(t, err)
				resp, err := tr.RoundTrip(req)
				require.NoError(t, err)
				require.NoError(t, resp.Body.Close())
			}
			grown := heap() - before
			require.Len(t, tr.cachedHosts(), n)
			require.Positive(t, clk.pending(), "a sweep timer is armed")

			// No call from now on: only the clock moves.
			for elapsed := time.Duration(0); elapsed < 59*time.Second; elapsed += time.Second {
				clk.advance(time.Second)
			}
			assert.Len(t, tr.cachedHosts(), n, "nothing goes before the timeout")
			if tr.mem != nil {
				assert.Equal(t, n, tr.mem.Len())
			}
			for elapsed := 59 * time.Second; elapsed < 90*time.Second; elapsed += time.Second {
				clk.advance(time.Second)
			}
			assert.Empty(t, tr.cachedHosts(), "host cache entries evicted without calls")
			if tr.mem != nil {
				assert.Zero(t, tr.mem.Len(), "limiter state evicted without calls")
			}
			left := heap() - before
			t.Logf("%d hosts: %d B; after eviction without calls: %d B", n, grown, left)
			assert.Less(t, left, grown/10, "memory released")
			assert.Zero(t, clk.pending(), "no timer left armed")

			// A new host arms the timers again.
			req, err := http.NewRequest(http.MethodGet, "https://again.example/", nil)
			require.NoError(t, err)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			assert.Positive(t, clk.pending())
			runtime.KeepAlive(tr)
		})
	}
}

// TestAbandonedTransportIsCollected: with the system clock, a Transport
// that was used and then dropped (no Close exists) is garbage once its
// hosts have gone idle: its sweep timers do not keep it alive for ever.
func TestAbandonedTransportIsCollected(t *testing.T) {
	wp := func() weak.Pointer[Transport] {
		tr, err := New(WithBase(noBodyRT{}), WithIdleTimeout(20*time.Millisecond))
		require.NoError(t, err)
		for i := range 10 {
			req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("https://h%d.example/", i), nil)
			require.NoError(t, err)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
		}
		return weak.Make(tr)
	}()
	// Not a timing assertion: the deadline only bounds a failure.
	deadline := time.Now().Add(20 * time.Second)
	for wp.Value() != nil {
		require.True(t, time.Now().Before(deadline), "the Transport is still reachable")
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
}
