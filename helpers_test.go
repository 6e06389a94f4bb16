package ezthrottle_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
	os.Exit(0)
}

// fakeClock is a manual Clock: time moves only with Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	at   time.Time
	ch   chan time.Time
	done bool
}

func newFakeClock() *fakeClock {
	// An hour ahead of the real time: context deadlines set relative to
	// the fake clock never fire on their own during a test, so every
	// decision is taken by the fake clock alone.
	return &fakeClock{now: time.Now().Add(time.Hour).Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) ezthrottle.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.done = true
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// NewTimerAt implements ezthrottle.TimerAtClock: a timer at an absolute
// fake time, so that an Advance racing with the limiter cannot lengthen a
// wait.
func (c *fakeClock) NewTimerAt(at time.Time) ezthrottle.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: at, ch: make(chan time.Time, 1)}
	if !at.After(c.now) {
		t.done = true
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			break
		}
	}
	return true
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.done = true
			t.ch <- c.now
			continue
		}
		kept = append(kept, t)
	}
	c.timers = kept
}

// Timers returns how many timers are pending.
func (c *fakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// waitFor blocks until cond holds. It synchronises with goroutines (it is
// not a timing assertion): the generous bound only turns a hang into a
// failure.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}

// rtFunc adapts a function to http.RoundTripper.
type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// trackedBody is a ReadCloser that records Close and reads.
type trackedBody struct {
	r      io.Reader
	closed atomic.Int32
	read   atomic.Int64
}

func newTrackedBody(s string) *trackedBody { return &trackedBody{r: strings.NewReader(s)} }

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *trackedBody) Close() error { b.closed.Add(1); return nil }

func (b *trackedBody) Closed() bool { return b.closed.Load() > 0 }

// respond builds a response as a real transport would, closing and fully
// reading the request body first (so captured bodies are complete).
func respond(req *http.Request, status int, body string, hdr ...string) *http.Response {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Add(hdr[i], hdr[i+1])
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: newTrackedBody(body), ContentLength: int64(len(body)), Request: req,
	}
}

// fakeSubmitter records submitted jobs.
type fakeSubmitter struct {
	mu   sync.Mutex
	jobs []*ezclient.Job
	err  error
}

func (f *fakeSubmitter) Submit(_ context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = append(f.jobs, job.Clone())
	if f.err != nil {
		return nil, f.err
	}
	key := job.IdempotentKey
	if key == "" {
		key = "hash:" + job.Method + ":" + job.URL
	}
	return &ezclient.Submission{JobID: fmt.Sprintf("job_%d", len(f.jobs)), Status: ezclient.StatusQueued, IdempotentKey: key}, nil
}

func (f *fakeSubmitter) Jobs() []*ezclient.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*ezclient.Job(nil), f.jobs...)
}
