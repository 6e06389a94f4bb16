package ezclient

import (
	"context"
	"errors"
	"fmt"
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

// fxEngine is a fake self-hosted engine with a scripted SSE stream per
// connection and a scripted status reply per lookup.
type fxEngine struct {
	*httptest.Server
	mu       sync.Mutex
	streams  []func(w http.ResponseWriter, r *http.Request) // one per connection; the last repeats
	statuses []fxReply                                      // one per lookup; the last repeats
	nStream  int
	nStatus  int
	lastIDs  []string
	accepts  []string
	paths    []string
}

func fxNewEngine(t *testing.T) *fxEngine {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // runs after the server is closed
	e := &fxEngine{}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.Close)
	return e
}

func (e *fxEngine) serve(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.paths = append(e.paths, r.URL.EscapedPath())
	if strings.HasSuffix(r.URL.Path, "/stream") {
		e.lastIDs = append(e.lastIDs, r.Header.Get("Last-Event-ID"))
		e.accepts = append(e.accepts, r.Header.Get("Accept"))
		var h func(w http.ResponseWriter, r *http.Request)
		if len(e.streams) > 0 {
			h = e.streams[min(e.nStream, len(e.streams)-1)]
		}
		e.nStream++
		e.mu.Unlock()
		if h == nil {
			http.Error(w, "no stream", 500)
			return
		}
		h(w, r)
		return
	}
	rep := fxReply{status: 500, body: "no status"}
	if len(e.statuses) > 0 {
		rep = e.statuses[min(e.nStatus, len(e.statuses)-1)]
	}
	e.nStatus++
	e.mu.Unlock()
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func (e *fxEngine) counts() (streams, statuses int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nStream, e.nStatus
}

// fxSSE returns a stream handler writing the given raw SSE text, flushing
// after each chunk, then ending the response.
func fxSSE(chunks ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for _, c := range chunks {
			_, _ = io.WriteString(w, c)
			w.(http.Flusher).Flush()
		}
	}
}

// fxSSEThenHang writes the chunks and then holds the stream open until the
// client goes away.
func fxSSEThenHang(chunks ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		fxSSE(chunks...)(w, r)
		<-r.Context().Done()
	}
}

func fxStatus(st JobStatus) fxReply {
	return fxReply{status: 200, body: `{"job_id":"job1","status":"` + string(st) + `","url":"https://a.b","method":"GET","created_at":1}`}
}

func fxEngineClient(t *testing.T, e *fxEngine) (*Client, *fxSleeper) {
	t.Helper()
	sl := &fxSleeper{}
	c, err := New(withGetenv(fxNoEnv), WithSelfHosted(e.URL, "user-1"), WithHTTPClient(e.Client()),
		withSleep(sl.sleep), withJitter(fxNoJitter))
	require.NoError(t, err)
	return c, sl
}

func fxCollect(c *Client, ctx context.Context, id string) ([]Event, error) {
	var evs []Event
	for ev, err := range c.StreamJob(ctx, id) {
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

func TestStreamJobHappyPath(t *testing.T) {
	e := fxNewEngine(t)
	e.streams = append(e.streams, fxSSE(
		": keepalive\n\n",
		"event: queued\ndata: {\"job_id\":\"job1\"}\n\n",
		"event: position\r\ndata: {\"position\":3}\r\n\r\n",
		"event: dispatching\n\n",
		": ping\n",
		"id: 7\nevent: completed\ndata: {\"job_id\":\"job1\",\"response_status\":200,\n",
		"data: \"body\":\"{\\\"ok\\\":true}\"}\n\n",
		"event: queued\ndata: {}\n\n", // after the terminal event: never read
	))
	e.statuses = append(e.statuses, fxStatus(StatusInFlight))
	c, sl := fxEngineClient(t, e)
	evs, err := fxCollect(c, context.Background(), "job1")
	require.NoError(t, err)
	require.Len(t, evs, 4)
	assert.Equal(t, []EventType{EventQueued, EventPosition, EventDispatching, EventCompleted}, []EventType{evs[0].Type, evs[1].Type, evs[2].Type, evs[3].Type})
	assert.Equal(t, 3, evs[1].Position)
	assert.Nil(t, evs[2].Data)
	done := evs[3]
	assert.True(t, done.Terminal())
	assert.False(t, done.FromStatus)
	assert.Equal(t, "job1", done.JobID)
	assert.Equal(t, 200, done.ResponseStatus)
	assert.Equal(t, `{"ok":true}`, done.Body)
	assert.Equal(t, "7", done.ID)
	assert.JSONEq(t, `{"job_id":"job1","response_status":200,"body":"{\"ok\":true}"}`, string(done.Data))
	streams, statuses := e.counts()
	assert.Equal(t, 1, streams)
	assert.Equal(t, 2, statuses, "two lookups: when the stream opened and after the catch-up event (the job could have finished already)")
	assert.Empty(t, sl.got())
	assert.Equal(t, []string{"text/event-stream"}, e.accepts)
	assert.Equal(t, "/jobs/job1/stream", e.paths[0])
}

func TestStreamJobFailedEvent(t *testing.T) {
	e := fxNewEngine(t)
	e.streams = append(e.streams, fxSSEThenHang("event: failed\ndata: {\"job_id\":\"job1\",\"reason\":\"target returned 500\",\"response_status\":500}\n\n"))
	c, _ := fxEngineClient(t, e)
	ev, err := c.WaitJob(context.Background(), "job1")
	require.NoError(t, err)
	assert.Equal(t, EventFailed, ev.Type)
	assert.Equal(t, "target returned 500", ev.Reason)
	assert.Equal(t, 500, ev.ResponseStatus)
}

func TestStreamJobFallsBackToStatus(t *testing.T) {
	t.Run("job finished before connecting: no terminal event", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSE(": keepalive\n\n"))
		e.statuses = append(e.statuses, fxStatus(StatusCompleted))
		c, sl := fxEngineClient(t, e)
		evs, err := fxCollect(c, context.Background(), "job1")
		require.NoError(t, err)
		require.Len(t, evs, 1)
		assert.Equal(t, Event{Type: EventCompleted, JobID: "job1", FromStatus: true}, evs[0])
		assert.Empty(t, sl.got())
	})
	t.Run("job finished before connecting: keepalives forever, never a terminal event", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSEThenHang(": keepalive\n\n"))
		e.statuses = append(e.statuses, fxStatus(StatusCompleted))
		c, sl := fxEngineClient(t, e)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a safety net, not a timing assertion
		defer cancel()
		ev, err := c.WaitJob(ctx, "job1")
		require.NoError(t, err, "WaitJob must not wait on keepalives for a job that already finished")
		assert.Equal(t, Event{Type: EventCompleted, JobID: "job1", FromStatus: true}, ev)
		streams, statuses := e.counts()
		assert.Equal(t, 1, streams)
		assert.Equal(t, 1, statuses, "one lookup, when the stream opened")
		assert.Empty(t, sl.got())
	})
	t.Run("stream breaks with a 500, status says failed", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) })
		e.statuses = append(e.statuses, fxStatus(StatusFailed))
		c, _ := fxEngineClient(t, e)
		ev, err := c.WaitJob(context.Background(), "job1")
		require.NoError(t, err)
		assert.Equal(t, EventFailed, ev.Type)
		assert.True(t, ev.FromStatus)
	})
	t.Run("connection cut mid-event, status says completed", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, func(w http.ResponseWriter, r *http.Request) {
			fxSSE("event: queued\ndata: {}\n\nevent: compl")(w, r)
			panic(http.ErrAbortHandler)
		})
		// In flight when the stream opened and after the catch-up event.
		e.statuses = append(e.statuses, fxStatus(StatusInFlight), fxStatus(StatusInFlight), fxStatus(StatusCompleted))
		c, _ := fxEngineClient(t, e)
		evs, err := fxCollect(c, context.Background(), "job1")
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(evs), 2)
		assert.Equal(t, EventQueued, evs[0].Type)
		assert.True(t, evs[len(evs)-1].FromStatus)
	})
	t.Run("still running: reconnects with Last-Event-ID", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams,
			fxSSE("id: 41\nevent: queued\ndata: {}\n\n"),
			fxSSE("id: 42\nevent: completed\ndata: {\"response_status\":201}\n\n"))
		e.statuses = append(e.statuses, fxStatus(StatusInFlight))
		c, sl := fxEngineClient(t, e)
		evs, err := fxCollect(c, context.Background(), "job1")
		require.NoError(t, err)
		require.Len(t, evs, 2)
		assert.Equal(t, EventCompleted, evs[1].Type)
		assert.Equal(t, 201, evs[1].ResponseStatus)
		assert.Equal(t, []string{"", "41"}, e.lastIDs)
		assert.Equal(t, []time.Duration{200 * time.Millisecond}, sl.got())
	})
	t.Run("never terminal: gives up with ErrStreamEnded", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSE(""))
		e.statuses = append(e.statuses, fxStatus(StatusQueued))
		c, sl := fxEngineClient(t, e)
		evs, err := fxCollect(c, context.Background(), "job1")
		assert.Empty(t, evs)
		require.ErrorIs(t, err, ErrStreamEnded)
		assert.Contains(t, err.Error(), "queued")
		streams, statuses := e.counts()
		assert.Equal(t, 4, streams, "the client's retry budget")
		assert.Equal(t, 8, statuses, "per connection: one lookup when it opened, one after it ended")
		assert.Len(t, sl.got(), 3)
	})
	t.Run("unknown job", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, func(w http.ResponseWriter, r *http.Request) { http.Error(w, `{"error":"job not found"}`, 404) })
		e.statuses = append(e.statuses, fxReply{status: 404, body: `{"error":"job not found"}`})
		c, _ := fxEngineClient(t, e)
		_, err := c.WaitJob(context.Background(), "nope")
		require.ErrorIs(t, err, ErrNotFound)
		streams, statuses := e.counts()
		assert.Equal(t, 1, streams)
		assert.Equal(t, 1, statuses)
	})
	t.Run("reconnect wait past the deadline is not started", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSE(""))
		e.statuses = append(e.statuses, fxStatus(StatusQueued))
		c, sl := fxEngineClient(t, e)
		now := time.Now()
		c.now = func() time.Time { return now }
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(50*time.Millisecond))
		defer cancel()
		_, err := c.WaitJob(ctx, "job1")
		require.ErrorIs(t, err, ErrStreamEnded)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Empty(t, sl.got())
	})
}

func TestStreamJobCancellation(t *testing.T) {
	t.Run("cancel while the stream hangs", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSEThenHang("event: queued\ndata: {}\n\n"))
		c, _ := fxEngineClient(t, e)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var evs []Event
		var gotErr error
		for ev, err := range c.StreamJob(ctx, "job1") {
			if err != nil {
				gotErr = err
				break
			}
			evs = append(evs, ev)
			cancel() // the stream now hangs: only the context can end it
		}
		require.Len(t, evs, 1)
		assert.ErrorIs(t, gotErr, context.Canceled)
		_, statuses := e.counts()
		assert.Equal(t, 2, statuses, "the lookups when the stream opened and on the catch-up event; none after the cancellation")
	})
	t.Run("consumer stops early", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSEThenHang("event: queued\ndata: {}\n\nevent: position\ndata: {\"position\":1}\n\n"))
		c, _ := fxEngineClient(t, e)
		n := 0
		for ev, err := range c.StreamJob(context.Background(), "job1") {
			require.NoError(t, err)
			assert.Equal(t, EventQueued, ev.Type)
			n++
			break // closes the connection; goleak checks nothing is left behind
		}
		assert.Equal(t, 1, n)
	})
	t.Run("already cancelled", func(t *testing.T) {
		e := fxNewEngine(t)
		c, _ := fxEngineClient(t, e)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.WaitJob(ctx, "job1")
		assert.ErrorIs(t, err, context.Canceled)
		streams, statuses := e.counts()
		assert.Zero(t, streams+statuses)
	})
	t.Run("cancel during the reconnect wait", func(t *testing.T) {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSE(""))
		e.statuses = append(e.statuses, fxStatus(StatusInFlight))
		c, sl := fxEngineClient(t, e)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sl.hook = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
		_, err := c.WaitJob(ctx, "job1")
		assert.ErrorIs(t, err, context.Canceled)
	})
}

func TestStreamJobArguments(t *testing.T) {
	srv := fxNewServer(t)
	cloud, _ := fxCloud(t, srv)
	_, err := cloud.WaitJob(context.Background(), "job1")
	assert.ErrorIs(t, err, ErrUnsupported)
	e := fxNewEngine(t)
	c, _ := fxEngineClient(t, e)
	_, err = c.WaitJob(context.Background(), "")
	assert.ErrorIs(t, err, ErrValidation)
	assert.Empty(t, srv.requests())
	streams, statuses := e.counts()
	assert.Zero(t, streams+statuses)
}

func TestStreamJobIgnoresClientTimeout(t *testing.T) {
	// http.Client.Timeout would cut a long stream; the stream client drops it.
	e := fxNewEngine(t)
	e.streams = append(e.streams, fxSSE("event: completed\ndata: {}\n\n"))
	hc := e.Client()
	hc.Timeout = time.Hour
	c, err := New(withGetenv(fxNoEnv), WithSelfHosted(e.URL, "u"), WithHTTPClient(hc))
	require.NoError(t, err)
	assert.Zero(t, c.streamHC.Timeout)
	assert.Same(t, hc.Transport, c.streamHC.Transport)
	ev, err := c.WaitJob(context.Background(), "job1")
	require.NoError(t, err)
	assert.Equal(t, EventCompleted, ev.Type)
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []sseEvent
		err  error
	}{
		{"LF", "event: a\ndata: 1\n\n", []sseEvent{{event: "a", data: "1"}}, nil},
		{"CRLF", "event: a\r\ndata: 1\r\n\r\n", []sseEvent{{event: "a", data: "1"}}, nil},
		{"CR", "event: a\rdata: 1\r\r", []sseEvent{{event: "a", data: "1"}}, nil},
		{"multi-line data", "data: a\ndata:b\ndata:  c\n\n", []sseEvent{{data: "a\nb\n c"}}, nil},
		{"comments and blank lines", ":hi\n\n\n: ping\nevent: x\n\n", []sseEvent{{event: "x"}}, nil},
		{"no value colon", "event\ndata\n\n", []sseEvent{{event: "", data: ""}}, nil},
		{"id persists", "id: 1\nevent: a\n\nevent: b\n\nid\nevent: c\n\n", []sseEvent{{event: "a", id: "1"}, {event: "b", id: "1"}, {event: "c", id: ""}}, nil},
		{"id with NUL ignored", "id: a\x00b\nevent: a\n\n", []sseEvent{{event: "a"}}, nil},
		{"BOM", "\ufeffevent: a\n\n", []sseEvent{{event: "a"}}, nil},
		{"unknown fields and retry ignored", "retry: 100\nfoo: bar\nevent: a\n\n", []sseEvent{{event: "a"}}, nil},
		{"cut-off event still dispatched", "event: a\n\nevent: completed\ndata: {}", []sseEvent{{event: "a"}, {event: "completed", data: "{}"}}, nil},
		{"empty", "", nil, nil},
		{"line too long", "data: " + strings.Repeat("x", maxSSELine+1) + "\n\n", nil, errSSETooLarge},
		{"event too large", strings.Repeat("data: "+strings.Repeat("x", 1<<19)+"\n", 10), nil, errSSETooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newSSEReader(strings.NewReader(tt.in))
			var got []sseEvent
			var err error
			for {
				var ev sseEvent
				ev, err = r.next()
				if err != nil {
					break
				}
				if ev.keepalive {
					continue // reported between events; see TestSSEReaderKeepalive
				}
				got = append(got, ev)
			}
			assert.Equal(t, tt.want, got)
			if tt.err == nil {
				assert.ErrorIs(t, err, io.EOF)
			} else {
				assert.ErrorIs(t, err, tt.err)
			}
			_, err = r.next()
			assert.Error(t, err, "stays ended")
		})
	}
}

// fxOneByteReader returns one byte per Read: "\r" and "\n" arrive apart.
type fxOneByteReader struct{ s string }

func (r *fxOneByteReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	p[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}

func TestSSEReaderKeepalive(t *testing.T) {
	r := newSSEReader(strings.NewReader(": ping\n\nevent: a\n: inside\ndata: 1\n\n: ping\n"))
	var got []sseEvent
	for {
		ev, err := r.next()
		if err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		got = append(got, ev)
	}
	assert.Equal(t, []sseEvent{{keepalive: true}, {event: "a", data: "1"}, {keepalive: true}}, got,
		"comments between events are reported as keepalives; a comment inside an event is not")
}

func TestSSEReaderSplitCRLF(t *testing.T) {
	r := newSSEReader(&fxOneByteReader{s: "event: a\r\ndata: 1\r\n\r\nevent: b\r\r"})
	a, err := r.next()
	require.NoError(t, err)
	assert.Equal(t, sseEvent{event: "a", data: "1"}, a)
	b, err := r.next()
	require.NoError(t, err)
	assert.Equal(t, sseEvent{event: "b"}, b)
	_, err = r.next()
	assert.ErrorIs(t, err, io.EOF)
}

func TestDecodeEvent(t *testing.T) {
	tests := []struct {
		in   sseEvent
		want Event
	}{
		{sseEvent{event: "position", data: `{"position":"4"}`}, Event{Type: EventPosition, JobID: "j", Position: 4, Data: []byte(`{"position":"4"}`)}},
		{sseEvent{event: "", data: `{"type":"completed","status_code":204,"body":{"a":1}}`}, Event{Type: EventCompleted, JobID: "j", ResponseStatus: 204, Body: `{"a":1}`, Succeeded: true, Data: []byte(`{"type":"completed","status_code":204,"body":{"a":1}}`)}},
		{sseEvent{event: "message", data: `{"status":"failed","error":"boom"}`}, Event{Type: EventFailed, JobID: "j", Reason: "boom", Data: []byte(`{"status":"failed","error":"boom"}`)}},
		{sseEvent{event: "", data: `completed`}, Event{Type: EventCompleted, JobID: "j", Data: []byte(`completed`)}},
		{sseEvent{event: "", data: `hello`}, Event{Type: "message", JobID: "j", Data: []byte(`hello`)}},
		{sseEvent{event: "custom", data: `[1,2]`}, Event{Type: "custom", JobID: "j", Data: []byte(`[1,2]`)}},
		{sseEvent{event: "", data: `{"x":1}`}, Event{Type: "message", JobID: "j", Data: []byte(`{"x":1}`)}},
		{sseEvent{event: "completed", data: `{"job_id":"other","body":null}`, id: "9"}, Event{Type: EventCompleted, JobID: "other", ID: "9", Data: []byte(`{"job_id":"other","body":null}`)}},
	}
	for i, tt := range tests {
		assert.Equal(t, tt.want, decodeEvent("j", tt.in), fmt.Sprint(i))
	}
}

func TestStreamEndedError(t *testing.T) {
	err := streamEnded("j", StatusQueued, nil)
	assert.ErrorIs(t, err, ErrStreamEnded)
	assert.NotContains(t, err.Error(), "%!")
	cause := errors.New("cause")
	assert.ErrorIs(t, streamEnded("j", StatusQueued, cause), cause)
}

// TestStreamJobLateSubscriberRealEngine: a real self-hosted engine answers
// a subscriber of a finished job with a catch-up event (queued), keeps the
// stream open and sends keepalives only every 30 s. WaitJob must answer
// from the status lookup at once, not wait for a keepalive or the deadline
// (issue 13 item 7). The fake engine never sends a keepalive.
func TestStreamJobLateSubscriberRealEngine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []fxReply
		lookups  int
	}{
		{"final when the stream opens", []fxReply{fxStatus(StatusCompleted)}, 1},
		{"final only after the catch-up event", []fxReply{fxStatus(StatusInFlight), fxStatus(StatusFailed)}, 2},
		{"first lookup fails, final after the catch-up event", []fxReply{{status: 503, body: "busy"}, fxStatus(StatusCompleted)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fxNewEngine(t)
			e.streams = append(e.streams, fxSSEThenHang("event: queued\ndata: {\"job_id\":\"job1\"}\n\n"))
			e.statuses = tc.statuses
			c, sl := fxEngineClient(t, e)
			// A safety net so the old behaviour fails instead of hanging;
			// the answer must come from the lookups, not from the deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ev, err := c.WaitJob(ctx, "job1")
			require.NoError(t, err)
			assert.True(t, ev.Terminal())
			assert.True(t, ev.FromStatus)
			assert.False(t, ev.Succeeded, "a status lookup does not tell whether the upstream call succeeded")
			streams, statuses := e.counts()
			assert.Equal(t, 1, streams)
			assert.Equal(t, tc.lookups, statuses)
			assert.Empty(t, sl.got())
		})
	}
}

// TestEventSucceeded: Succeeded is webhook.Result's verdict, a completed
// event with a 2xx response status; a job "completed" with a 429 is not a
// success (issue 13 item 7).
func TestEventSucceeded(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{`event: completed` + "\n" + `data: {"job_id":"job1","response_status":200,"body":"ok"}`, true},
		{`event: completed` + "\n" + `data: {"job_id":"job1","response_status":204}`, true},
		{`event: completed` + "\n" + `data: {"job_id":"job1","response_status":429,"body":"slow down"}`, false},
		{`event: completed` + "\n" + `data: {"job_id":"job1","response_status":500}`, false},
		{`event: completed` + "\n" + `data: {"job_id":"job1","response_status":302}`, false},
		{`event: completed` + "\n" + `data: {"job_id":"job1"}`, false},
		{`event: failed` + "\n" + `data: {"job_id":"job1","response_status":200,"reason":"quorum"}`, false},
	} {
		e := fxNewEngine(t)
		e.streams = append(e.streams, fxSSEThenHang(tc.data+"\n\n"))
		e.statuses = append(e.statuses, fxStatus(StatusInFlight))
		c, _ := fxEngineClient(t, e)
		ev, err := c.WaitJob(context.Background(), "job1")
		require.NoError(t, err)
		assert.Equal(t, tc.want, ev.Succeeded, tc.data)
		assert.False(t, ev.FromStatus)
	}
}

// TestStreamJobRepeatedCatchUpIsNoProgress: an engine (or a proxy) that
// ends every connection right after the catch-up event, which repeats the
// last event, is not called again and again for ever: such a connection is
// a failed attempt (growing backoff, then ErrStreamEnded with the job's
// status), with or without event ids. New events, or a connection that
// stayed open long (a proxy cutting long-lived streams), keep the stream
// going for as long as the job runs.
func TestStreamJobRepeatedCatchUpIsNoProgress(t *testing.T) {
	for _, catchUp := range []string{
		"id: 7\nevent: queued\ndata: {}\n\n",
		"event: queued\ndata: {}\n\n",
	} {
		t.Run("repeats/"+strings.Fields(catchUp)[0], func(t *testing.T) {
			e := fxNewEngine(t)
			e.streams = append(e.streams, fxSSE(catchUp))
			e.statuses = append(e.statuses, fxStatus(StatusQueued))
			c, sl := fxEngineClient(t, e)
			evs, err := fxCollect(c, context.Background(), "job1")
			require.ErrorIs(t, err, ErrStreamEnded)
			assert.Contains(t, err.Error(), "queued")
			streams, _ := e.counts()
			assert.Equal(t, 4, streams, "the client's retry budget")
			assert.Len(t, evs, 4, "each connection's catch-up event is handed over")
			assert.Equal(t, []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}, sl.got())
		})
	}
	t.Run("new events each time", func(t *testing.T) {
		e := fxNewEngine(t)
		for i := range 6 {
			e.streams = append(e.streams, fxSSE(fmt.Sprintf("id: %d\nevent: position\ndata: {\"position\":%d}\n\n", 10+i, 6-i)))
		}
		e.streams = append(e.streams, fxSSE("id: 20\nevent: completed\ndata: {}\n\n"))
		e.statuses = append(e.statuses, fxStatus(StatusQueued))
		c, sl := fxEngineClient(t, e)
		evs, err := fxCollect(c, context.Background(), "job1")
		require.NoError(t, err)
		require.Len(t, evs, 7)
		assert.Equal(t, EventCompleted, evs[6].Type)
		for _, d := range sl.got() {
			assert.Equal(t, 200*time.Millisecond, d, "progress resets the backoff")
		}
	})
	t.Run("long-lived connections cut by a proxy", func(t *testing.T) {
		e := fxNewEngine(t)
		for range 6 {
			e.streams = append(e.streams, fxSSE(": keepalive\n\n", "id: 7\nevent: queued\ndata: {}\n\n"))
		}
		e.streams = append(e.streams, fxSSE("id: 8\nevent: completed\ndata: {}\n\n"))
		e.statuses = append(e.statuses, fxStatus(StatusQueued))
		c, _ := fxEngineClient(t, e)
		var mu sync.Mutex
		now := time.Now()
		c.now = func() time.Time { // each connection lasts a minute
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(31 * time.Second)
			return now
		}
		evs, err := fxCollect(c, context.Background(), "job1")
		require.NoError(t, err)
		assert.Equal(t, EventCompleted, evs[len(evs)-1].Type)
		streams, _ := e.counts()
		assert.Equal(t, 7, streams)
	})
}
