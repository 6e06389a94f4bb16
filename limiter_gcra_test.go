package ezthrottle_test

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// notYet fails when ch has delivered.
func notYet(t *testing.T, ch chan acquireResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s: admitted too early (err %v)", what, r.err)
	default:
	}
}

// advanceTo moves clk to at (never backwards).
func advanceTo(clk *fakeClock, at time.Time) {
	if d := at.Sub(clk.Now()); d > 0 {
		clk.Advance(d)
	}
}

// TestMemoryLimiterLateWakeKeepsSchedule: a head-of-queue waiter woken late
// (a busy CPU, a delayed timer) is charged at its slot, so the next
// request's slot does not move, whether that request was already queued
// or arrives after the late one started. Before the schedule was kept as
// due times, a burst-1 bucket lost the lateness: the next slot moved by it.
func TestMemoryLimiterLateWakeKeepsSchedule(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		burst int
		late  time.Duration
	}{
		{2, 1, 100 * time.Millisecond},
		{2, 1, 499 * time.Millisecond},
		{5, 1, 100 * time.Millisecond},
		{10, 1, 100 * time.Millisecond}, // lateness of a whole interval
		{1, 1, 100 * time.Millisecond},
		{20, 1, 100 * time.Millisecond},  // later than B's slot: B starts at once
		{100, 1, 100 * time.Millisecond}, // ten intervals late: likewise
		{2, 3, 100 * time.Millisecond},
		{2, 3, 1200 * time.Millisecond},
	} {
		for _, queued := range []bool{true, false} {
			name := fmt.Sprintf("rate=%v/burst=%d/late=%v/queued=%v", tc.rate, tc.burst, tc.late, queued)
			t.Run(name, func(t *testing.T) {
				clk := newFakeClock()
				m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
				adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: tc.rate, Burst: tc.burst}}
				ctx := context.Background()
				ival := time.Duration(float64(time.Second) / tc.rate)
				t0 := clk.Now()
				for range tc.burst { // empty the bucket at t0
					p, err := m.Acquire(ctx, adm)
					require.NoError(t, err)
					p.Release()
				}
				// Slots: A at t0+ival, B at t0+2*ival.
				chA := acquireAsync(m, ctx, adm)
				waitFor(t, "A on its timer", func() bool { return clk.Timers() == 1 })
				var chB chan acquireResult
				if queued {
					chB = acquireAsync(m, ctx, adm)
					waitFor(t, "B queued", func() bool { return stats(t, m, hostA).Waiting == 2 })
				}
				advanceTo(clk, t0.Add(ival+tc.late)) // A wakes late
				r := <-chA
				require.NoError(t, r.err)
				r.p.Release()
				if !queued {
					chB = acquireAsync(m, ctx, adm)
				}
				slotB := t0.Add(2 * ival)
				if slotB.After(clk.Now()) {
					waitFor(t, "B on its timer", func() bool { return clk.Timers() == 1 })
					advanceTo(clk, slotB.Add(-time.Millisecond))
					notYet(t, chB, "B")
					advanceTo(clk, slotB)
				}
				select {
				case r = <-chB:
				case <-time.After(20 * time.Second):
					t.Fatalf("B not admitted at its slot %v (A was %v late)", 2*ival, tc.late)
				}
				require.NoError(t, r.err)
				r.p.Release()
			})
		}
	}
}

// TestMemoryLimiterStallCatchUpBounded: after a stall far longer than the
// queue's schedule, at most 2 × Burst queued requests start back to back
// (Burst beyond a full bucket, as Limit documents); the rest keep the pace.
func TestMemoryLimiterStallCatchUpBounded(t *testing.T) {
	for _, burst := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("burst=%d", burst), func(t *testing.T) {
			clk := newFakeClock()
			m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
			adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: 10, Burst: burst}}
			ctx := context.Background()
			for range burst {
				p, err := m.Acquire(ctx, adm)
				require.NoError(t, err)
				p.Release()
			}
			const n = 20
			var admitted atomic.Int32
			done := make(chan struct{}, n)
			for i := 0; i < n; i++ {
				go func() {
					p, err := m.Acquire(ctx, adm)
					if assert.NoError(t, err) {
						admitted.Add(1)
						p.Release()
					}
					done <- struct{}{}
				}()
			}
			waitFor(t, "all queued", func() bool { return stats(t, m, hostA).Waiting == n })
			waitFor(t, "the head on its timer", func() bool { return clk.Timers() == 1 })
			clk.Advance(10 * time.Second) // a stall: 100 slots missed
			waitFor(t, "catch-up over", func() bool {
				w := stats(t, m, hostA).Waiting
				return w < n && clk.Timers() == 1 && int(admitted.Load()) == n-w
			})
			assert.Equal(t, int32(2*burst), admitted.Load(), "requests started back to back after the stall")
			// Then the pace: one per interval.
			for i := 1; i <= n-2*burst; i++ {
				clk.Advance(100 * time.Millisecond)
				waitFor(t, "one more", func() bool { return admitted.Load() == int32(2*burst+i) })
				if i < n-2*burst {
					waitFor(t, "next head on its timer", func() bool { return clk.Timers() == 1 })
				}
			}
			for range n {
				<-done
			}
		})
	}
}

// TestMemoryLimiterSlotWaitNoCatchUp: a request that waited for a free
// slot in flight (not for its slot in the schedule) gets no catch-up: the
// next one keeps a full interval after it.
func TestMemoryLimiterSlotWaitNoCatchUp(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: 2, Burst: 1, MaxInFlight: 1}}
	ctx := context.Background()
	p0, err := m.Acquire(ctx, adm)
	require.NoError(t, err)
	// A far deadline makes A's wait for the slot observable: a timer.
	chA := acquireAsync(m, ctx, ezthrottle.Admission{Key: hostA, Limit: adm.Limit, Deadline: clk.Now().Add(time.Hour)})
	waitFor(t, "A on its timer", func() bool { return clk.Timers() == 1 })
	clk.Advance(5 * time.Second) // A's slot came long ago; the cap holds it
	waitFor(t, "A waiting for the slot", func() bool { return clk.Timers() == 1 })
	notYet(t, chA, "A")
	p0.Release()
	r := <-chA
	require.NoError(t, r.err)
	r.p.Release()
	_, err = m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: adm.Limit, Deadline: clk.Now().Add(499 * time.Millisecond)})
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te, "B must wait a full interval after A")
	assert.Equal(t, 500*time.Millisecond, te.Wait)
	chB := acquireAsync(m, ctx, adm)
	waitFor(t, "B on its timer", func() bool { return clk.Timers() == 1 })
	clk.Advance(499 * time.Millisecond)
	notYet(t, chB, "B")
	clk.Advance(time.Millisecond)
	r = <-chB
	require.NoError(t, r.err)
	r.p.Release()
}

// TestMemoryLimiterWeightedCost: a request's Cost is charged cost/Rate of
// the schedule; the predicted wait counts the costs queued ahead; a cost
// the bucket can never hold, or an invalid one, fails at once.
func TestMemoryLimiterWeightedCost(t *testing.T) {
	lim := ezthrottle.Limit{Rate: 10, Burst: 5} // 10 units/s, 5 units back to back
	ctx := context.Background()
	t.Run("charges", func(t *testing.T) {
		for _, tc := range []struct {
			costs []float64     // admitted back to back at t0, in order
			next  float64       // then this cost...
			wait  time.Duration // ...has this predicted wait
		}{
			{costs: []float64{5}, next: 1, wait: 100 * time.Millisecond},
			{costs: []float64{5}, next: 5, wait: 500 * time.Millisecond},
			{costs: []float64{3}, next: 2, wait: 0},
			{costs: []float64{3}, next: 3, wait: 100 * time.Millisecond},
			{costs: []float64{0.5, 0.5, 3}, next: 1, wait: 0},
			{costs: []float64{0.5, 0.5, 3}, next: 1.5, wait: 50 * time.Millisecond},
			{costs: []float64{0.5, 0.5, 4}, next: 1, wait: 100 * time.Millisecond},
			{costs: []float64{0, 0, 0, 0, 0}, next: 0, wait: 100 * time.Millisecond}, // 0 means 1
			{costs: []float64{2, 2}, next: 2.5, wait: 150 * time.Millisecond},
		} {
			t.Run(fmt.Sprint(tc.costs, tc.next), func(t *testing.T) {
				clk := newFakeClock()
				m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
				for _, c := range tc.costs {
					p, err := m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Cost: c, Deadline: clk.Now()})
					require.NoError(t, err, "cost %v fits the bucket", c)
					p.Release()
				}
				adm := ezthrottle.Admission{Key: hostA, Limit: lim, Cost: tc.next, Deadline: clk.Now()}
				p, err := m.Acquire(ctx, adm)
				if tc.wait == 0 {
					require.NoError(t, err)
					p.Release()
					return
				}
				var te *ezthrottle.ThrottleError
				require.ErrorAs(t, err, &te)
				assert.True(t, te.Predicted)
				assert.Equal(t, tc.wait, te.Wait)
				adm.Deadline = clk.Now().Add(tc.wait)
				ch := acquireAsync(m, ctx, adm)
				waitFor(t, "on its timer", func() bool { return clk.Timers() == 1 })
				clk.Advance(tc.wait - time.Millisecond)
				notYet(t, ch, "weighted request")
				clk.Advance(time.Millisecond)
				r := <-ch
				require.NoError(t, r.err)
				r.p.Release()
			})
		}
	})
	t.Run("queued costs count", func(t *testing.T) {
		clk := newFakeClock()
		m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
		p, err := m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Cost: 5})
		require.NoError(t, err)
		p.Release()
		// A waiter of cost 4 is due at +400ms; a request of cost 3 behind it
		// at +400ms + 300ms = +700ms.
		ch := acquireAsync(m, ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Cost: 4})
		waitFor(t, "queued", func() bool { return stats(t, m, hostA).Waiting == 1 })
		_, err = m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Cost: 3, Deadline: clk.Now().Add(699 * time.Millisecond)})
		var te *ezthrottle.ThrottleError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, 700*time.Millisecond, te.Wait)
		waitFor(t, "on its timer", func() bool { return clk.Timers() == 1 })
		clk.Advance(400 * time.Millisecond)
		r := <-ch
		require.NoError(t, r.err)
		r.p.Release()
	})
	t.Run("never admissible", func(t *testing.T) {
		clk := newFakeClock()
		m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
		for _, tc := range []struct {
			cost    float64
			limit   ezthrottle.Limit
			is, not error
		}{
			{5.01, lim, ezthrottle.ErrCostExceedsBurst, ezthrottle.ErrInvalidCost},
			{2, ezthrottle.Limit{Rate: 1}, ezthrottle.ErrCostExceedsBurst, ezthrottle.ErrInvalidCost}, // burst 0 means 1
			{1e300, lim, ezthrottle.ErrCostExceedsBurst, ezthrottle.ErrInvalidCost},
			{-1, lim, ezthrottle.ErrInvalidCost, ezthrottle.ErrCostExceedsBurst},
			{math.NaN(), lim, ezthrottle.ErrInvalidCost, ezthrottle.ErrCostExceedsBurst},
			{math.Inf(1), lim, ezthrottle.ErrInvalidCost, ezthrottle.ErrCostExceedsBurst},
			{math.Inf(-1), lim, ezthrottle.ErrInvalidCost, ezthrottle.ErrCostExceedsBurst},
		} {
			_, err := m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: tc.limit, Cost: tc.cost})
			var ce *ezthrottle.CostError
			require.ErrorAs(t, err, &ce, "cost %v", tc.cost)
			assert.ErrorIs(t, err, tc.is, "cost %v", tc.cost)
			assert.NotErrorIs(t, err, tc.not, "cost %v", tc.cost)
			assert.NotErrorIs(t, err, ezthrottle.ErrThrottled, "cost %v", tc.cost)
			assert.Equal(t, hostA, ce.Host)
			assert.Contains(t, err.Error(), hostA)
			assert.Equal(t, 0, clk.Timers(), "no wait started")
		}
		// Nothing was charged: a request of cost 1 starts at once.
		p, err := m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: lim, Deadline: clk.Now()})
		require.NoError(t, err)
		p.Release()
	})
}

// TestMemoryLimiterLearnedRateRescalesQueue: a pace learned while a
// request waits applies to it at once: what it still has to wait is
// rescaled to the new rate.
func TestMemoryLimiterLearnedRateRescalesQueue(t *testing.T) {
	for _, tc := range []struct {
		from, to float64
		left     time.Duration // wait left after the change
	}{
		{1, 10, 100 * time.Millisecond},
		{10, 1, time.Second},
		{2, 4, 250 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("%v->%v", tc.from, tc.to), func(t *testing.T) {
			clk := newFakeClock()
			m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
			adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: tc.from, Burst: 1}}
			ctx := context.Background()
			p, err := m.Acquire(ctx, adm)
			require.NoError(t, err)
			p.Release()
			ch := acquireAsync(m, ctx, adm)
			waitFor(t, "on its timer", func() bool { return clk.Timers() == 1 })
			m.Learn(ctx, hostA, ezthrottle.Signals{RPS: tc.to, HasRPS: true})
			waitFor(t, "re-armed", func() bool { return clk.Timers() == 1 && stats(t, m, hostA).Rate == tc.to })
			// The waiter re-arms its timer at an absolute instant: whether
			// it has done so yet or not, the advances below are exact.
			clk.Advance(tc.left - time.Millisecond)
			notYet(t, ch, "waiter")
			clk.Advance(time.Millisecond)
			r := <-ch
			require.NoError(t, r.err)
			r.p.Release()
		})
	}
}

// TestMemoryLimiterUncontendedAllocs: admitting a request that does not
// wait allocates nothing.
func TestMemoryLimiterUncontendedAllocs(t *testing.T) {
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{})
	adm := ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1 << 20}}
	ctx := context.Background()
	p, err := m.Acquire(ctx, adm) // create the host's state
	require.NoError(t, err)
	p.Release()
	allocs := testing.AllocsPerRun(1000, func() {
		p, err := m.Acquire(ctx, adm)
		if err != nil {
			panic(err)
		}
		p.Release()
	})
	assert.Zero(t, allocs)
}

// TestMemoryLimiterCostAboveShrunkBurst: a queued request whose cost no
// longer fits the host's bucket (its configured burst shrank meanwhile)
// fails with a *CostError as soon as the new limit is seen, instead of
// waiting forever, and leaves the queue to the requests behind it.
func TestMemoryLimiterCostAboveShrunkBurst(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})
	ctx := context.Background()
	big := ezthrottle.Limit{Rate: 1, Burst: 5}
	p, err := m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: big, Cost: 5})
	require.NoError(t, err)
	p.Release()
	ch := acquireAsync(m, ctx, ezthrottle.Admission{Key: hostA, Limit: big, Cost: 4})
	waitFor(t, "queued", func() bool { return clk.Timers() == 1 })
	small := ezthrottle.Limit{Rate: 1, Burst: 2}
	ch2 := acquireAsync(m, ctx, ezthrottle.Admission{Key: hostA, Limit: small})
	r := <-ch // the new limit applies to the queued waiter at once
	var ce *ezthrottle.CostError
	require.ErrorAs(t, r.err, &ce)
	assert.ErrorIs(t, r.err, ezthrottle.ErrCostExceedsBurst)
	assert.Equal(t, 2.0, ce.Burst)
	waitFor(t, "second queued", func() bool { return stats(t, m, hostA).Waiting == 1 && clk.Timers() == 1 })
	clk.Advance(4 * time.Second) // its slot: 5 s of debt less a burst of 2, plus 1
	r = <-ch2
	require.NoError(t, r.err, "the request behind it goes")
	r.p.Release()
}
