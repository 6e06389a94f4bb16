package redislimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

var errRedisDown = errors.New("dial tcp 127.0.0.1:1: connect: connection refused")

// flaky wraps a real client; while down, every call fails without
// touching Redis. calls counts the calls made while down.
type flaky struct {
	redis.Scripter
	down      atomic.Bool
	downCalls atomic.Int64
}

func (f *flaky) fail(ctx context.Context) bool {
	if f.down.Load() {
		f.downCalls.Add(1)
		return true
	}
	return false
}

func (f *flaky) failedCmd(ctx context.Context) *redis.Cmd {
	c := redis.NewCmd(ctx)
	c.SetErr(errRedisDown)
	return c
}

func (f *flaky) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	if f.fail(ctx) {
		return f.failedCmd(ctx)
	}
	return f.Scripter.Eval(ctx, script, keys, args...)
}

func (f *flaky) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if f.fail(ctx) {
		return f.failedCmd(ctx)
	}
	return f.Scripter.EvalSha(ctx, sha, keys, args...)
}

func (f *flaky) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	if f.fail(ctx) {
		return f.failedCmd(ctx)
	}
	return f.Scripter.EvalRO(ctx, script, keys, args...)
}

func (f *flaky) EvalShaRO(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if f.fail(ctx) {
		return f.failedCmd(ctx)
	}
	return f.Scripter.EvalShaRO(ctx, sha, keys, args...)
}

func (f *flaky) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	if f.fail(ctx) {
		c := redis.NewBoolSliceCmd(ctx)
		c.SetErr(errRedisDown)
		return c
	}
	return f.Scripter.ScriptExists(ctx, hashes...)
}

func (f *flaky) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	if f.fail(ctx) {
		c := redis.NewStringCmd(ctx)
		c.SetErr(errRedisDown)
		return c
	}
	return f.Scripter.ScriptLoad(ctx, script)
}

// fakeClock is a manual ezthrottle.Clock: time moves only with Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) ezthrottle.Timer {
	return c.NewTimerAt(c.Now().Add(d))
}

// NewTimerAt implements ezthrottle.TimerAtClock.
func (c *fakeClock) NewTimerAt(at time.Time) ezthrottle.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: make(chan time.Time, 1), at: at}
	if !at.After(c.now) {
		t.c <- c.now
		t.fired = true
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// pending counts the timers not fired yet.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.timers[:0]
	for _, t := range c.timers {
		t.mu.Lock()
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.fired = true
			t.c <- c.now
		default:
			keep = append(keep, t)
		}
		t.mu.Unlock()
	}
	c.timers = keep
}

type fakeTimer struct {
	mu      sync.Mutex
	c       chan time.Time
	at      time.Time
	stopped bool
	fired   bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// next returns the earliest pending timer's instant (ok false when none).
func (c *fakeClock) next() (at time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		t.mu.Lock()
		if !t.stopped && (!ok || t.at.Before(at)) {
			at, ok = t.at, true
		}
		t.mu.Unlock()
	}
	return at, ok
}

// AdvanceTo moves the clock to at (never back).
func (c *fakeClock) AdvanceTo(at time.Time) {
	if d := at.Sub(c.Now()); d > 0 {
		c.Advance(d)
	}
}
