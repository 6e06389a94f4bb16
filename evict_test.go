package ezthrottle_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// TestMemoryLimiterEvictsIdleHostsWhateverTheTraffic: the state of hosts
// idle for IdleTimeout is evicted at most IdleTimeout/2 later, whichever
// hosts the limiter is called for: no new host is needed (before, eviction
// ran only when a new host landed in the same shard). Hosts in use (a
// request in flight, a pause, used recently) are kept.
func TestMemoryLimiterEvictsIdleHostsWhateverTheTraffic(t *testing.T) {
	const idle = time.Minute
	lim := ezthrottle.Limit{Rate: 10, Burst: 1}
	for _, tc := range []struct {
		name string
		// call is the traffic: one call to an existing host at the
		// current fake time.
		call func(t *testing.T, m *ezthrottle.MemoryLimiter)
		// every is the fake time between calls; 0: one call at the end.
		every time.Duration
	}{
		{"acquire every second", acquireKeep, time.Second},
		{"acquire every 20 s", acquireKeep, 20 * time.Second},
		{"one acquire after a long silence", acquireKeep, 0},
		{"learn only", func(t *testing.T, m *ezthrottle.MemoryLimiter) {
			m.Learn(context.Background(), "https://keep:443", ezthrottle.Signals{RPS: 10, HasRPS: true})
		}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk, IdleTimeout: idle})
			ctx := context.Background()
			t0 := clk.Now()
			const n = 1000
			for i := range n {
				p, err := m.Acquire(ctx, ezthrottle.Admission{Key: "https://h" + itoa(i) + ":443", Limit: lim})
				require.NoError(t, err)
				p.Release()
			}
			held, err := m.Acquire(ctx, ezthrottle.Admission{Key: "https://held:443", Limit: lim})
			require.NoError(t, err)
			defer held.Release()
			m.Learn(ctx, "https://paused:443", ezthrottle.Signals{PauseUntil: t0.Add(10 * time.Minute)})
			acquireKeep(t, m)

			// The traffic, up to the bound: timeout + IdleTimeout/2.
			end := t0.Add(idle + idle/2)
			recentAt := t0.Add(45 * time.Second)
			recentDone := false
			touchRecent := func() {
				if !recentDone && !clk.Now().Before(recentAt) {
					p, err := m.Acquire(ctx, ezthrottle.Admission{Key: "https://recent:443", Limit: lim})
					require.NoError(t, err)
					p.Release()
					recentDone = true
				}
			}
			if tc.every > 0 {
				for clk.Now().Before(end) {
					clk.Advance(min(tc.every, end.Sub(clk.Now())))
					touchRecent()
					if clk.Now().Before(t0.Add(idle)) {
						assert.Equal(t, n+3, m.Len()-boolInt(recentDone), "nothing evicted before the timeout")
					}
					tc.call(t, m)
				}
			} else {
				advanceTo(clk, recentAt)
				touchRecent()
				advanceTo(clk, end)
				tc.call(t, m)
			}
			for _, key := range []string{"https://keep:443", "https://held:443", "https://paused:443", "https://recent:443"} {
				_, ok := m.Stats(key)
				assert.True(t, ok, "%s kept", key)
			}
			assert.Equal(t, 4, m.Len(), "every idle host evicted by timeout + IdleTimeout/2")
		})
	}
}

func acquireKeep(t *testing.T, m *ezthrottle.MemoryLimiter) {
	t.Helper()
	p, err := m.Acquire(context.Background(), ezthrottle.Admission{Key: "https://keep:443", Limit: ezthrottle.Limit{Rate: math.Inf(1)}})
	require.NoError(t, err)
	p.Release()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestMemoryLimiterKeepsScheduledHost: a host whose schedule still runs
// (its theoretical arrival time is ahead, e.g. after a weighted request)
// is not evicted, so a host cannot shed its debt by being forgotten.
func TestMemoryLimiterKeepsScheduledHost(t *testing.T) {
	clk := newFakeClock()
	m := ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk, IdleTimeout: time.Minute})
	ctx := context.Background()
	// 1 unit per minute, a cost of 5: the schedule runs 5 minutes ahead.
	p, err := m.Acquire(ctx, ezthrottle.Admission{Key: hostA, Limit: ezthrottle.Limit{Rate: 1.0 / 60, Burst: 5}, Cost: 5})
	require.NoError(t, err)
	p.Release()
	for range 4 * 60 {
		clk.Advance(time.Second)
		acquireKeep(t, m)
	}
	_, ok := m.Stats(hostA)
	assert.True(t, ok, "kept while its schedule runs")
	for range 2 * 60 {
		clk.Advance(time.Second)
		acquireKeep(t, m)
	}
	_, ok = m.Stats(hostA)
	assert.False(t, ok, "evicted once its schedule is done and it is idle")
}
