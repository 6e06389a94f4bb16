package ezthrottle

import (
	"sync/atomic"
	"time"
)

// Clock is the time source of a Transport and of the MemoryLimiter. The
// default is the system clock; tests inject a fake one (WithClock) so that
// pacing, pauses and deadline decisions are deterministic without sleeping.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now. A d <= 0 fires
	// at once.
	NewTimer(d time.Duration) Timer
}

// TimerAtClock is an optional interface of a Clock: a timer that fires at
// an absolute time. The MemoryLimiter uses it when the Clock has it. Test
// clocks should implement it: with only NewTimer, a fake clock advanced
// between the limiter reading Now and setting its timer lengthens the wait
// by the advance, and a test that advances the clock exactly once then
// waits forever.
type TimerAtClock interface {
	Clock
	// NewTimerAt returns a timer that fires once, at t. A t not after
	// Now fires at once.
	NewTimerAt(t time.Time) Timer
}

// NewTimerAt returns a timer of c that fires at t: with c's NewTimerAt
// when c is a TimerAtClock, else with NewTimer(t.Sub(c.Now())). A Limiter
// that computes the instant it waits for should wait with it, so that time
// spent since (or a test clock advanced meanwhile) does not delay it.
func NewTimerAt(c Clock, t time.Time) Timer {
	if ac, ok := c.(TimerAtClock); ok {
		return ac.NewTimerAt(t)
	}
	return c.NewTimer(t.Sub(c.Now()))
}

// AfterFuncClock is an optional interface of a Clock: calling a function
// once a duration has passed on the clock, as time.AfterFunc does. With it
// (the system clock has it) the MemoryLimiter and the Transport evict idle
// hosts on time even when they receive no call at all; with a Clock
// without it, eviction runs inside their calls only.
type AfterFuncClock interface {
	Clock
	// AfterFunc calls f in its own goroutine once d has passed on the
	// clock. The returned function cancels the call; it reports whether
	// it did (false: f was called or is running).
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// sweepTimer calls a sweep every period while there is something to sweep,
// on a Clock's AfterFunc (see AfterFuncClock): no goroutine waits between
// two sweeps, and once nothing is left the timer is not armed again, so it
// keeps nothing alive. It is armed at most once at a time.
type sweepTimer struct{ armed atomic.Bool }

// arm arms the timer to call sweep after d, unless it is armed already or c
// has no AfterFunc (the owner's calls then sweep). After sweep it is armed
// again when holds reports something left; holds is asked after the timer
// is disarmed, so that what was added meanwhile by a caller that found it
// armed is not missed.
func (st *sweepTimer) arm(c Clock, d time.Duration, sweep func(), holds func() bool) {
	if st.armed.Load() || !st.armed.CompareAndSwap(false, true) {
		return
	}
	ac, ok := c.(AfterFuncClock)
	if !ok {
		st.armed.Store(false)
		return
	}
	ac.AfterFunc(d, func() {
		sweep()
		st.armed.Store(false)
		if holds() {
			st.arm(c, d, sweep, holds)
		}
	})
}

// Timer is a one-shot timer created by a Clock.
type Timer interface {
	// C delivers the time when the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
}

// SystemClock returns the Clock backed by package time.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }
