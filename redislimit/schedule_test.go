package redislimit

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// newClockedLimiter returns a Limiter whose local clock and Redis clock
// (the scripts' "now") are both clk, so a test decides when everything
// happens.
func newClockedLimiter(t *testing.T, addr, prefix string, clk *fakeClock, opts ...Option) *Limiter {
	t.Helper()
	l := newTestLimiter(t, newClient(t, addr), append([]Option{WithPrefix(prefix), WithClock(clk)}, opts...)...)
	l.serverNow = clk.Now
	l.sc = newScripts(true)
	return l
}

// The regression: a request whose turn comes while another process
// holds the pace gets that turn in Redis when it asks; waking up late does
// not move the schedule, so the next request's slot is where it was.
func TestLateWakeUpDoesNotDelayTheNextSlot(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	clk := newFakeClock()
	a := newClockedLimiter(t, addr, prefix, clk)
	b := newClockedLimiter(t, addr, prefix, clk)
	ctx := context.Background()
	lim := adm(10, 1, 0) // one every 100 ms, no burst
	t0 := clk.Now()
	now := func(d time.Duration) ezthrottle.Admission { x := lim; x.Deadline = t0.Add(d); return x }

	p, err := a.Acquire(ctx, now(0))
	require.NoError(t, err, "the first request starts at once")
	p.Release()

	got := make(chan error, 1)
	go func() { // b's request: its turn is at t0+100ms
		p, err := b.Acquire(ctx, lim)
		if err == nil {
			p.Release()
		}
		got <- err
	}()
	waitFor(t, "b to sleep until its turn", func() bool { return clk.pending() == 1 })
	clk.Advance(200 * time.Millisecond) // b wakes up 100 ms late
	require.NoError(t, <-got)

	// The schedule did not move: a's next turn is t0+200ms, now.
	p, err = a.Acquire(ctx, now(200*time.Millisecond))
	require.NoError(t, err, "the late wake-up did not delay the next slot")
	p.Release()
	// ... and the one after is t0+300ms, not earlier: no catch-up beyond the burst.
	_, err = a.Acquire(ctx, now(250*time.Millisecond))
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Predicted)
	assert.Equal(t, 100*time.Millisecond, te.Wait)
}

// The head of a local queue asks for the requests queued behind it in the
// same call, and each gets its own slot of the schedule: slot k at t0 +
// k x interval exactly, whenever the head woke up.
func TestHeadAdmitsQueuedWaitersInOneCall(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	clk := newFakeClock()
	l := newClockedLimiter(t, addr, prefix, clk)
	ctx := context.Background()
	lim := adm(10, 1, 0)
	p, err := l.Acquire(ctx, lim)
	require.NoError(t, err)
	p.Release()
	require.Equal(t, uint64(1), l.Stats().RoundTrips)

	var mu sync.Mutex
	done := map[int]time.Time{}
	var wg sync.WaitGroup
	start := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := l.Acquire(ctx, lim)
			if !assert.NoError(t, err) {
				return
			}
			p.Release()
			mu.Lock()
			done[i] = clk.Now()
			mu.Unlock()
		}()
	}
	// 1 and 2 get their turns (100 and 200 ms ahead, within the horizon)
	// at once and sleep; 3's turn is too far: it is told to come back;
	// 4 queues behind it.
	for i := 1; i <= 3; i++ {
		start(i)
		waitFor(t, "the request to sleep", func() bool { return clk.pending() == i })
	}
	start(4)
	waitFor(t, "4 to queue behind 3", func() bool { _, n, _ := gateOf(l, host); return n == 1 })
	returned := func() int { mu.Lock(); defer mu.Unlock(); return len(done) }

	t0 := clk.Now()
	clk.Advance(100 * time.Millisecond)
	waitFor(t, "1 to start", func() bool { return returned() == 1 })
	clk.Advance(100 * time.Millisecond) // 2 starts; 3 wakes late and asks for 3 and 4
	waitFor(t, "3 and 4 to get their turns", func() bool { return returned() == 2 && clk.pending() == 2 })
	clk.Advance(100 * time.Millisecond)
	waitFor(t, "3 to start", func() bool { return returned() == 3 })
	clk.Advance(100 * time.Millisecond)
	wg.Wait()
	for i := 1; i <= 4; i++ {
		assert.Equal(t, t0.Add(time.Duration(i)*100*time.Millisecond), done[i], "request %d starts on its slot", i)
	}
	s := l.Stats()
	assert.Equal(t, uint64(5), s.RoundTrips, "one call each for 0, 1, 2; two for 3, whose second call admitted 4 too")
	assert.Equal(t, uint64(6), s.Decisions, "5 admissions, 1 refusal")
}

// Four pods (two goroutines each) share 10 rps at burst 1 while every
// wake-up is up to 60 ms late: the turns stay on the schedule kept in
// Redis, never ahead of it and never drifting behind it.
func TestFourPodsKeepTheScheduleDespiteLateWakeUps(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	clk := newFakeClock()
	const (
		pods, perPod = 4, 2
		total        = 41 // 4 s of turns
		interval     = 100 * time.Millisecond
		maxLate      = 60 * time.Millisecond
	)
	lim := adm(10, 1, 0)
	ctx := context.Background()
	var (
		mu     sync.Mutex
		starts []time.Time
		left   atomic.Int64
		wg     sync.WaitGroup
	)
	left.Store(total)
	t0 := clk.Now()
	var limiters []*Limiter
	var finished atomic.Int64
	for p := 0; p < pods; p++ {
		l := newClockedLimiter(t, addr, prefix, clk)
		limiters = append(limiters, l)
		for w := 0; w < perPod; w++ {
			wg.Add(1)
			go func() {
				defer finished.Add(1)
				defer wg.Done()
				for left.Add(-1) >= 0 {
					pm, err := l.Acquire(ctx, lim)
					if !assert.NoError(t, err) {
						return
					}
					pm.Release()
					mu.Lock()
					starts = append(starts, clk.Now())
					mu.Unlock()
				}
			}()
		}
	}
	// Time moves only when every goroutine waits: on a timer (its turn,
	// or told to come back), in a local queue, or is done. Each wake-up is
	// then late by up to maxLate, and only by that.
	quiet := func() bool {
		n := clk.pending() + int(finished.Load())
		for _, l := range limiters {
			_, q, _ := gateOf(l, host)
			n += q
		}
		return n == pods*perPod
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for finished.Load() < pods*perPod {
		if !quiet() {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if at, ok := clk.next(); ok {
			clk.AdvanceTo(at.Add(time.Duration(rng.Int64N(int64(maxLate)))))
		}
	}
	wg.Wait()
	require.Len(t, starts, total)
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	for k, at := range starts {
		slot := t0.Add(time.Duration(k) * interval)
		require.False(t, at.Before(slot), "turn %d at %v, before its slot %v: faster than the pace", k, at.Sub(t0), slot.Sub(t0))
	}
	last := starts[total-1].Sub(t0)
	t.Logf("%d turns in %v (schedule: %v)", total, last, time.Duration(total-1)*interval)
	assert.LessOrEqual(t, last, time.Duration(total-1)*interval+maxLate, "late wake-ups did not slow the pace down")
}

// A request costing n takes n turns of the schedule; a cost the bucket can
// never hold fails at once with a *CostError.
func TestCostIsChargedInTurns(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	clk := newFakeClock()
	l := newClockedLimiter(t, addr, prefix, clk)
	ctx := context.Background()
	lim := adm(10, 5, 0) // one every 100 ms, bursts of 5
	t0 := clk.Now()
	at := func(d time.Duration) ezthrottle.Admission { x := lim; x.Deadline = t0.Add(d); return x }

	p, err := l.acquire(ctx, at(0), 3)
	require.NoError(t, err, "3 of the 5 tokens")
	p.Release()
	p, err = l.acquire(ctx, at(0), 2)
	require.NoError(t, err, "the other 2")
	p.Release()
	_, err = l.acquire(ctx, at(0), 2)
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, 200*time.Millisecond, te.Wait, "2 tokens: two intervals")

	_, err = l.acquire(ctx, at(time.Hour), 6)
	var ce *CostError
	require.ErrorAs(t, err, &ce, "6 > burst 5: never admissible")
	assert.ErrorIs(t, err, ErrCostTooHigh)
	assert.Equal(t, CostError{Host: host, Cost: 6, Burst: 5}, *ce)
	assert.Contains(t, err.Error(), host)
	_, err = l.acquire(ctx, lim, 0)
	require.Error(t, err, "a cost must be positive")

	// A learned pace makes a host paced that was configured unpaced: the
	// script refuses the cost then.
	l.Learn(ctx, "https://learned.example:443", ezthrottle.Signals{RPS: 1, HasRPS: true})
	_, err = l.acquire(ctx, ezthrottle.Admission{Key: "https://learned.example:443", Limit: ezthrottle.Unlimited()}, 2)
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, int64(1), ce.Burst)
}

// With a cap in flight an admitted request costs one round trip: its
// release travels with the next call of the host (which takes the released
// lease over), Release never calls Redis itself, and the goroutine that
// renews and sends releases is not started and stopped for each request.
func TestReleaseTravelsWithTheNextCall(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	clk := newFakeClock() // the background flush never comes: only calls carry releases
	l := newClockedLimiter(t, addr, prefix, clk)
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 1)
	const n = 20
	for i := 0; i < n; i++ {
		p, err := l.Acquire(ctx, withDeadline(a, time.Hour))
		require.NoError(t, err, "request %d: the previous one's slot is free", i)
		p.Release()
	}
	s := l.Stats()
	assert.Equal(t, uint64(n), s.RoundTrips, "one round trip per admitted request")
	assert.Equal(t, uint64(n), s.Decisions)
	l.lmu.Lock()
	assert.Equal(t, 1, l.keeperStarts, "the keeper started once")
	l.lmu.Unlock()
	members, err := newClient(t, addr).ZCard(ctx, l.keys(host).leases).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), members, "the released lease, taken over each time")
	hs, err := l.Inspect(ctx, host) // carries the last release
	require.NoError(t, err)
	assert.Zero(t, hs.InFlight)
}

// A released lease handed to the next request is counted as held; if it
// had expired meanwhile (its slot may have gone to another process), the
// count was short and the turn is taken back before anyone gets it.
func TestTakingOverAnExpiredLeaseDoesNotExceedTheCap(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	clk := newFakeClock()
	a := newClockedLimiter(t, addr, prefix, clk)
	b := newClockedLimiter(t, addr, prefix, clk)
	ctx := context.Background()
	lim := adm(math.Inf(1), 1, 1)
	pa, err := a.Acquire(ctx, lim)
	require.NoError(t, err)
	// a's lease expires (its process stalled past the TTL): it is dropped,
	// and b takes the slot.
	rdb := newClient(t, addr)
	require.NoError(t, rdb.ZRem(ctx, a.keys(host).leases, pa.(*lease).id).Err())
	a.lmu.Lock()
	pa.(*lease).scored = time.Time{} // not renewed since
	a.lmu.Unlock()
	pb, err := b.Acquire(ctx, withDeadline(lim, 0))
	require.NoError(t, err)
	defer pb.Release()

	pa.Release()
	_, err = a.Acquire(ctx, withDeadline(lim, 0))
	require.ErrorIs(t, err, ezthrottle.ErrThrottled, "b holds the only slot")
	hs, err := a.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Equal(t, 1, hs.InFlight)
	assert.Zero(t, a.Stats().LeasesHeld)
}

// lostReply runs the script, then loses the answer: the caller's context
// ends while the call is on its way back.
type lostReply struct {
	redis.Scripter
	arm    atomic.Bool
	cancel context.CancelFunc
}

func (c *lostReply) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	cmd := c.Scripter.EvalSha(ctx, sha, keys, args...)
	if c.arm.CompareAndSwap(true, false) {
		c.cancel()
		cmd = redis.NewCmd(ctx)
		cmd.SetErr(context.Canceled)
	}
	return cmd
}

// A call whose answer is lost (the caller gave up) may have run: the
// releases it carried, and the lease it may have taken, are released
// again, so no slot stays taken until the lease TTL.
func TestReleasesOfALostCallAreNotLost(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	lr := &lostReply{Scripter: newClient(t, addr)}
	l := newTestLimiter(t, lr, WithPrefix(prefix))
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 1)
	p, err := l.Acquire(ctx, a)
	require.NoError(t, err)
	p.Release() // pending: the next call carries it

	cctx, cancel := context.WithCancel(ctx)
	lr.cancel = cancel
	lr.arm.Store(true)
	_, err = l.Acquire(cctx, a)
	require.ErrorIs(t, err, context.Canceled)

	hs, err := l.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Zero(t, hs.InFlight, "the slot is free")
	p, err = l.Acquire(ctx, withDeadline(a, 0))
	require.NoError(t, err)
	p.Release()
}

// TestAdmissionCostAndAvailable: Acquire charges ezthrottle.Admission.Cost
// (rounded up, 0 meaning 1; an invalid cost fails at once), and Learn's
// Signals.Available lowers the shared bucket, never raises it (issue 16:
// token budgets shared across processes).
func TestAdmissionCostAndAvailable(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	clk := newFakeClock()
	l := newClockedLimiter(t, addr, prefix, clk)
	other := newClockedLimiter(t, addr, prefix, clk) // another process
	ctx := context.Background()
	lim := ezthrottle.Limit{Rate: 100, Burst: 1000} // 100 tokens/s, 1,000 at most
	a := func(cost float64, d time.Duration) ezthrottle.Admission {
		return ezthrottle.Admission{Key: host, Limit: lim, Cost: cost, Deadline: clk.Now().Add(d)}
	}
	p, err := l.Acquire(ctx, a(599.2, 0)) // 600 of the 1,000
	require.NoError(t, err)
	p.Release()
	_, err = other.Acquire(ctx, a(401, 0))
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te, "only 400 left, shared")
	assert.Equal(t, 10*time.Millisecond, te.Wait)
	p, err = other.Acquire(ctx, a(400, 0))
	require.NoError(t, err)
	p.Release()

	for _, bad := range []float64{-1, math.NaN(), math.Inf(1)} {
		_, err = l.Acquire(ctx, a(bad, time.Hour))
		assert.ErrorIs(t, err, ezthrottle.ErrInvalidCost, "%v", bad)
	}
	_, err = l.Acquire(ctx, a(1001, time.Hour))
	assert.ErrorIs(t, err, ezthrottle.ErrCostExceedsBurst)

	// 5 s later the bucket is full again; the API says only 200 remain.
	clk.Advance(5 * time.Second)
	l.Learn(ctx, host, ezthrottle.Signals{Available: 200, HasAvailable: true})
	_, err = other.Acquire(ctx, a(201, 0))
	require.ErrorAs(t, err, &te, "lowered to 200 for every process")
	p, err = other.Acquire(ctx, a(200, 0))
	require.NoError(t, err)
	p.Release()
	// A higher count never raises it.
	l.Learn(ctx, host, ezthrottle.Signals{Available: 1000, HasAvailable: true})
	_, err = l.Acquire(ctx, a(1, 0))
	require.ErrorAs(t, err, &te, "still empty")
}
