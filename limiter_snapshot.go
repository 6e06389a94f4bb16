package ezthrottle

import (
	"math"
	"runtime"
)

// The MemoryLimiter's read side for the live view. It is kept apart from
// the scheduling code and reads as little of hostState as it can: the limit
// in force (effective), the counters in flight and waiting (atomics), the
// pause and the bucket's level.

// limiterHost is one host's state as the live view reads it.
type limiterHost struct {
	key    string
	stats  HostStats
	tokens float64 // requests that may start now (bucket level); NaN when unknown
	locked bool    // false: the host was busy, only InFlight and Waiting are known
}

// rangeHosts calls fn with the state of every host the limiter tracks. It
// never waits for a host's lock: a host whose lock is held (a request is
// being admitted) is retried a few times, then reported with its lock-free
// counters only. The shard locks are read locks, which the request path
// takes only for a host it has not resolved yet.
func (m *MemoryLimiter) rangeHosts(fn func(limiterHost)) {
	var keys []string
	var states []*hostState
	for i := range m.shards {
		s := &m.shards[i]
		keys, states = keys[:0], states[:0]
		s.mu.RLock()
		for k, h := range s.hosts {
			keys = append(keys, k)
			states = append(states, h)
		}
		s.mu.RUnlock()
		for j, h := range states {
			fn(m.readHost(keys[j], h))
		}
	}
}

// readHost reads one host's state without waiting for its lock.
func (m *MemoryLimiter) readHost(key string, h *hostState) limiterHost {
	lh := limiterHost{key: key, tokens: math.NaN()}
	lh.stats.InFlight = int(h.inflight.Load())
	lh.stats.Waiting = int(h.nwait.Load())
	for try := 0; try < 4; try++ {
		if h.mu.TryLock() {
			now := m.nanos()
			rate, burst, slots := h.effective()
			lh.stats.Rate, lh.stats.Burst, lh.stats.MaxInFlight = rate, int(burst), slots
			lh.stats.InFlight = int(h.inflight.Load())
			lh.stats.Waiting = int(h.nwait.Load())
			if h.pausedUntil != 0 {
				lh.stats.PausedUntil = m.timeOf(h.pausedUntil)
			}
			lh.stats.Learned = h.learnedRate > 0 || h.learnedSlots > 0
			lh.tokens = h.level(now, rate, burst)
			h.mu.Unlock()
			lh.locked = true
			return lh
		}
		runtime.Gosched()
	}
	return lh
}

// level is the bucket's level at now without changing it (h.mu held): the
// cost units that could start at once on the schedule (GCRA: burst less the
// schedule's debt beyond now).
func (h *hostState) level(now int64, rate, burst float64) float64 {
	if math.IsInf(rate, 1) || h.ival == 0 || h.tat <= now {
		return burst
	}
	return math.Max(0, burst-float64(h.tat-now)/h.ival)
}
