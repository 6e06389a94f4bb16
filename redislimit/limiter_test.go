package redislimit

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

const host = "https://api.example.com:443"

func adm(rate float64, burst, slots int) ezthrottle.Admission {
	return ezthrottle.Admission{Key: host, Limit: ezthrottle.Limit{Rate: rate, Burst: burst, MaxInFlight: slots}}
}

func withDeadline(a ezthrottle.Admission, d time.Duration) ezthrottle.Admission {
	a.Deadline = time.Now().Add(d)
	return a
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	_, err := New(nil)
	require.Error(t, err)
	tests := []struct {
		name string
		opt  Option
		want string
	}{
		{"lease ttl", WithLeaseTTL(time.Millisecond), "WithLeaseTTL"},
		{"learned ttl", WithLearnedTTL(0), "WithLearnedTTL"},
		{"poll", WithPollInterval(0), "WithPollInterval"},
		{"probe", WithProbeInterval(-time.Second), "WithProbeInterval"},
		{"timeout", WithTimeout(-1), "WithTimeout"},
		{"clock", WithClock(nil), "WithClock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(rdb, tt.opt)
			require.Error(t, err)
			assert.Nil(t, l)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	l, err := New(rdb, WithPrefix("x:"), WithLeaseTTL(time.Second), WithLearnedTTL(time.Minute),
		WithPollInterval(time.Millisecond), WithProbeInterval(time.Second), WithTimeout(0),
		WithFailOpen(nil), WithLogger(nil), nil)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close is idempotent")
	_, err = l.Acquire(context.Background(), adm(1, 1, 1))
	require.ErrorIs(t, err, ErrClosed)
}

func TestIntervalMicros(t *testing.T) {
	tests := []struct {
		rate float64
		want int64
	}{
		{math.Inf(1), 0},
		{20, 50_000},
		{2, 500_000},
		{3, 333_334}, // rounded up: never faster than the pace
		{0.5, 2_000_000},
		{1e9, 1},
		{1e-12, maxIntervalMicros},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, intervalMicros(tt.rate), "rate %v", tt.rate)
	}
}

func TestParseDecision(t *testing.T) {
	d, err := parseDecision([]int64{0, reasonRate, 1500, 50_000, 2}, 1)
	require.NoError(t, err)
	assert.Equal(t, decision{wait: 1500 * time.Microsecond, reason: reasonRate, interval: 50 * time.Millisecond, leased: true}, d)
	d, err = parseDecision([]int64{2, 0, 0, 0, 2, 0, 700}, 3)
	require.NoError(t, err)
	assert.Equal(t, 2, d.granted)
	assert.True(t, d.leased)
	assert.Equal(t, []time.Duration{0, 700 * time.Microsecond}, d.waits)
	for _, bad := range []struct {
		v []int64
		n int
	}{
		{nil, 1},
		{[]int64{1, 0, 0}, 1},
		{[]int64{2, 0, 0, 0, 0, 0, 0}, 1}, // more granted than asked
		{[]int64{1, 0, 0, 0, 0}, 1},       // a wait missing
		{[]int64{0, 9, 0, 0, 0}, 1},       // unknown reason
		{[]int64{0, 1, 0, -1, 0}, 1},      // negative interval
		{[]int64{-1, 0, 0, 0, 0}, 1},      // negative count
		{[]int64{1, 0, 0, 0, 0, 5, 6}, 2}, // waits do not match the count
	} {
		_, err := parseDecision(bad.v, bad.n)
		assert.Error(t, err, "%v", bad.v)
	}
}

func TestAcquireValidatesTheLimit(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	l := newTestLimiter(t, rdb, WithPrefix(testPrefix(t)))
	_, err := l.Acquire(context.Background(), ezthrottle.Admission{Key: host})
	require.Error(t, err, "a zero Limit has no rate")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = l.Acquire(ctx, adm(1, 1, 0))
	require.ErrorIs(t, err, context.Canceled)
}

func TestBurstThenPacePredictsTheWait(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	l := newTestLimiter(t, rdb, WithPrefix(testPrefix(t)))
	ctx := context.Background()
	a := adm(1, 3, 0) // one per second, bursts of 3
	for i := 0; i < 3; i++ {
		p, err := l.Acquire(ctx, withDeadline(a, 0))
		require.NoError(t, err, "burst request %d starts at once", i)
		assert.IsType(t, noPermit{}, p, "no cap, no lease")
		p.Release()
	}
	_, err := l.Acquire(ctx, withDeadline(a, 100*time.Millisecond))
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	require.ErrorIs(t, err, ezthrottle.ErrThrottled)
	assert.True(t, te.Predicted, "the wait was predicted, not waited")
	assert.Equal(t, host, te.Host)
	assert.Greater(t, te.Wait, 100*time.Millisecond)
	assert.LessOrEqual(t, te.Wait, time.Second)
	assert.Equal(t, uint64(4), l.Stats().Decisions)
}

func TestUnlimitedNeverWaits(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	l := newTestLimiter(t, rdb, WithPrefix(testPrefix(t)))
	a := ezthrottle.Admission{Key: host, Limit: ezthrottle.Unlimited(), Deadline: time.Now()}
	for i := 0; i < 20; i++ {
		p, err := l.Acquire(context.Background(), a)
		require.NoError(t, err)
		p.Release()
	}
	hs, err := l.Inspect(context.Background(), host)
	require.NoError(t, err)
	assert.Zero(t, hs.InFlight)
}

func TestLimitersShareTheRate(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	a := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix))
	b := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix))
	other := newTestLimiter(t, newClient(t, addr), WithPrefix(testPrefix(t)))
	ctx := context.Background()
	lim := adm(0.5, 1, 0)

	p, err := a.Acquire(ctx, withDeadline(lim, 0))
	require.NoError(t, err)
	p.Release()
	_, err = b.Acquire(ctx, withDeadline(lim, 100*time.Millisecond))
	require.ErrorIs(t, err, ezthrottle.ErrThrottled, "b sees a's request")
	p, err = other.Acquire(ctx, withDeadline(lim, 0))
	require.NoError(t, err, "another prefix is another namespace")
	p.Release()
}

func TestCapInFlightAndRelease(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	l := newTestLimiter(t, rdb, WithPrefix(testPrefix(t)))
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 2)
	p1, err := l.Acquire(ctx, a)
	require.NoError(t, err)
	p2, err := l.Acquire(ctx, a)
	require.NoError(t, err)
	hs, err := l.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Equal(t, 2, hs.InFlight)
	assert.Equal(t, 2, l.Stats().LeasesHeld)

	_, err = l.Acquire(ctx, withDeadline(a, 50*time.Millisecond))
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.False(t, te.Predicted, "a wait for a slot cannot be predicted: it waited until the deadline")

	got := make(chan error, 1)
	go func() {
		p, err := l.Acquire(ctx, a)
		if err == nil {
			p.Release()
		}
		got <- err
	}()
	p1.Release()
	p1.Release() // idempotent
	require.NoError(t, <-got)
	p2.Release()
	hs, err = l.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Zero(t, hs.InFlight)
	assert.Zero(t, l.Stats().LeasesHeld)
}

func TestKilledHolderLeasesExpire(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	const ttl = time.Second
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 2)

	// Pod A takes both slots, then "dies": its Redis connection goes away,
	// nothing is released, nothing is renewed.
	rdbA := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	podA, err := New(rdbA, WithPrefix(prefix), WithLeaseTTL(ttl))
	require.NoError(t, err)
	_, err = podA.Acquire(ctx, a)
	require.NoError(t, err)
	_, err = podA.Acquire(ctx, a)
	require.NoError(t, err)
	require.NoError(t, rdbA.Close())
	_ = podA.Close() // stops the renewer (the release fails: the client is gone)

	podB := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix), WithLeaseTTL(ttl))
	hs, err := podB.Inspect(ctx, host)
	require.NoError(t, err)
	require.Equal(t, 2, hs.InFlight, "the dead pod's leases are still there")
	_, err = podB.Acquire(ctx, withDeadline(a, 0))
	require.ErrorIs(t, err, ezthrottle.ErrThrottled, "the cap is full")

	// They free themselves after the lease TTL.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p1, err := podB.Acquire(wctx, a)
	require.NoError(t, err)
	p2, err := podB.Acquire(wctx, a)
	require.NoError(t, err, "both dead leases expired")
	p1.Release()
	p2.Release()
	hs, err = podB.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Zero(t, hs.InFlight)
}

func TestLeaseRenewedWhileHeld(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	const ttl = 300 * time.Millisecond
	ctx := context.Background()
	l := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix), WithLeaseTTL(ttl))
	p, err := l.Acquire(ctx, adm(math.Inf(1), 1, 1))
	require.NoError(t, err)
	time.Sleep(4 * ttl) // a long request: several renewals
	hs, err := l.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Equal(t, 1, hs.InFlight, "renewed, not expired")
	assert.Zero(t, l.Stats().LeasesLost)
	p.Release()
	hs, err = l.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Zero(t, hs.InFlight)
}

func TestLostLeaseIsCounted(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	rdb := newClient(t, addr)
	clk := newFakeClock()
	l := newTestLimiter(t, rdb, WithPrefix(prefix), WithClock(clk), WithLeaseTTL(30*time.Second))
	ctx := context.Background()
	p, err := l.Acquire(ctx, adm(math.Inf(1), 1, 1))
	require.NoError(t, err)
	// Someone (an operator, a Redis failover) drops the lease set.
	require.NoError(t, rdb.Del(ctx, l.keys(host).leases).Err())
	waitFor(t, "the renewer to wait for its tick", func() bool { return clk.pending() == 1 })
	clk.Advance(10 * time.Second) // the renewer's tick
	require.Eventually(t, func() bool { return l.Stats().LeasesLost == 1 }, 5*time.Second, time.Millisecond)
	assert.Zero(t, l.Stats().LeasesHeld, "a lost lease is no longer renewed")
	p.Release()
}

func TestCloseReleasesLeases(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	l, err := New(newClient(t, addr), WithPrefix(prefix))
	require.NoError(t, err)
	ctx := context.Background()
	p, err := l.Acquire(ctx, adm(math.Inf(1), 1, 3))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	hs, err := l.Inspect(ctx, host)
	require.NoError(t, err)
	assert.Zero(t, hs.InFlight)
	p.Release() // after Close: harmless
	_, err = l.Acquire(ctx, adm(1, 1, 1))
	require.ErrorIs(t, err, ErrClosed)
}

func TestLearnedLimitsAreShared(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	rdb := newClient(t, addr)
	a := newTestLimiter(t, rdb, WithPrefix(prefix), WithLearnedTTL(time.Minute))
	b := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix))
	ctx := context.Background()
	lim := adm(100, 1, 5)

	a.Learn(ctx, host, ezthrottle.Signals{}) // nothing to learn: no-op
	a.Learn(ctx, host, ezthrottle.Signals{RPS: 0.5, HasRPS: true, MaxConcurrent: 1, HasMaxConcurrent: true})
	hs, err := b.Inspect(ctx, host)
	require.NoError(t, err)
	assert.InDelta(t, 0.5, hs.LearnedRate, 1e-9)
	assert.Equal(t, 1, hs.LearnedMaxInFlight)
	pttl, err := rdb.PTTL(ctx, a.keys(host).learned).Result()
	require.NoError(t, err)
	assert.Greater(t, pttl, time.Duration(0))
	assert.LessOrEqual(t, pttl, time.Minute, "learned limits expire")

	p, err := b.Acquire(ctx, withDeadline(lim, 0))
	require.NoError(t, err)
	_, err = b.Acquire(ctx, withDeadline(lim, 50*time.Millisecond))
	require.ErrorIs(t, err, ezthrottle.ErrThrottled, "learned cap of 1 holds across processes")
	p.Release()
	releasedEverywhere(t, a, host) // b sends its release within flushDelay
	_, err = a.Acquire(ctx, withDeadline(lim, 100*time.Millisecond))
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Predicted)
	assert.Greater(t, te.Wait, time.Second, "the learned pace (one per 2 s) holds across processes")

	// A pause learned by one process stops the others.
	a.Learn(ctx, "https://paused.example:443", ezthrottle.Signals{PauseUntil: time.Now().Add(2 * time.Second)})
	pa := ezthrottle.Admission{Key: "https://paused.example:443", Limit: ezthrottle.Limit{Rate: 100}, Deadline: time.Now().Add(100 * time.Millisecond)}
	_, err = b.Acquire(ctx, pa)
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Predicted)
	assert.Greater(t, te.Wait, time.Second)
	assert.LessOrEqual(t, te.Wait, 2*time.Second+50*time.Millisecond)
	hs, err = b.Inspect(ctx, "https://paused.example:443")
	require.NoError(t, err)
	assert.True(t, hs.PausedUntil.After(hs.ServerTime))

	// An earlier pause does not shorten it.
	a.Learn(ctx, "https://paused.example:443", ezthrottle.Signals{PauseUntil: time.Now().Add(10 * time.Millisecond)})
	hs2, err := b.Inspect(ctx, "https://paused.example:443")
	require.NoError(t, err)
	assert.Equal(t, hs.PausedUntil, hs2.PausedUntil)
}

func TestPauseThenOneAtATime(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	l := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix))
	ctx := context.Background()
	lim := adm(2, 5, 0) // bursts of 5, but not right after a pause
	l.Learn(ctx, host, ezthrottle.Signals{PauseUntil: time.Now().Add(100 * time.Millisecond)})
	p, err := l.Acquire(ctx, lim) // waits out the pause
	require.NoError(t, err)
	p.Release()
	_, err = l.Acquire(ctx, withDeadline(lim, 0))
	require.ErrorIs(t, err, ezthrottle.ErrThrottled, "after a pause requests resume at the pace, not in a burst")
}

// gateOf returns the local queue of host (nil when idle).
func gateOf(l *Limiter, key string) (g *gate, n int, nextAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g = l.gates[key]; g != nil {
		n, nextAt = g.n, g.nextAt
	}
	return
}

// releasedEverywhere waits until no lease of host is held in Redis, as
// seen by l: a release reaches Redis with its host's next admission call or
// within flushDelay in the background.
func releasedEverywhere(t *testing.T, l *Limiter, host string) {
	t.Helper()
	waitFor(t, "the releases to reach Redis", func() bool {
		hs, err := l.Inspect(context.Background(), host)
		return err == nil && hs.InFlight == 0
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLocalWaitersAreServedInArrivalOrder(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	l := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix))
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 1)
	p0, err := l.Acquire(ctx, a)
	require.NoError(t, err)

	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	cctx, cancel := context.WithCancel(ctx)
	var cancelledErr error
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ctx
			if i == 2 {
				c = cctx
			}
			p, err := l.Acquire(c, a)
			if i == 2 {
				cancelledErr = err
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			p.Release()
		}()
		// The first becomes the head; each next one queues behind.
		waitFor(t, "the waiter to queue", func() bool { g, n, _ := gateOf(l, host); return g != nil && n == i })
	}
	cancel() // waiter 2 gives up: it leaves the queue, the others keep their place
	waitFor(t, "the cancelled waiter to leave", func() bool { _, n, _ := gateOf(l, host); return n == 4 })
	p0.Release()
	wg.Wait()
	assert.ErrorIs(t, cancelledErr, context.Canceled)
	assert.Equal(t, []int{0, 1, 3, 4, 5}, order)
	g, _, _ := gateOf(l, host)
	assert.Nil(t, g, "the gate is removed when idle")
}

func TestQueuedWaiterPredictsItsWait(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	l := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix))
	ctx := context.Background()
	a := adm(1, 1, 0)
	p, err := l.Acquire(ctx, a)
	require.NoError(t, err)
	p.Release()

	hctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := l.Acquire(hctx, a); done <- err }() // the head: waits ~1 s
	waitFor(t, "the head to learn its wait", func() bool { _, _, at := gateOf(l, host); return !at.IsZero() })

	_, err = l.Acquire(ctx, withDeadline(a, 100*time.Millisecond))
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Predicted, "rejected without queueing")
	assert.Greater(t, te.Wait, time.Second, "behind the head: the head's wait plus one spacing")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

func TestFailOpenOutageIsLoggedOnceAndRecovers(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	f := &flaky{Scripter: rdb}
	clk := newFakeClock()
	logs := &logBuffer{}
	l := newTestLimiter(t, f, WithPrefix(testPrefix(t)), WithClock(clk), WithProbeInterval(time.Second), WithLogger(logs.logger()))
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 0)

	p, err := l.Acquire(ctx, a)
	require.NoError(t, err)
	p.Release()
	require.Equal(t, Stats{Available: true, Decisions: 1, RoundTrips: 1}, l.Stats())

	f.down.Store(true)
	for i := 0; i < 4; i++ {
		p, err := l.Acquire(ctx, a)
		require.NoError(t, err, "no request fails because Redis is down")
		p.Release()
	}
	l.Learn(ctx, host, ezthrottle.Signals{RPS: 1, HasRPS: true})
	s := l.Stats()
	assert.False(t, s.Available)
	assert.Equal(t, clk.Now(), s.OutageSince)
	assert.Equal(t, uint64(1), s.Outages)
	assert.Equal(t, uint64(1), s.Errors, "during the backoff Redis is not tried again")
	assert.Equal(t, uint64(4), s.FallbackAcquires)
	assert.Equal(t, int64(1), f.downCalls.Load())
	fs, ok := l.fallback.(*ezthrottle.MemoryLimiter).Stats(host)
	require.True(t, ok)
	assert.Equal(t, 1.0, fs.Rate, "the fallback learned what Redis could not store")

	clk.Advance(time.Second) // probe: still down
	p, err = l.Acquire(ctx, a)
	require.NoError(t, err)
	p.Release()
	s = l.Stats()
	assert.Equal(t, uint64(2), s.Errors)
	assert.Equal(t, uint64(1), s.Outages, "the same outage")
	assert.Equal(t, 1, strings.Count(logs.String(), "Redis unavailable"), "logged once per outage")

	f.down.Store(false)
	clk.Advance(time.Second)
	p, err = l.Acquire(ctx, a)
	require.NoError(t, err)
	p.Release()
	s = l.Stats()
	assert.True(t, s.Available)
	assert.Equal(t, uint64(2), s.Decisions)
	assert.Equal(t, 1, strings.Count(logs.String(), "Redis available again"))

	f.down.Store(true) // a second outage is logged again
	p, err = l.Acquire(ctx, a)
	require.NoError(t, err)
	p.Release()
	assert.Equal(t, uint64(2), l.Stats().Outages)
	assert.Equal(t, 2, strings.Count(logs.String(), "Redis unavailable"))
}

func TestOnlyOneProbeAtATime(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	clk := newFakeClock()
	l, err := New(rdb, WithClock(clk))
	require.NoError(t, err)
	defer l.Close()
	l.failed(errRedisDown)
	_, ok, last := l.useRedis()
	assert.False(t, ok)
	assert.Equal(t, errRedisDown, last)
	clk.Advance(DefaultProbeInterval)
	probe, ok, _ := l.useRedis()
	assert.True(t, probe && ok)
	_, ok, _ = l.useRedis()
	assert.False(t, ok, "a second caller keeps the failure mode while the probe runs")
	l.probeAborted(true)
	probe, ok, _ = l.useRedis()
	assert.True(t, probe && ok, "an aborted probe (caller gone) lets the next one probe")
	l.succeeded()
	probe, ok, _ = l.useRedis()
	assert.True(t, ok && !probe)
}

func TestFailClosed(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	f := &flaky{Scripter: rdb}
	clk := newFakeClock()
	l := newTestLimiter(t, f, WithPrefix(testPrefix(t)), WithClock(clk), WithFailClosed())
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 0)
	f.down.Store(true)
	for i := 0; i < 2; i++ {
		_, err := l.Acquire(ctx, a)
		var ue *UnavailableError
		require.ErrorAs(t, err, &ue)
		require.ErrorIs(t, err, ErrUnavailable)
		assert.ErrorIs(t, err, errRedisDown)
		assert.Equal(t, host, ue.Host)
		assert.Contains(t, err.Error(), host)
	}
	assert.Equal(t, uint64(2), l.Stats().Rejected)
	assert.Equal(t, uint64(1), l.Stats().Errors)
	f.down.Store(false)
	clk.Advance(DefaultProbeInterval)
	p, err := l.Acquire(ctx, a)
	require.NoError(t, err, "recovers by itself")
	p.Release()
	assert.True(t, l.Stats().Available)
}

func TestRedisErrorWhileWaitingForTurnFallsBack(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	f := &flaky{Scripter: rdb}
	l := newTestLimiter(t, f, WithPrefix(testPrefix(t)))
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 1)
	p0, err := l.Acquire(ctx, a)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		p, err := l.Acquire(ctx, a) // polls for a slot
		if err == nil {
			p.Release()
		}
		done <- err
	}()
	waitFor(t, "the waiter to poll", func() bool { _, _, at := gateOf(l, host); return !at.IsZero() })
	f.down.Store(true)
	require.NoError(t, <-done, "the waiter moves to the fallback")
	assert.Equal(t, uint64(1), l.Stats().FallbackAcquires)
	p0.Release() // Redis down: the lease is left to expire
	assert.Zero(t, l.Stats().LeasesHeld)
}

func TestInspectError(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	f := &flaky{Scripter: rdb}
	f.down.Store(true)
	l := newTestLimiter(t, f)
	_, err := l.Inspect(context.Background(), host)
	require.Error(t, err)
	assert.True(t, errors.Is(err, errRedisDown))
}

func TestShortLeaseTTLDoesNotExpireOthersLeases(t *testing.T) {
	addr, prefix := redisAddr(t), testPrefix(t)
	rdb := newClient(t, addr)
	long := newTestLimiter(t, rdb, WithPrefix(prefix), WithLeaseTTL(time.Minute))
	short := newTestLimiter(t, newClient(t, addr), WithPrefix(prefix), WithLeaseTTL(100*time.Millisecond))
	ctx := context.Background()
	a := adm(math.Inf(1), 1, 5)
	p, err := long.Acquire(ctx, a)
	require.NoError(t, err)
	defer p.Release()
	q, err := short.Acquire(ctx, a)
	require.NoError(t, err)
	q.Release()
	pttl, err := rdb.PTTL(ctx, long.keys(host).leases).Result()
	require.NoError(t, err)
	assert.Greater(t, pttl, 50*time.Second, "the lease set lives as long as its longest lease")
}
