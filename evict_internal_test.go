package ezthrottle

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handClock is a Clock moved by hand (no timer is used by these tests).
type handClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *handClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *handClock) NewTimer(d time.Duration) Timer { return SystemClock().NewTimer(d) }

func (c *handClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type noBodyRT struct{}

func (noBodyRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// TestHostStateFitsTwoCacheLines: with many hosts every line of a host's
// state read by a request is a cache miss; keep it in two.
func TestHostStateFitsTwoCacheLines(t *testing.T) {
	assert.LessOrEqual(t, unsafe.Sizeof(hostState{}), uintptr(128))
}

// TestTransportReleasesIdleHosts: with traffic to one host only, the
// limiter's state and the Transport's host-cache entries of 20,000 idle
// hosts are evicted within IdleTimeout × 1.5 (plus a few calls), and their
// memory is released: the maps are rebuilt smaller, not just emptied.
func TestTransportReleasesIdleHosts(t *testing.T) {
	clk := &handClock{t: time.Now()}
	tr, err := New(WithBase(noBodyRT{}), WithClock(clk), WithIdleTimeout(time.Minute),
		WithDefaultLimit(Limit{Rate: math.Inf(1), MaxInFlight: 10}))
	require.NoError(t, err)
	get := func(host string) {
		req, err := http.NewRequest(http.MethodGet, "https://"+host+"/", nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
	}
	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	get("keep.example")
	before := heap()
	const n = 20000
	for i := range n {
		get(fmt.Sprintf("h%d.example", i))
	}
	grown := heap() - before
	require.Equal(t, n+1, tr.mem.Len())
	require.Len(t, tr.cachedHosts(), n+1)
	t.Logf("%d hosts: %d B", n, grown)

	for range 59 { // before the timeout nothing goes
		clk.advance(time.Second)
		get("keep.example")
	}
	assert.Equal(t, n+1, tr.mem.Len())
	for range 31 + 10 {
		clk.advance(time.Second)
		get("keep.example")
	}
	assert.Equal(t, 1, tr.mem.Len(), "limiter state evicted")
	assert.Len(t, tr.cachedHosts(), 1, "host cache entries evicted")
	for i := range tr.mem.shards {
		s := &tr.mem.shards[i]
		s.mu.RLock()
		assert.Equal(t, len(s.hosts), s.peak, "limiter shard %d rebuilt", i)
		s.mu.RUnlock()
	}
	left := heap() - before
	t.Logf("after eviction: %d B", left)
	assert.Less(t, left, grown/10, "memory released")
	runtime.KeepAlive(tr)
}

// nopLimiter admits everything (a Limiter other than the MemoryLimiter).
type nopLimiter struct{}

func (nopLimiter) Acquire(context.Context, Admission) (Permit, error) { return nopPermit{}, nil }
func (nopLimiter) Learn(context.Context, string, Signals)             {}

type nopPermit struct{}

func (nopPermit) Release() {}

// TestHostCacheEvictsWithOtherLimiter: with a Limiter other than the
// MemoryLimiter, the host cache still drops hosts unused for
// IdleTimeout/2 or more: generations then start on cache misses.
func TestHostCacheEvictsWithOtherLimiter(t *testing.T) {
	clk := &handClock{t: time.Now()}
	tr, err := New(WithBase(noBodyRT{}), WithClock(clk), WithIdleTimeout(time.Minute), WithLimiter(nopLimiter{}))
	require.NoError(t, err)
	get := func(host string) {
		req, err := http.NewRequest(http.MethodGet, "https://"+host+"/", nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
	}
	for i := range 1000 {
		get(fmt.Sprintf("h%d.example", i))
	}
	require.Len(t, tr.cachedHosts(), 1000)
	for i := range 2 {
		clk.advance(31 * time.Second)
		get(fmt.Sprintf("new%d.example", i)) // a miss starts a generation
		for range keyShards / keySweepShards {
			get("keep.example")
		}
	}
	assert.Len(t, tr.cachedHosts(), 3, "only the hosts used in the last two generations")
}
