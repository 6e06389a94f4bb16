package ezthrottle

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

// TestLimiterNanos checks the MemoryLimiter's time scale: an injected clock
// is read as it is; the system clock is read through its monotonic reading.
func TestLimiterNanos(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := &fixedClock{at}
	fake := NewMemoryLimiter(MemoryLimiterConfig{Clock: clk})
	assert.False(t, fake.sys)
	assert.Equal(t, at, fake.epoch)
	clk.t = at.Add(1500 * time.Millisecond)
	assert.Equal(t, int64(1500*time.Millisecond), fake.nanos(), "an injected clock is read")
	assert.Equal(t, clk.t, fake.timeOf(fake.nanos()))
	assert.Equal(t, int64(3*time.Second), fake.toNanos(at.Add(3*time.Second), fake.nanos()))

	sys := NewMemoryLimiter(MemoryLimiterConfig{})
	require.True(t, sys.sys)
	assert.True(t, hasMonotonic(sys.epoch))
	before := time.Since(sys.epoch)
	got := sys.nanos()
	after := time.Since(sys.epoch)
	assert.GreaterOrEqual(t, got, int64(before))
	assert.LessOrEqual(t, got, int64(after))
}

// TestLimiterToNanosWallClock checks that times with and without a
// monotonic reading land on the limiter's scale (a wall clock step cannot
// be simulated here; the wall-clock branch measures from time.Now, not
// from the epoch), and that huge times saturate instead of wrapping.
func TestLimiterToNanosWallClock(t *testing.T) {
	m := NewMemoryLimiter(MemoryLimiterConfig{})
	m.epoch = time.Now().Add(-time.Hour)
	now := m.nanos() // about +1h
	mono := time.Now().Add(time.Minute)
	wall := mono.Round(0)
	assert.InDelta(t, float64(now+int64(time.Minute)), float64(m.toNanos(mono, now)), float64(time.Second))
	assert.InDelta(t, float64(now+int64(time.Minute)), float64(m.toNanos(wall, now)), float64(time.Second))
	// now is trusted for the wall-clock branch: the result is relative to it.
	assert.InDelta(t, float64(int64(time.Minute)), float64(m.toNanos(wall, 0)), float64(time.Second))

	assert.Equal(t, int64(math.MaxInt64), m.toNanos(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64-10))
}

// TestLearnWallClockPause checks that a pause given as a wall clock time
// (no monotonic reading) holds the host until that time.
func TestLearnWallClockPause(t *testing.T) {
	m := NewMemoryLimiter(MemoryLimiterConfig{})
	until := time.Now().Add(time.Hour).Round(0)
	m.Learn(t.Context(), "wall", Signals{PauseUntil: until})
	st, ok := m.Stats("wall")
	require.True(t, ok)
	assert.WithinDuration(t, until, st.PausedUntil, time.Second)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := m.Acquire(ctx, Admission{Key: "wall", Limit: DefaultLimit(), Deadline: time.Now().Add(time.Minute)})
	var te *ThrottleError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Predicted)
	assert.InDelta(t, float64(time.Hour), float64(te.Wait), float64(time.Second))
}

// recordingClock records how NewTimerAt reached it.
type recordingClock struct {
	fixedClock
	at   time.Time
	rel  time.Duration
	used string
}

func (c *recordingClock) NewTimer(d time.Duration) Timer {
	c.rel, c.used = d, "NewTimer"
	return c.fixedClock.NewTimer(time.Hour)
}

type recordingAtClock struct{ recordingClock }

func (c *recordingAtClock) NewTimerAt(t time.Time) Timer {
	c.at, c.used = t, "NewTimerAt"
	return c.fixedClock.NewTimer(time.Hour)
}

func TestNewTimerAt(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rel := &recordingClock{fixedClock: fixedClock{now}}
	NewTimerAt(rel, now.Add(3*time.Second)).Stop()
	assert.Equal(t, "NewTimer", rel.used)
	assert.Equal(t, 3*time.Second, rel.rel, "a plain Clock gets the time left")

	abs := &recordingAtClock{recordingClock{fixedClock: fixedClock{now}}}
	NewTimerAt(abs, now.Add(3*time.Second)).Stop()
	assert.Equal(t, "NewTimerAt", abs.used)
	assert.Equal(t, now.Add(3*time.Second), abs.at, "a TimerAtClock gets the instant itself")
}
