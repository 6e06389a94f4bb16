package ezthrottle

import "time"

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

// afterFunc calls f after d on c when c can (see AfterFuncClock), and
// reports whether it will.
func afterFunc(c Clock, d time.Duration, f func()) bool {
	ac, ok := c.(AfterFuncClock)
	if !ok {
		return false
	}
	ac.AfterFunc(d, f)
	return true
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
