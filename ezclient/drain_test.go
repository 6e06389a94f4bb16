package ezclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Regression tests: every body the client reads only to discard it (or to
// quote an error) is read within a time bound. An engine (or a local
// target) that trickles such a body used to hold the caller until its
// context ended — forever without a deadline.

// fxDrainTimer is a drain timer the test fires by hand.
type fxDrainTimer struct {
	started chan struct{} // receives once per timer started
	fire    chan time.Time
}

func newFxDrainTimer() *fxDrainTimer {
	return &fxDrainTimer{started: make(chan struct{}, 16), fire: make(chan time.Time)}
}

func (f *fxDrainTimer) timer(d time.Duration) (<-chan time.Time, func() bool) {
	f.started <- struct{}{}
	return f.fire, func() bool { return true }
}

// fireWhenStarted fires the next timer once it has been started and the
// body's producer is blocked (blocked is closed).
func (f *fxDrainTimer) fireWhenStarted(blocked <-chan struct{}) {
	go func() {
		<-f.started
		<-blocked
		close(f.fire)
	}()
}

// fxTrickle writes prefix, flushes, signals blocked, then holds the reply
// open until the client goes away (the engine trickles the rest forever).
func fxTrickle(status int, prefix string, blocked chan struct{}) http.HandlerFunc {
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, prefix)
		w.(http.Flusher).Flush()
		once.Do(func() { close(blocked) })
		<-r.Context().Done()
	}
}

func fxLeakCheck(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // runs after the servers are closed
}

// A reply larger than 4 MiB is refused and the rest of it drained; the
// drain must end when its timer fires, not when the engine stops sending.
func TestDrainOfOversizedReplyIsBoundedInTime(t *testing.T) {
	for _, dialect := range []string{"self-hosted", "cloud"} {
		t.Run(dialect, func(t *testing.T) {
			fxLeakCheck(t)
			blocked := make(chan struct{})
			srv := httptest.NewServer(fxTrickle(200, strings.Repeat("x", maxReplyBody+1000), blocked))
			t.Cleanup(srv.Close)
			dt := newFxDrainTimer()
			dt.fireWhenStarted(blocked)
			opts := []Option{withGetenv(fxNoEnv), WithHTTPClient(srv.Client()), WithRetry(1, 0, 0), withDrainTimer(dt.timer)}
			if dialect == "cloud" {
				opts = append(opts, WithAPIKey(fxKey), WithProxyURL(srv.URL), WithEngineURL(fxEngineURL))
			} else {
				opts = append(opts, WithSelfHosted(srv.URL, "user-1"))
			}
			c, err := New(opts...)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a guard only
			defer cancel()
			_, err = c.Submit(ctx, fxJob())
			require.NoError(t, ctx.Err(), "the drain waited for the engine instead of its timer")
			var ee *EngineError
			require.ErrorAs(t, err, &ee)
			assert.Contains(t, ee.Message, "larger than 4 MiB")
			c.CloseIdleConnections()
		})
	}
}

// The message of a stream's error reply is read within the bound too: a
// stream's context usually has no deadline at all.
func TestStreamErrorBodyReadIsBoundedInTime(t *testing.T) {
	fxLeakCheck(t)
	blocked := make(chan struct{})
	e := fxNewEngine(t)
	e.streams = append(e.streams, fxTrickle(http.StatusForbidden, `{"error":"forb`, blocked))
	e.statuses = append(e.statuses, fxReply{status: 403, body: `{"error":"forbidden"}`})
	dt := newFxDrainTimer()
	dt.fireWhenStarted(blocked)
	c, err := New(withGetenv(fxNoEnv), WithSelfHosted(e.URL, "user-1"), WithHTTPClient(e.Client()),
		withSleep(func(ctx context.Context, _ time.Duration) error { return ctx.Err() }), withJitter(fxNoJitter),
		WithRetry(1, 0, 0), withDrainTimer(dt.timer))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a guard only
	defer cancel()
	_, err = fxCollect(c, ctx, "job1")
	require.NoError(t, ctx.Err(), "reading the error body waited for the engine instead of its timer")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "403")
	c.CloseIdleConnections()
}

// fxHangingBody yields prefix, then blocks until closed (as a Read of an
// HTTP body does until its connection is closed).
type fxHangingBody struct {
	r       io.Reader
	closed  chan struct{}
	once    sync.Once
	blocked chan struct{}
	bOnce   sync.Once
}

func (b *fxHangingBody) Read(p []byte) (int, error) {
	if n, err := b.r.Read(p); err == nil {
		return n, nil
	}
	b.bOnce.Do(func() { close(b.blocked) })
	<-b.closed
	return 0, errors.New("read on closed body")
}

func (b *fxHangingBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

type fxHangingTarget struct{ body *fxHangingBody }

func (h fxHangingTarget) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: h.body, Request: req}, nil
}

// A FRUGAL step's local response larger than MaxResponseBody is truncated
// and the rest drained within the bound (the step's local timeout may be 0:
// no bound but the context's).
func TestStepLocalDrainIsBoundedInTime(t *testing.T) {
	fxLeakCheck(t)
	fc := newStepCloud(t)
	body := &fxHangingBody{r: strings.NewReader(strings.Repeat("y", 100)), closed: make(chan struct{}), blocked: make(chan struct{})}
	dt := newFxDrainTimer()
	dt.fireWhenStarted(body.blocked)
	c := newStepClient(t, fc, nil, WithLocalHTTPClient(&http.Client{Transport: fxHangingTarget{body}}), withDrainTimer(dt.timer))
	type outcome struct {
		res *StepResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := c.Step().URL("https://api.test/big").Type(StepFrugal).Timeout(0).MaxResponseBody(10).Execute(context.Background())
		done <- outcome{res, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(20 * time.Second): // a guard only
		_ = body.Close()
		<-done
		t.Fatal("the drain waited for the target instead of its timer")
	}
	res, err := o.res, o.err
	require.NoError(t, err)
	assert.True(t, res.Local)
	assert.True(t, res.Truncated)
	assert.Equal(t, strings.Repeat("y", 10), string(res.Body))
}

// readClose reads a well-behaved body to its end and closes it; a panic in
// Read goes on in the caller's goroutine.
func TestReadCloseCompleteAndPanic(t *testing.T) {
	fxLeakCheck(t)
	c, err := New(withGetenv(fxNoEnv), WithSelfHosted("http://127.0.0.1:1", "u"))
	require.NoError(t, err)
	rc := &fxHangingBody{r: strings.NewReader("hello"), closed: make(chan struct{}), blocked: make(chan struct{})}
	b, ok := c.readClose(context.Background(), io.NopCloser(io.LimitReader(rc, 5)), 100, true)
	assert.True(t, ok)
	assert.Equal(t, "hello", string(b))
	b, ok = c.readClose(context.Background(), http.NoBody, 100, true)
	assert.True(t, ok)
	assert.Nil(t, b)
	assert.PanicsWithValue(t, "boom", func() {
		c.readClose(context.Background(), io.NopCloser(fxPanicReader{}), 100, false)
	})
	// A context already done ends the wait at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	hb := &fxHangingBody{r: strings.NewReader(""), closed: make(chan struct{}), blocked: make(chan struct{})}
	_, ok = c.readClose(ctx, hb, 100, false)
	assert.False(t, ok)
}

type fxPanicReader struct{}

func (fxPanicReader) Read([]byte) (int, error) { panic("boom") }
