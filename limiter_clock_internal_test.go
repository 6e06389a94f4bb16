package ezthrottle

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestHasMonotonic(t *testing.T) {
	now := time.Now()
	assert.True(t, hasMonotonic(now))
	assert.True(t, hasMonotonic(now.Add(time.Hour)))
	assert.False(t, hasMonotonic(now.Round(0)))
	assert.False(t, hasMonotonic(time.Time{}))
	assert.False(t, hasMonotonic(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)))
}

// fixedClock is a Clock that always returns one time.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time                 { return c.t }
func (c fixedClock) NewTimer(d time.Duration) Timer { return SystemClock().NewTimer(d) }

// TestMonoNow checks when the MemoryLimiter's one-read clock is used: only
// with the system clock, and only when every time involved has a monotonic
// reading; otherwise the Clock is read.
func TestMonoNow(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	fake := NewMemoryLimiter(MemoryLimiterConfig{Clock: fixedClock{at}})
	assert.True(t, fake.epoch.IsZero())
	assert.Equal(t, at, fake.monoNow(&hostState{}, time.Time{}), "an injected clock is always read")

	sys := NewMemoryLimiter(MemoryLimiterConfig{})
	assert.True(t, hasMonotonic(sys.epoch))
	before := time.Now()
	got := sys.monoNow(&hostState{}, before.Add(time.Minute))
	after := time.Now()
	assert.True(t, hasMonotonic(got))
	assert.False(t, got.Before(before))
	assert.False(t, got.After(after))

	// The branches, with an epoch planted next to a fake clock: the clock
	// is read exactly when the one-read clock must not be used.
	m := NewMemoryLimiter(MemoryLimiterConfig{Clock: fixedClock{at}})
	m.epoch = time.Now()
	for _, tc := range []struct {
		name      string
		h         *hostState
		deadline  time.Time
		readClock bool
	}{
		{"no deadline", &hostState{}, time.Time{}, false},
		{"monotonic deadline", &hostState{}, time.Now().Add(time.Second), false},
		{"wall-only deadline", &hostState{}, time.Now().Add(time.Second).Round(0), true},
		{"wall-only state", &hostState{wallOnly: true}, time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.readClock, m.monoNow(tc.h, tc.deadline).Equal(at))
		})
	}
}

// TestLearnWallOnly checks that a pause without a monotonic reading marks
// the host state, and one with a monotonic reading does not.
func TestLearnWallOnly(t *testing.T) {
	m := NewMemoryLimiter(MemoryLimiterConfig{})
	m.Learn(t.Context(), "mono", Signals{PauseUntil: time.Now().Add(time.Hour)})
	m.Learn(t.Context(), "wall", Signals{PauseUntil: time.Now().Add(time.Hour).Round(0)})
	assert.False(t, m.host("mono", DefaultLimit()).wallOnly)
	assert.True(t, m.host("wall", DefaultLimit()).wallOnly)
}
