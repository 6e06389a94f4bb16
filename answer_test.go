package ezthrottle_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// trickleServer answers with status and head at once, then waits for the
// test to release the rest (tail) of the body: the test, not the clock,
// paces the body.
type trickleServer struct {
	*httptest.Server
	release chan struct{}
	once    sync.Once
}

func newTrickleServer(t *testing.T, status int, head, tail string) *trickleServer {
	s := &trickleServer{release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, head)
		w.(http.Flusher).Flush()
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, tail)
	}))
	t.Cleanup(func() {
		s.Release()
		s.Close()
	})
	return s
}

// Release lets the server send the rest of the body.
func (s *trickleServer) Release() { s.once.Do(func() { close(s.release) }) }

// countingBase counts the bytes the Transport reads from response bodies.
func countingBase(t *testing.T, read *atomic.Int64) http.RoundTripper {
	base := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	return rtFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := base.RoundTrip(r)
		if resp != nil {
			resp.Body = &countingBody{ReadCloser: resp.Body, n: read}
		}
		return resp, err
	})
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

type rtResult struct {
	resp *http.Response
	err  error
}

// await returns the round trip's outcome. The generous bound only turns a
// caller held by a body that never finishes into a failure.
func await(t *testing.T, done <-chan rtResult) rtResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("RoundTrip is still blocked: the caller is held by the body")
		return rtResult{}
	}
}

func roundTripAsync(tr http.RoundTripper, req *http.Request) <-chan rtResult {
	ch := make(chan rtResult, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		ch <- rtResult{resp, err}
	}()
	return ch
}

// A 5xx whose body trickles does not hold the caller: when the answer
// timeout (here a fake clock's timer) or the request's context runs out,
// the caller gets the original response at once, not forwarded, and its
// body yields the bytes already read followed by the rest of the stream.
func TestTricklingAnswerReturnedAtOnce(t *testing.T) {
	const head, tail = "partial ", "and the rest of the answer"
	for _, mode := range []string{"answer timeout", "caller deadline", "caller cancel"} {
		t.Run(mode, func(t *testing.T) {
			srv := newTrickleServer(t, 503, head, tail)
			clk := newFakeClock()
			var read atomic.Int64
			sub := &fakeSubmitter{}
			tr := mustNew(t, ezthrottle.WithBase(countingBase(t, &read)), ezthrottle.WithClock(clk),
				ezthrottle.WithForwarding(sub), ezthrottle.WithAnswerTimeout(time.Second),
				ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1e9, MaxInFlight: 1}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if mode == "caller deadline" {
				// Far enough for the round trip, near enough not to slow
				// the test; the fake clock never fires the answer timer.
				var dcancel context.CancelFunc
				ctx, dcancel = context.WithTimeout(ctx, 2*time.Second)
				defer dcancel()
			}
			done := roundTripAsync(tr, newReq(t, ctx, http.MethodGet, srv.URL+"/x", nil))
			waitFor(t, "the head of the answer read", func() bool { return read.Load() == int64(len(head)) })
			switch mode {
			case "answer timeout":
				waitFor(t, "the answer timer", func() bool { return clk.Timers() == 1 })
				clk.Advance(time.Second)
			case "caller cancel":
				cancel()
			}
			r := await(t, done) // returned while the body has not finished
			require.NoError(t, r.err)
			assert.Equal(t, 503, r.resp.StatusCode, "the original response")
			assert.False(t, ezthrottle.IsForwarded(r.resp))
			assert.Empty(t, sub.Jobs(), "not forwarded")
			srv.Release()
			b, err := io.ReadAll(r.resp.Body)
			if mode == "answer timeout" {
				require.NoError(t, err)
				assert.Equal(t, head+tail, string(b), "the bytes read, then the rest")
			} else {
				// The caller's context is over: the stream ends with its
				// error, after what was read.
				assert.True(t, strings.HasPrefix(head+tail, string(b)) && len(b) >= len(head), "%q", b)
			}
			require.NoError(t, r.resp.Body.Close())
			s, _ := tr.Limiter().(*ezthrottle.MemoryLimiter).Stats(ezthrottle.HostKey(r.resp.Request.URL))
			assert.Equal(t, 0, s.InFlight, "the slot is freed when the body is closed")
		})
	}
	t.Run("closing the body unblocks the pending read", func(t *testing.T) {
		srv := newTrickleServer(t, 429, head, tail)
		clk := newFakeClock()
		var read atomic.Int64
		tr := mustNew(t, ezthrottle.WithBase(countingBase(t, &read)), ezthrottle.WithClock(clk),
			ezthrottle.WithForwarding(&fakeSubmitter{}))
		done := roundTripAsync(tr, newReq(t, context.Background(), http.MethodGet, srv.URL+"/x", nil))
		waitFor(t, "the head", func() bool { return read.Load() == int64(len(head)) })
		waitFor(t, "the answer timer", func() bool { return clk.Timers() == 1 })
		clk.Advance(ezthrottle.DefaultAnswerTimeout)
		r := await(t, done)
		require.NoError(t, r.err)
		buf := make([]byte, len(head))
		_, err := io.ReadFull(r.resp.Body, buf)
		require.NoError(t, err)
		assert.Equal(t, head, string(buf))
		require.NoError(t, r.resp.Body.Close()) // the server never sent the rest: goleak checks nothing is left
	})
}

// The answer is read within the timeout when it arrives in time: it is
// buffered and forwarded, as before.
func TestPromptAnswerStillForwarded(t *testing.T) {
	srv := newTrickleServer(t, 503, "head ", "tail")
	srv.Release()
	clk := newFakeClock()
	var read atomic.Int64
	sub := &fakeSubmitter{}
	tr := mustNew(t, ezthrottle.WithBase(countingBase(t, &read)), ezthrottle.WithClock(clk), ezthrottle.WithForwarding(sub))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, srv.URL+"/x", nil))
	require.NoError(t, err)
	assert.True(t, ezthrottle.IsForwarded(resp))
	require.NoError(t, resp.Body.Close())
	assert.Len(t, sub.Jobs(), 1)
	assert.Equal(t, int64(len("head tail")), read.Load())
}

// Draining a discarded body is bounded in time too: after a forward, an
// answer too large to buffer whose rest trickles does not hold the 202.
func TestDrainOfDiscardedAnswerIsBounded(t *testing.T) {
	head := strings.Repeat("x", 70<<10) // over the 64 KiB buffer: still on the connection
	srv := newTrickleServer(t, 503, head, "never needed")
	clk := newFakeClock()
	var read atomic.Int64
	submitted := make(chan struct{})
	sub := ezthrottle.SubmitterFunc(func(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
		close(submitted)
		return &ezclient.Submission{JobID: "job_1", Status: ezclient.StatusQueued}, nil
	})
	tr := mustNew(t, ezthrottle.WithBase(countingBase(t, &read)), ezthrottle.WithClock(clk), ezthrottle.WithForwarding(sub))
	done := roundTripAsync(tr, newReq(t, context.Background(), http.MethodGet, srv.URL+"/x", nil))
	<-submitted
	waitFor(t, "the drain timer", func() bool { return clk.Timers() == 1 })
	waitFor(t, "the available bytes drained", func() bool { return read.Load() == int64(len(head)) })
	clk.Advance(ezthrottle.DefaultAnswerTimeout)
	r := await(t, done)
	require.NoError(t, r.err)
	assert.True(t, ezthrottle.IsForwarded(r.resp))
	require.NoError(t, r.resp.Body.Close())
	s, _ := tr.Limiter().(*ezthrottle.MemoryLimiter).Stats(ezthrottle.HostKey(r.resp.Request.URL))
	assert.Equal(t, 0, s.InFlight)
}

// While the answer is still on the connection (too large to buffer), the
// engine gets only a share of the time left before the caller's deadline:
// the rest is kept back for the caller to read the original answer.
func TestSubmissionKeepsTimeBackForALargeAnswer(t *testing.T) {
	big := strings.Repeat("0123456789", 10<<10) // 100 KiB
	clk := newFakeClock()
	var deadlines []time.Time
	var hasDeadline []bool
	sub := ezthrottle.SubmitterFunc(func(ctx context.Context, _ *ezclient.Job) (*ezclient.Submission, error) {
		dl, ok := ctx.Deadline()
		deadlines, hasDeadline = append(deadlines, dl), append(hasDeadline, ok)
		return nil, errors.New("engine down")
	})
	body := big
	tr := mustNew(t, ezthrottle.WithClock(clk), ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
		ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
			resp := respond(r, 503, body)
			resp.ContentLength = -1
			return resp, nil
		})))
	callerDL := clk.Now().Add(8 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), callerDL)
	defer cancel()
	resp, err := tr.RoundTrip(newReq(t, ctx, http.MethodGet, "https://api.test/x", nil))
	require.NoError(t, err)
	assert.Equal(t, big, readAll(t, resp.Body))
	require.Len(t, deadlines, 1)
	require.True(t, hasDeadline[0])
	assert.Equal(t, clk.Now().Add(6*time.Second), deadlines[0], "a quarter of the time left is kept back")

	// A buffered answer no longer depends on the connection: the engine
	// gets the caller's whole deadline.
	body = "small"
	resp, err = tr.RoundTrip(newReq(t, ctx, http.MethodGet, "https://api.test/x", nil))
	require.NoError(t, err)
	assert.Equal(t, "small", readAll(t, resp.Body))
	require.Len(t, deadlines, 2)
	assert.Equal(t, callerDL, deadlines[1])

	// Without a deadline there is nothing to share.
	body = big
	resp, err = tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, "https://api.test/x", nil))
	require.NoError(t, err)
	assert.Equal(t, big, readAll(t, resp.Body))
	require.Len(t, deadlines, 3)
	assert.False(t, hasDeadline[2])
}

// End to end: an engine that hangs no longer takes the caller's whole
// deadline; the large original answer comes back readable to its end.
func TestLargeAnswerReadableWhenEngineHangs(t *testing.T) {
	big := strings.Repeat("0123456789", 10<<10) // 100 KiB
	srv := newTrickleServer(t, 503, big, "")
	srv.Release()
	hung := ezthrottle.SubmitterFunc(func(ctx context.Context, _ *ezclient.Job) (*ezclient.Submission, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(hung))
	// A generous deadline: a quarter of it (1 s) is left to read 100 KiB
	// from a loopback server.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	ctx, rcpt := ezthrottle.WithReceipt(ctx)
	resp, err := tr.RoundTrip(newReq(t, ctx, http.MethodGet, srv.URL+"/x", nil))
	require.NoError(t, err)
	assert.Equal(t, 503, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "read %d of %d bytes", len(b), len(big))
	assert.Equal(t, len(big), len(b))
	require.NoError(t, resp.Body.Close())
	assert.ErrorIs(t, rcpt.Err(), context.DeadlineExceeded, "the submission ran out of its share")
}

type panicBody struct{}

func (panicBody) Read([]byte) (int, error) { panic("body exploded") }
func (panicBody) Close() error             { return nil }

// A body whose Read panics panics the caller, as it did before the read
// moved to a goroutine of its own (not the whole program), and the slot is
// freed.
func TestAnswerReadPanicReachesTheCaller(t *testing.T) {
	tr := mustNew(t, ezthrottle.WithForwarding(&fakeSubmitter{}),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1e9, MaxInFlight: 1}),
		ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
			resp := respond(r, 503, "")
			resp.Body, resp.ContentLength = panicBody{}, -1
			return resp, nil
		})))
	mustPanic(t, func() { _, _ = tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, reviewURL, nil)) })
	assert.Equal(t, 0, reviewInFlight(t, tr))
}
