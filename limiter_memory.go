package ezthrottle

import (
	"context"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is how long the MemoryLimiter keeps the state of a host
// that has nothing in flight, nobody waiting and no pause running; it is
// evicted at most half of it later (see MemoryLimiter).
const DefaultIdleTimeout = 5 * time.Minute

const limiterShards = 64

// MemoryLimiterConfig configures a MemoryLimiter. The zero value is usable.
type MemoryLimiterConfig struct {
	// Clock is the time source (default: the system clock).
	Clock Clock
	// IdleTimeout is how long an idle host's state is kept (default
	// DefaultIdleTimeout). Limits learned from that host's headers are
	// forgotten with it.
	IdleTimeout time.Duration
}

// MemoryLimiter is the default, in-process Limiter: per host a token bucket
// kept as a schedule (GCRA; see Limit), a cap on requests in flight, a
// pause and a FIFO queue of waiters.
//
// The host table is sharded (no global lock on the hot path). The state of
// a host idle for IdleTimeout (nothing in flight, nobody waiting, no pause or
// schedule running) is evicted, and the table's memory released, by the
// limiter's own calls: each Acquire or Learn that finds a sweep step due
// sweeps one shard, so that the whole table is swept every IdleTimeout/2,
// whichever hosts are called. When no call comes, a timer does the same
// (time.AfterFunc, or the Clock's AfterFunc; see AfterFuncClock): it is
// armed only while the limiter holds hosts, fires every IdleTimeout/2 and
// runs no goroutine in between, so a limiter that is no longer used is
// garbage once its hosts are evicted. An idle host is therefore evicted at
// most IdleTimeout/2 after its timeout, whatever the traffic (with a Clock
// that has no AfterFunc: plus the time until the limiter's next call), and
// memory stays bounded by the hosts in use within about 1.5 × IdleTimeout.
type MemoryLimiter struct {
	clock Clock
	// epoch is the clock's reading at construction; the limiter keeps its
	// times as nanoseconds since epoch (see nanos).
	epoch time.Time
	// sys is set when clock is the system clock: nanos then reads the
	// monotonic clock only.
	sys  bool
	idle time.Duration
	seed maphash.Seed
	// sweepAt is when the next sweep step is due (nanoseconds since
	// epoch); sweepNext counts the steps (the shard swept is sweepNext
	// modulo limiterShards); passes counts the complete passes over the
	// table (the Transport's host cache follows it).
	sweepAt   atomic.Int64
	sweepNext atomic.Uint64
	passes    atomic.Uint64
	reaper    sweepTimer // sweeps when no call comes (see armReaper)
	shards    [limiterShards]limShard
}

type limShard struct {
	mu    sync.RWMutex
	hosts map[string]*hostState
	peak  int      // largest len(hosts) since the map was last rebuilt
	_     [32]byte // keep shards on separate cache lines
}

// NewMemoryLimiter returns an in-memory limiter.
func NewMemoryLimiter(cfg MemoryLimiterConfig) *MemoryLimiter {
	m := &MemoryLimiter{clock: cfg.Clock, idle: cfg.IdleTimeout, seed: maphash.MakeSeed()}
	if m.clock == nil {
		m.clock = SystemClock()
	}
	_, m.sys = m.clock.(systemClock)
	m.epoch = m.clock.Now()
	if m.idle <= 0 {
		m.idle = DefaultIdleTimeout
	}
	for i := range m.shards {
		m.shards[i].hosts = make(map[string]*hostState)
	}
	m.sweepAt.Store(m.sweepStep())
	return m
}

// sweepStep is the time between two sweep steps: a pass over the whole
// table takes IdleTimeout/2.
func (m *MemoryLimiter) sweepStep() int64 {
	return max(int64(m.idle/2)/limiterShards, 1)
}

// maybeSweep sweeps when a sweep step is due: as many shards as steps
// have come due since the last sweep (all of them after a pass's worth of
// time without calls), so that every shard is swept at least once per
// IdleTimeout/2 however often the limiter is called. It is called by
// Acquire and Learn with the time they read, holding no lock; a call that
// finds no step due reads one word.
func (m *MemoryLimiter) maybeSweep(now int64) {
	at := m.sweepAt.Load()
	if now < at {
		return
	}
	step := m.sweepStep()
	k := (now-at)/step + 1
	next := at + k*step
	if k >= limiterShards {
		k, next = limiterShards, now+step
	}
	if !m.sweepAt.CompareAndSwap(at, next) {
		return // another call took these steps
	}
	for range k {
		n := m.sweepNext.Add(1) - 1
		m.sweep(&m.shards[n%limiterShards], now)
		if n%limiterShards == limiterShards-1 {
			m.passes.Add(1)
		}
	}
}

// hostState is the throttle state of one host. It is also the Permit the
// MemoryLimiter hands out (releasing it frees one slot in flight).
//
// Its fields fit 128 bytes (two cache lines, and a size class whose objects
// are aligned on them), which matters with many hosts: the state of each is
// then out of the CPU caches, and every line read is a miss.
type hostState struct {
	mu sync.Mutex
	// inflight and nwait change under mu, but Release lowers inflight and
	// reads nwait without it: a waiter raises nwait before it reads
	// inflight, and Release lowers inflight before it reads nwait, so
	// (atomics being sequentially consistent) either the waiter sees the
	// free slot or Release sees the waiter and wakes the queue's head.
	inflight atomic.Int64
	nwait    atomic.Int64
	head     *waiter
	tail     *waiter

	// The last configured limit seen (Limit, compacted).
	cfgRate  float64
	cfgBurst int32 // 0 means 1
	cfgSlots int32
	// learnedRate and learnedSlots come from headers; 0 = none.
	learnedRate  float64
	learnedSlots int32
	evicted      bool
	claimed      bool // used by the MemoryLimiter, when it is a hostInfo's own

	// The bucket is a schedule (GCRA, virtual scheduling). Times are
	// nanoseconds since the limiter's epoch (see nanos). tat is the
	// theoretical arrival time: a request of cost c may start at
	// tat + (c - burst) × ival, and starting it moves tat on by c × ival
	// (from the request's slot, not from when its goroutine woke; see
	// Limit for the bound on catch-up). ival is the interval, in
	// nanoseconds per cost unit, of rate, the pace tat was computed with
	// (0: unpaced).
	tat         int64
	rate        float64
	ival        float64
	qcost       float64 // total cost of the queued waiters
	pausedUntil int64   // 0: never paused
	lastUsed    int64
}

type waiter struct {
	prev, next *waiter
	wake       chan struct{}
	cost       float64
	// slotWait is true when the waiter last waited for a free slot in
	// flight, not for its slot in the schedule: it then gets no catch-up.
	slotWait bool
}

func (m *MemoryLimiter) shard(key string) *limShard {
	return &m.shards[maphash.String(m.seed, key)%limiterShards]
}

// host returns the state for key, creating it when missing.
func (m *MemoryLimiter) host(key string, lim Limit) *hostState {
	return m.hostIn(key, lim, nil)
}

// hostIn is host, creating a missing state in own (when not nil and not
// used before; see hostInfo.own).
func (m *MemoryLimiter) hostIn(key string, lim Limit, own *hostState) *hostState {
	s := m.shard(key)
	s.mu.RLock()
	h := s.hosts[key]
	s.mu.RUnlock()
	if h != nil {
		return h
	}
	now := m.nanos()
	s.mu.Lock()
	if h = s.hosts[key]; h != nil {
		s.mu.Unlock()
		return h
	}
	if own != nil && !own.claimed { // claimed changes under the key's shard lock only
		h, own.claimed = own, true
		h.tat, h.lastUsed = now, now // a full bucket
	} else {
		h = &hostState{tat: now, lastUsed: now} // a full bucket
	}
	h.configure(lim)
	s.hosts[key] = h
	s.peak = max(s.peak, len(s.hosts))
	s.mu.Unlock()
	m.armReaper()
	return h
}

// armReaper arms the sweep timer: every IdleTimeout/2 while the limiter
// holds hosts, it runs the sweep steps that have come due (all of them
// when no call came meanwhile).
func (m *MemoryLimiter) armReaper() {
	m.reaper.arm(m.clock, m.idle/2, func() { m.maybeSweep(m.nanos()) }, func() bool { return m.Len() > 0 })
}

// sweep evicts the idle hosts of one shard and, when the shard has shrunk
// to half its peak or less, moves the rest to a new map so that the memory
// is released (a Go map never shrinks).
func (m *MemoryLimiter) sweep(s *limShard, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, h := range s.hosts {
		h.mu.Lock()
		if h.inflight.Load() == 0 && h.head == nil && now >= h.pausedUntil && now >= h.tat && now-h.lastUsed >= int64(m.idle) {
			h.evicted = true
			delete(s.hosts, k)
		}
		h.mu.Unlock()
	}
	if len(s.hosts) <= s.peak/2 {
		hosts := make(map[string]*hostState, len(s.hosts))
		for k, h := range s.hosts {
			hosts[k] = h
		}
		s.hosts, s.peak = hosts, len(hosts)
	}
}

// configure records l as the host's configured limit.
func (h *hostState) configure(l Limit) {
	h.cfgRate, h.cfgBurst, h.cfgSlots = l.Rate, clamp32(l.Burst), clamp32(l.MaxInFlight)
}

// clamp32 returns n within [0, MaxInt32] (a burst or a cap beyond is as
// good as infinite).
func clamp32(n int) int32 {
	return int32(min(max(n, 0), math.MaxInt32))
}

// effective returns the limit in force: learned values win over cfg.
func (h *hostState) effective() (rate, burst float64, slots int) {
	rate, burst, slots = h.cfgRate, max(float64(h.cfgBurst), 1), int(h.cfgSlots)
	if h.learnedRate > 0 {
		rate = h.learnedRate
	}
	if h.learnedSlots > 0 {
		slots = int(h.learnedSlots)
	}
	return
}

// pace returns the interval (nanoseconds per cost unit) of rate, 0 when
// unpaced. When the rate in force has changed since tat was computed, the
// part of the schedule not yet due is rescaled to the new rate: what was
// charged stays charged, in cost units, and is paid for at the new pace
// from now on (a learned rate applies to the very next request).
func (h *hostState) pace(now int64, rate float64) float64 {
	if rate != h.rate {
		var iv float64
		if !math.IsInf(rate, 1) {
			iv = 1e9 / rate
		}
		switch {
		case iv == 0:
			h.tat = min(h.tat, now) // unpaced: no debt kept
		case h.ival > 0 && h.tat > now:
			h.tat = addNanos(now, float64(h.tat-now)*iv/h.ival)
		}
		h.rate, h.ival = rate, iv
	}
	return h.ival
}

// due returns the earliest instant a request of cost c at the head of the
// queue may start on the schedule and the pause.
func (h *hostState) due(c, burst, ival float64) int64 {
	d := h.pausedUntil
	if ival > 0 {
		if t := addNanos(h.tat, (c-burst)*ival); t > d {
			d = t
		}
	}
	return d
}

// charge admits a request of cost c: it takes a slot in flight and moves
// the schedule on by c × ival from the later of tat and floor (the
// earliest the request is deemed to have started; see Limit).
func (h *hostState) charge(floor int64, c, ival float64) {
	if ival > 0 {
		h.tat = addNanos(max(h.tat, floor), c*ival)
	}
	h.inflight.Add(1)
}

// addNanos returns t + d, saturated to the int64 range.
func addNanos(t int64, d float64) int64 {
	switch s := float64(t) + d; {
	case s > 9e18:
		return math.MaxInt64
	case s < -9e18:
		return math.MinInt64
	}
	return t + int64(d)
}

func (h *hostState) enqueue(w *waiter) {
	h.qcost += w.cost
	w.prev = h.tail
	if h.tail != nil {
		h.tail.next = w
	} else {
		h.head = w
	}
	h.tail = w
	h.nwait.Add(1)
}

func (h *hostState) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else if h.head == w {
		h.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else if h.tail == w {
		h.tail = w.prev
	}
	w.prev, w.next = nil, nil
	h.nwait.Add(-1)
	if h.qcost -= w.cost; h.head == nil {
		h.qcost = 0 // no drift from float sums
	}
}

// wakeHead nudges the first waiter to re-evaluate its turn.
func (h *hostState) wakeHead() {
	if h.head != nil {
		select {
		case h.head.wake <- struct{}{}:
		default:
		}
	}
}

// nanos returns the current time as nanoseconds since m.epoch. With the
// system clock that is one read of the monotonic clock (time.Now reads the
// wall clock too); an injected Clock is read as it is.
func (m *MemoryLimiter) nanos() int64 {
	if m.sys {
		return int64(time.Since(m.epoch))
	}
	return int64(m.clock.Now().Sub(m.epoch))
}

// toNanos converts t to nanoseconds since m.epoch, now being the current
// time on that scale. A time without a monotonic clock reading (a wall
// clock time: a deadline made with context.WithDeadline(time.Date(…)), a
// Signals.PauseUntil parsed from a header) is measured from the current
// wall clock, so that a wall clock step since epoch does not shift it.
func (m *MemoryLimiter) toNanos(t time.Time, now int64) int64 {
	if m.sys && !hasMonotonic(t) {
		d := int64(time.Until(t)) // saturates at ±292 years
		if d > 0 && now > math.MaxInt64-d {
			return math.MaxInt64
		}
		return now + d
	}
	return int64(t.Sub(m.epoch))
}

// timeOf converts nanoseconds since m.epoch back to a time of the clock.
func (m *MemoryLimiter) timeOf(ns int64) time.Time { return m.epoch.Add(time.Duration(ns)) }

// noDeadline is the deadline, in nanoseconds since epoch, of an admission
// without one.
const noDeadline = math.MaxInt64

// hasMonotonic reports whether t carries a monotonic clock reading
// (Round(0) strips it, and only it).
func hasMonotonic(t time.Time) bool { return t != t.Round(0) }

// Release frees one slot in flight (hostState is the MemoryLimiter's Permit).
// Without waiters it takes no lock (see hostState). A second Release of
// one permit is ignored as long as nothing else is in flight; never below
// zero.
func (h *hostState) Release() {
	for {
		n := h.inflight.Load()
		if n <= 0 || h.inflight.CompareAndSwap(n, n-1) {
			break
		}
	}
	if h.nwait.Load() > 0 {
		h.mu.Lock()
		if h.head != nil && h.head.slotWait {
			// Only a head waiting for a slot needs the news: one waiting
			// for its slot in the schedule would wake for nothing.
			h.wakeHead()
		}
		h.mu.Unlock()
	}
}

// Acquire implements Limiter. Waiters of a host are served strictly in
// arrival order, each at its slot in the host's schedule (see Limit). The
// predicted wait covers the pause and the schedule of every waiter ahead;
// a wait for a free slot in flight cannot be predicted and is bounded by
// ctx and a.Deadline only. A cost the bucket can never hold fails at once
// with a *CostError.
func (m *MemoryLimiter) Acquire(ctx context.Context, a Admission) (Permit, error) {
	return m.acquire(ctx, &a, nil, nil)
}

// acquire is Acquire with an optional cache of the host's state (the
// Transport keeps one per host key, saving the sharded map lookup), and
// optional storage for the state should the host have none (see
// hostInfo.own). An evicted cached state is replaced.
func (m *MemoryLimiter) acquire(ctx context.Context, a *Admission, cache *atomic.Pointer[hostState], own *hostState) (Permit, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := a.cost()
	if c != 1 && (c < 0 || math.IsNaN(c) || math.IsInf(c, 0)) {
		return nil, &CostError{Host: a.Key, Cost: c, Burst: a.Limit.burst()}
	}
	for {
		var h *hostState
		if cache != nil {
			h = cache.Load()
		}
		if h == nil {
			h = m.hostIn(a.Key, a.Limit, own)
			if cache != nil {
				cache.Store(h)
			}
		}
		h.mu.Lock()
		if h.evicted {
			h.mu.Unlock()
			if cache != nil {
				cache.CompareAndSwap(h, nil)
			}
			continue
		}
		now := m.nanos()
		if h.head != nil && (h.cfgRate != a.Limit.Rate || h.cfgBurst != clamp32(a.Limit.Burst) || h.cfgSlots != clamp32(a.Limit.MaxInFlight)) {
			h.wakeHead() // the new limit applies to the waiters too
		}
		h.configure(a.Limit)
		h.lastUsed = now
		rate, burst, slots := h.effective()
		ival := h.pace(now, rate)
		if h.head == nil && (slots == 0 || h.inflight.Load() < int64(slots)) && h.due(c, burst, ival) <= now && c <= burst {
			h.charge(now, c, ival)
			h.mu.Unlock()
			m.maybeSweep(now)
			return h, nil
		}
		if c > burst {
			h.mu.Unlock()
			return nil, &CostError{Host: a.Key, Cost: c, Burst: burst}
		}
		// Predicted start: after the pause, and after the waiters ahead
		// have had their slots in the schedule.
		at := h.pausedUntil
		if ival > 0 {
			at = max(at, addNanos(max(h.tat, now), (h.qcost+c-burst)*ival))
		}
		wait := time.Duration(max(at-now, 0))
		deadline := int64(noDeadline)
		if !a.Deadline.IsZero() {
			deadline = m.toNanos(a.Deadline, now)
			if at > deadline {
				h.mu.Unlock()
				return nil, &ThrottleError{Host: a.Key, Wait: wait, Predicted: true}
			}
		}
		w := &waiter{wake: make(chan struct{}, 1), cost: c}
		h.enqueue(w)
		return m.wait(ctx, h, w, a.Key, deadline, now)
	}
}

// wait runs the queue protocol for w; h.mu is held on entry and released on
// return.
func (m *MemoryLimiter) wait(ctx context.Context, h *hostState, w *waiter, key string, deadline, start int64) (Permit, error) {
	for {
		now := m.nanos()
		rate, burst, slots := h.effective()
		ival := h.pace(now, rate)
		at := int64(-1) // the instant to wake at; -1: wait for a wake-up
		if h.head == w {
			if w.cost > burst { // the limit shrank under the waiter
				h.remove(w)
				h.wakeHead()
				h.mu.Unlock()
				return nil, &CostError{Host: key, Cost: w.cost, Burst: burst}
			}
			if due := h.due(w.cost, burst, ival); due > now {
				at, w.slotWait = due, false
			} else if slots == 0 || h.inflight.Load() < int64(slots) {
				// Charge the request at its slot, not at this (possibly
				// late) wake-up, within the catch-up bound of Limit.
				floor := now
				if !w.slotWait {
					floor = addNanos(now, -burst*ival)
				}
				h.charge(floor, w.cost, ival)
				h.remove(w)
				h.lastUsed = now
				h.wakeHead() // the next waiter may go too (burst, free slots)
				h.mu.Unlock()
				m.maybeSweep(now)
				return h, nil
			} else {
				w.slotWait = true
			}
		}
		if deadline != noDeadline {
			if deadline <= now {
				h.remove(w)
				h.wakeHead()
				h.mu.Unlock()
				return nil, &ThrottleError{Host: key, Wait: time.Duration(now - start)}
			}
			if at < 0 || deadline < at {
				at = deadline
			}
		}
		h.mu.Unlock()
		var (
			t  Timer
			tc <-chan time.Time
		)
		if at >= 0 {
			// Aim at the instant computed above: time spent since now was
			// read (or a test clock advanced meanwhile) must not delay it.
			t = NewTimerAt(m.clock, m.timeOf(at))
			tc = t.C()
		}
		select {
		case <-w.wake:
		case <-tc:
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			h.mu.Lock()
			h.remove(w)
			h.wakeHead()
			h.mu.Unlock()
			return nil, ctx.Err()
		}
		if t != nil {
			t.Stop()
		}
		h.mu.Lock()
	}
}

// Learn implements Limiter: a pace or cap replaces the configured one for
// this host until its state is evicted; a pause holds every request to the
// host until PauseUntil (a later pause extends it, an earlier one is
// ignored). After a pause requests resume one at a time at the host's pace.
//
// Available lowers the bucket of a tracked host to that many cost units
// (the schedule moves on so that no more can start at once); it never
// raises it, and is ignored for a host not tracked.
func (m *MemoryLimiter) Learn(_ context.Context, key string, s Signals) {
	if !s.HasRPS && !s.HasMaxConcurrent && s.PauseUntil.IsZero() {
		if s.HasAvailable {
			m.lower(key, s.Available, s.AvailableExact)
		}
		return
	}
	if s.HasAvailable {
		defer m.lower(key, s.Available, s.AvailableExact)
	}
	for {
		h := m.host(key, DefaultLimit())
		h.mu.Lock()
		if h.evicted {
			h.mu.Unlock()
			continue
		}
		now := m.nanos()
		h.lastUsed = now
		if s.HasRPS && s.RPS > 0 && !math.IsNaN(s.RPS) {
			h.learnedRate = s.RPS
			rate, _, _ := h.effective()
			h.pace(now, rate) // rescale the schedule at once
		}
		if s.HasMaxConcurrent && s.MaxConcurrent > 0 {
			h.learnedSlots = clamp32(s.MaxConcurrent)
		}
		if !s.PauseUntil.IsZero() {
			if pu := m.toNanos(s.PauseUntil, now); pu > now && pu > h.pausedUntil {
				h.pausedUntil = pu
				// Resume one at a time at the pace: the bucket holds
				// one request at pu.
				rate, burst, _ := h.effective()
				h.tat = max(h.tat, addNanos(pu, (burst-1)*h.pace(now, rate)))
			}
		}
		h.wakeHead()
		h.mu.Unlock()
		m.maybeSweep(now)
		return
	}
}

// lower caps the bucket of a tracked host at avail cost units; with exact
// it sets the bucket's level to avail, raising it too.
func (m *MemoryLimiter) lower(key string, avail float64, exact bool) {
	if math.IsNaN(avail) {
		return
	}
	s := m.shard(key)
	s.mu.RLock()
	h := s.hosts[key]
	s.mu.RUnlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.evicted {
		return
	}
	now := m.nanos()
	rate, burst, _ := h.effective()
	ival := h.pace(now, rate)
	if ival == 0 {
		return
	}
	avail = min(max(avail, 0), burst)
	at := addNanos(now, (burst-avail)*ival)
	if exact {
		h.tat = at
		h.wakeHead()
		return
	}
	h.tat = max(h.tat, at)
}

// HostStats is a snapshot of one host's throttle state.
type HostStats struct {
	// Rate, Burst and MaxInFlight are the limits in force (learned values
	// included); Rate is +Inf when unpaced, MaxInFlight 0 when uncapped.
	Rate        float64
	Burst       int
	MaxInFlight int
	// InFlight and Waiting count requests holding a slot and queued.
	InFlight int
	Waiting  int
	// PausedUntil is the end of the current pause (zero or past: none).
	PausedUntil time.Time
	// Learned is true when a header set the rate or the cap.
	Learned bool
}

// Stats returns a snapshot of the host's state; false when the host is not
// tracked (never called, or evicted).
func (m *MemoryLimiter) Stats(key string) (HostStats, bool) {
	s := m.shard(key)
	s.mu.RLock()
	h := s.hosts[key]
	s.mu.RUnlock()
	if h == nil {
		return HostStats{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rate, burst, slots := h.effective()
	var paused time.Time
	if h.pausedUntil != 0 {
		paused = m.timeOf(h.pausedUntil)
	}
	return HostStats{
		Rate: rate, Burst: int(burst), MaxInFlight: slots,
		InFlight: int(h.inflight.Load()), Waiting: int(h.nwait.Load()), PausedUntil: paused,
		Learned: h.learnedRate > 0 || h.learnedSlots > 0,
	}, true
}

// Len returns how many hosts are tracked.
func (m *MemoryLimiter) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		n += len(s.hosts)
		s.mu.RUnlock()
	}
	return n
}
