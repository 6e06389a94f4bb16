package ezthrottle

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"
)

// manualClock is a Clock whose timers fire only when the test says so.
type manualClock struct {
	mu     sync.Mutex
	timers []*manualTimer
}

type manualTimer struct {
	c       chan time.Time
	stopped bool
}

func (c *manualClock) Now() time.Time { return time.Unix(0, 0) }

func (c *manualClock) NewTimer(time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) C() <-chan time.Time { return t.c }
func (t *manualTimer) Stop() bool          { t.stopped = true; return true }

// fire fires every timer made so far.
func (c *manualClock) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		select {
		case t.c <- time.Unix(0, 0):
		default:
		}
	}
}

// scriptedBody returns data in chunks of the given size; its Read number
// stallAt (counting from 0) first signals stalled and waits for release:
// the test, not the clock, decides when the body trickles on.
type scriptedBody struct {
	data    []byte
	chunk   int
	reads   int
	stallAt int
	stalled chan struct{}
	release chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (b *scriptedBody) Read(p []byte) (int, error) {
	if b.reads == b.stallAt {
		close(b.stalled)
		select {
		case <-b.release:
		case <-b.closed:
			b.reads++
			return 0, io.ErrClosedPipe
		}
	}
	b.reads++
	if len(b.data) == 0 {
		return 0, io.EOF
	}
	n := min(b.chunk, len(p), len(b.data))
	copy(p, b.data[:n])
	b.data = b.data[n:]
	return n, nil
}

func (b *scriptedBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// FuzzReadWithin checks the one time-bounded read of the Transport against
// every way a body can arrive: whatever the chunking, the size, the limit
// and the Read during which the time runs out, the bytes returned followed
// by the rest yield the body exactly, and the outcome is the one the
// sizes call for.
func FuzzReadWithin(f *testing.F) {
	f.Add([]byte("hello, world"), uint8(3), uint8(2), uint16(64), true)
	f.Add([]byte("hello, world"), uint8(100), uint8(200), uint16(5), true)
	f.Add(bytes.Repeat([]byte("x"), 3000), uint8(7), uint8(100), uint16(2048), true)
	f.Add(bytes.Repeat([]byte("y"), 600), uint8(255), uint8(0), uint16(512), false)
	f.Add([]byte{}, uint8(1), uint8(0), uint16(0), true)
	f.Fuzz(func(t *testing.T, data []byte, chunk, stallAt uint8, limit uint16, keep bool) {
		if chunk == 0 {
			chunk = 1
		}
		clk := &manualClock{}
		tr := &Transport{clock: clk, cfg: config{answerTimeout: time.Second}}
		body := &scriptedBody{data: append([]byte(nil), data...), chunk: int(chunk), stallAt: int(stallAt),
			stalled: make(chan struct{}), release: make(chan struct{}), closed: make(chan struct{})}
		done := make(chan boundedRead, 1)
		go func() { done <- tr.readWithin(context.Background(), body, int64(limit), int64(len(data)), keep) }()
		hang := time.NewTimer(10 * time.Second) // turns a hang into a failure
		defer hang.Stop()
		var r boundedRead
		select {
		case r = <-done: // finished before the stall
		case <-body.stalled:
			clk.fire()
			select {
			case r = <-done:
			case <-hang.C:
				t.Fatal("readWithin did not return when its time ran out")
			}
		case <-hang.C:
			t.Fatal("readWithin hangs")
		}
		close(body.release)
		defer func() { _ = r.closer.Close() }()

		switch r.out {
		case readComplete:
			if keep && !bytes.Equal(r.b, data) {
				t.Fatalf("complete read %q, want %q", r.b, data)
			}
			if keep && len(data) > int(limit) {
				t.Fatalf("complete read of %d bytes over the limit %d", len(data), limit)
			}
		case readOverLimit, readExpired:
			if !keep {
				if r.out == readOverLimit {
					return // drained as much as allowed
				}
				_, _ = io.Copy(io.Discard, r.rest)
				return
			}
			if r.out == readOverLimit && len(r.b) != int(limit)+1 {
				t.Fatalf("over the limit after %d bytes, limit %d", len(r.b), limit)
			}
			rest, err := io.ReadAll(r.rest)
			if err != nil {
				t.Fatalf("rest: %v", err)
			}
			if got := append(append([]byte(nil), r.b...), rest...); !bytes.Equal(got, data) {
				t.Fatalf("bytes read + rest = %q, want %q", got, data)
			}
		default:
			t.Fatalf("outcome %d", r.out)
		}
	})
}
