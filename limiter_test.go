package ezthrottle_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

const hostA = "https://a.example:443"

type acquireResult struct {
	p   ezthrottle.Permit
	err error
}

func acquireAsync(l ezthrottle.Limiter, ctx context.Context, a ezthrottle.Admission) chan acquireResult {
	ch := make(chan acquireResult, 1)
	go func() {
		p, err := l.Acquire(ctx, a)
		ch <- acquireResult{p, err}
	}()
	return ch
}

func stats(t *testing.T, m *ezthrottle.MemoryLimiter, key string) ezthrottle.HostStats {
	t.Helper()
	s, ok := m.Stats(key)
	require.True(t, ok, "host %s not tracked", key)
	return s
}

func TestMemoryLimiterPacing(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: 2, Burst: 1}}
	ctx := context.Background()

	p, err := m.Acquire(ctx, adm)
	require.NoError(t, err)
	p.Release()

	ch := acquireAsync(m, ctx, adm)
	waitFor(t, "second request to wait on a timer", func() bool { return clk.Timers() == 1 })
	select {
	case <-ch:
		t.Fatal("second request admitted before its turn")
	default:
	}
	clk.Advance(499 * time.Millisecond)
	select {
	case <-ch:
		t.Fatal("admitted 1ms early")
	default:
	}
	clk.Advance(time.Millisecond)
	r := <-ch
	require.NoError(t, r.err)
	r.p.Release()
}

func TestMemoryLimiterFIFO(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: 1, Burst: 1}}
	ctx := context.Background()
	p, err := m.Acquire(ctx, adm) // consumes the token
	require.NoError(t, err)
	p.Release()

	const n = 6
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	var finished atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer finished.Add(1)
			p, err := m.Acquire(ctx, adm)
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			p.Release()
		}(i)
		// Start the next one only once this one is queued.
		waitFor(t, "waiter queued", func() bool { return stats(t, m, hostA).Waiting == i+1 })
	}
	for i := 0; i < n; i++ {
		// Advance only once the previous waiter is gone and the new head
		// waits on its timer: the fake clock must not move while a waiter
		// is between reading it and setting its timer.
		waitFor(t, "the head waiter's timer", func() bool { return finished.Load() == int32(i) && clk.Timers() == 1 })
		clk.Advance(time.Second)
		waitFor(t, "one admission", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == i+1 })
	}
	wg.Wait()
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5}, order)

	// A newcomer never jumps the queue, even when a token is available the
	// moment it arrives.
	ch := acquireAsync(m, ctx, adm)
	waitFor(t, "waiter queued", func() bool { return stats(t, m, hostA).Waiting == 1 })
	clk.Advance(time.Second)
	_, err = m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: adm.Limit, Deadline: clk.Now()})
	require.ErrorIs(t, err, ezthrottle.ErrThrottled, "the token belongs to the waiter")
	r := <-ch
	require.NoError(t, r.err)
	r.p.Release()
}

func TestMemoryLimiterInFlightCap(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 2}}
	ctx := context.Background()
	p1, err := m.Acquire(ctx, adm)
	require.NoError(t, err)
	p2, err := m.Acquire(ctx, adm)
	require.NoError(t, err)
	ch := acquireAsync(m, ctx, adm)
	waitFor(t, "third queued", func() bool { return stats(t, m, hostA).Waiting == 1 })
	assert.Equal(t, 2, stats(t, m, hostA).InFlight)
	select {
	case <-ch:
		t.Fatal("third admitted over the cap")
	default:
	}
	p1.Release()
	r := <-ch
	require.NoError(t, r.err)
	assert.Equal(t, 2, stats(t, m, hostA).InFlight)
	p2.Release()
	r.p.Release()
	assert.Equal(t, 0, stats(t, m, hostA).InFlight)
}

// TestMemoryLimiterReleaseNoLostWakeup hammers one host with a cap of one
// in flight: Release frees the slot without the host's lock, so a waiter
// that checked the slot just before it was freed must still be woken. A
// lost wake-up hangs a goroutine (caught by the context's generous bound,
// which only turns a hang into a failure); the cap must never be exceeded.
func TestMemoryLimiterReleaseNoLostWakeup(t *testing.T) {
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 1}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const workers, rounds = 8, 2000
	var inFlight, maxSeen atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				p, err := m.Acquire(ctx, adm)
				if err != nil {
					t.Error(err)
					return
				}
				n := inFlight.Add(1)
				for {
					old := maxSeen.Load()
					if n <= old || maxSeen.CompareAndSwap(old, n) {
						break
					}
				}
				inFlight.Add(-1)
				p.Release()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(1), maxSeen.Load())
	st := stats(t, m, hostA)
	assert.Equal(t, 0, st.InFlight)
	assert.Equal(t, 0, st.Waiting)
}

// TestMemoryLimiterDoubleRelease checks that releasing a permit twice never
// drives the count in flight below zero (which would let an extra request
// past the cap later).
func TestMemoryLimiterDoubleRelease(t *testing.T) {
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: newFakeClock()})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 1}}
	p, err := m.Acquire(context.Background(), adm)
	require.NoError(t, err)
	p.Release()
	p.Release()
	assert.Equal(t, 0, stats(t, m, hostA).InFlight)
	p1, err := m.Acquire(context.Background(), adm)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(m, ctx, adm)
	waitFor(t, "second queued", func() bool { return stats(t, m, hostA).Waiting == 1 })
	cancel()
	assert.ErrorIs(t, (<-ch).err, context.Canceled, "a second request got past the cap of one")
	p1.Release()
}

func TestMemoryLimiterDeadlineDecision(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	lim := ezthrottle.Limit{Rate: 1, Burst: 1}
	ctx := context.Background()
	p, err := m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: lim})
	require.NoError(t, err)
	p.Release()

	// The next token is 1 s away: a 900 ms deadline must not start waiting.
	_, err = m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Deadline: clk.Now().Add(900 * time.Millisecond)})
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Predicted)
	assert.Equal(t, time.Second, te.Wait)
	assert.Equal(t, hostA, te.Host)
	assert.ErrorIs(t, err, ezthrottle.ErrThrottled)
	assert.Equal(t, 0, clk.Timers(), "no wait was started")
	assert.Equal(t, 0, stats(t, m, hostA).Waiting)

	// A 1 s deadline is enough.
	ch := acquireAsync(m, ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Deadline: clk.Now().Add(time.Second)})
	waitFor(t, "waiting", func() bool { return clk.Timers() >= 1 })
	clk.Advance(time.Second)
	r := <-ch
	require.NoError(t, r.err)
	r.p.Release()

	// Queued requests count: with one waiter ahead the wait is 2 s.
	ch1 := acquireAsync(m, ctx, ezthrottle.Admission{Key: hostA, Limit: lim})
	waitFor(t, "first waiter", func() bool { return stats(t, m, hostA).Waiting == 1 })
	_, err = m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Deadline: clk.Now().Add(1500 * time.Millisecond)})
	require.ErrorAs(t, err, &te)
	assert.Equal(t, 2*time.Second, te.Wait)
	clk.Advance(time.Second)
	r = <-ch1
	require.NoError(t, r.err)
	r.p.Release()
}

func TestMemoryLimiterDeadlineWhileWaitingForSlot(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 1}}
	p, err := m.Acquire(context.Background(), adm)
	require.NoError(t, err)
	adm.Deadline = clk.Now().Add(3 * time.Second)
	ch := acquireAsync(m, context.Background(), adm)
	waitFor(t, "deadline timer", func() bool { return clk.Timers() == 1 })
	clk.Advance(3 * time.Second)
	r := <-ch
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, r.err, &te)
	assert.False(t, te.Predicted)
	assert.Equal(t, 3*time.Second, te.Wait)
	assert.Equal(t, 0, stats(t, m, hostA).Waiting)
	p.Release()
}

func TestMemoryLimiterCancelLeavesQueue(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 1}}
	p, err := m.Acquire(context.Background(), adm)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	ch1 := acquireAsync(m, ctx, adm)
	waitFor(t, "first queued", func() bool { return stats(t, m, hostA).Waiting == 1 })
	ch2 := acquireAsync(m, context.Background(), adm)
	waitFor(t, "second queued", func() bool { return stats(t, m, hostA).Waiting == 2 })
	cancel()
	r1 := <-ch1
	assert.ErrorIs(t, r1.err, context.Canceled)
	waitFor(t, "first left the queue", func() bool { return stats(t, m, hostA).Waiting == 1 })
	p.Release()
	r2 := <-ch2
	require.NoError(t, r2.err)
	r2.p.Release()

	_, err = m.Acquire(ctx, adm)
	assert.ErrorIs(t, err, context.Canceled, "a done context is refused at once")
}

func TestMemoryLimiterLearn(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.DefaultLimit()}
	ctx := context.Background()
	p, err := m.Acquire(ctx, adm)
	require.NoError(t, err)
	p.Release()

	m.Learn(ctx, hostA, ezthrottle.Signals{RPS: 10, HasRPS: true, MaxConcurrent: 5, HasMaxConcurrent: true})
	s := stats(t, m, hostA)
	assert.Equal(t, 10.0, s.Rate)
	assert.Equal(t, 5, s.MaxInFlight)
	assert.True(t, s.Learned)
	clk.Advance(100 * time.Millisecond) // one token at 10 rps
	p, err = m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: adm.Limit, Deadline: clk.Now()})
	require.NoError(t, err, "the learned rate applies to the very next request")
	p.Release()

	// A pause holds every request until it ends.
	m.Learn(ctx, hostA, ezthrottle.Signals{PauseUntil: clk.Now().Add(5 * time.Second)})
	_, err = m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: adm.Limit, Deadline: clk.Now().Add(4 * time.Second)})
	require.ErrorIs(t, err, ezthrottle.ErrThrottled)
	ch := acquireAsync(m, ctx, adm)
	waitFor(t, "waiting on the pause", func() bool { return clk.Timers() == 1 })
	clk.Advance(4999 * time.Millisecond)
	select {
	case <-ch:
		t.Fatal("admitted during the pause")
	default:
	}
	clk.Advance(time.Millisecond)
	r := <-ch
	require.NoError(t, r.err)
	r.p.Release()

	// An earlier pause does not shorten a running one.
	m.Learn(ctx, hostA, ezthrottle.Signals{PauseUntil: clk.Now().Add(10 * time.Second)})
	m.Learn(ctx, hostA, ezthrottle.Signals{PauseUntil: clk.Now().Add(time.Second)})
	assert.Equal(t, clk.Now().Add(10*time.Second), stats(t, m, hostA).PausedUntil)

	// Invalid learned values are ignored.
	m.Learn(ctx, hostA, ezthrottle.Signals{RPS: math.NaN(), HasRPS: true, MaxConcurrent: 0, HasMaxConcurrent: true})
	assert.Equal(t, 10.0, stats(t, m, hostA).Rate)
	assert.Equal(t, 5, stats(t, m, hostA).MaxInFlight)
}

func TestMemoryLimiterEvictsIdleHosts(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk, IdleTimeout: time.Minute})
	ctx := context.Background()
	lim := ezthrottle.Unlimited()
	var held ezthrottle.Permit
	for i := 0; i < 1000; i++ {
		p, err := m.Acquire(ctx, ezthrottle.Admission{Key: "https://h" + itoa(i) + ":443", Limit: lim})
		require.NoError(t, err)
		if i == 0 {
			held = p // host 0 keeps a request in flight
		} else {
			p.Release()
		}
	}
	m.Learn(ctx, "https://paused:443", ezthrottle.Signals{PauseUntil: clk.Now().Add(10 * time.Minute)})
	require.Equal(t, 1001, m.Len())
	clk.Advance(2 * time.Minute)
	// New hosts trigger the sweep of their shard; touch enough to hit all.
	for i := 0; i < 1000; i++ {
		p, err := m.Acquire(ctx, ezthrottle.Admission{Key: "https://new" + itoa(i) + ":443", Limit: lim})
		require.NoError(t, err)
		p.Release()
	}
	_, ok := m.Stats("https://h1:443")
	assert.False(t, ok, "idle host evicted")
	_, ok = m.Stats("https://h0:443")
	assert.True(t, ok, "host with a request in flight kept")
	_, ok = m.Stats("https://paused:443")
	assert.True(t, ok, "paused host kept")
	assert.LessOrEqual(t, m.Len(), 1002)
	held.Release()
}

func TestLimitValidate(t *testing.T) {
	for _, l := range []ezthrottle.Limit{{Rate: 0}, {Rate: -1}, {Rate: math.NaN()}, {Rate: 1, Burst: -1}, {Rate: 1, MaxInFlight: -1}} {
		assert.Error(t, l.Validate(), "%+v", l)
	}
	assert.NoError(t, ezthrottle.DefaultLimit().Validate())
	assert.NoError(t, ezthrottle.Unlimited().Validate())
	assert.True(t, ezthrottle.Unlimited().IsUnlimited())
	assert.False(t, ezthrottle.DefaultLimit().IsUnlimited())
}

func TestThrottleErrorClassification(t *testing.T) {
	te := &ezthrottle.ThrottleError{Host: hostA, Wait: time.Second, Predicted: true, Cause: context.DeadlineExceeded}
	assert.ErrorIs(t, te, context.DeadlineExceeded)
	assert.ErrorIs(t, te, ezthrottle.ErrThrottled)
	assert.True(t, te.Timeout())
	assert.Contains(t, te.Error(), "deadline")
	te2 := &ezthrottle.ThrottleError{Host: hostA, Wait: time.Second, Cause: ezthrottle.ErrMaxWait}
	assert.ErrorIs(t, te2, ezthrottle.ErrMaxWait)
	assert.False(t, errors.Is(te2, context.DeadlineExceeded))
	assert.False(t, te2.Timeout())
	assert.Contains(t, te2.Error(), "maximum wait")
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}
