package ezclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// EventType is the kind of an event on a job's event stream.
type EventType string

// Event types sent by self-hosted engines (protocol §2). Other types are
// passed through as they are.
const (
	EventQueued      EventType = "queued"
	EventPosition    EventType = "position"
	EventDispatching EventType = "dispatching"
	EventCompleted   EventType = "completed"
	EventFailed      EventType = "failed"
)

// Event is one event of a job's event stream.
type Event struct {
	// Type is the event's kind.
	Type EventType
	// JobID is the job's ID (from the event, else the one streamed).
	JobID string
	// Position is the job's place in the queue (EventPosition).
	Position int
	// ResponseStatus is the target's HTTP status (EventCompleted, and
	// EventFailed when the engine reports one); 0 when unknown.
	ResponseStatus int
	// Body is the target's response body (EventCompleted).
	Body string
	// Reason explains a failure (EventFailed).
	Reason string
	// Succeeded reports whether the upstream call succeeded: an
	// EventCompleted with a 2xx ResponseStatus, the same verdict as
	// webhook.Result.Succeeded. Self-hosted engines report a job
	// "completed" whatever the upstream answered (a 429 too), so check
	// Succeeded, not Type. It is false for every other event, including
	// a FromStatus event, whose response status is unknown (the webhook
	// delivery carries it).
	Succeeded bool
	// ID is the SSE event ID, when the engine sends one.
	ID string
	// Data is the event's data exactly as sent (nil for events made from a
	// status lookup).
	Data json.RawMessage
	// FromStatus is true when the stream could not deliver the terminal
	// event and this one was made from the status lookup (GET /jobs/{id}):
	// ResponseStatus, Body and Reason are then unknown.
	FromStatus bool
}

// Terminal reports whether e ends the stream (EventCompleted or EventFailed).
func (e Event) Terminal() bool { return e.Type == EventCompleted || e.Type == EventFailed }

// StreamJob returns the events of a job on a self-hosted engine
// (GET /jobs/{id}/stream, Server-Sent Events) as an iterator:
//
//	for ev, err := range client.StreamJob(ctx, sub.JobID) {
//		if err != nil { ... }
//		if ev.Terminal() { ... }
//	}
//
// The sequence ends after the terminal event (completed or failed), after
// the first error, or when the loop stops early; leaving the loop closes the
// connection. Cancelling ctx ends it with ctx's error.
//
// A job that had already finished when the client connected gets no
// terminal event from engines: they send a catch-up event (such as
// queued) and keepalives, possibly 30 s apart, and keep the stream open.
// So on every connection StreamJob looks the job up (a single attempt
// each) as soon as the stream is open, on the first event (the catch-up,
// before yielding it), and, if no lookup got an answer yet, on a keepalive
// that comes before any event; when the job is final it ends with a
// terminal Event with FromStatus set (after the catch-up event, if that is
// when it learned it). The engine subscribes the client before it answers,
// so a job that finishes after the lookup still sends its terminal event
// on the stream. When the stream ends or breaks without a terminal event,
// StreamJob looks the job up (GetJob): a
// final state becomes a terminal Event with FromStatus set; otherwise it
// reconnects with jittered exponential backoff, giving up with
// ErrStreamEnded after the client's retry budget (WithRetry) of
// consecutive connections that brought nothing new: no event other than a
// repeat of the last one (an engine's catch-up event on each reconnection
// is such a repeat), and that lasted less than streamHealthy (so an engine
// or proxy that cuts the stream after each catch-up event is not called
// again and again for ever, while one that cuts long-lived streams is
// followed for as long as the job runs). An unknown job ends the
// sequence with an error satisfying errors.Is(err, ErrNotFound).
//
// The stream is read with the client's HTTP transport but without the
// *http.Client's overall Timeout, which would cut a long-lived stream; bound
// it with ctx. On the Cloud dialect the sequence yields one
// *ValidationError satisfying ErrUnsupported and makes no network call.
func (c *Client) StreamJob(ctx context.Context, jobID string) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := c.checkJobLookup("StreamJob", jobID); err != nil {
			yield(Event{}, err)
			return
		}
		var (
			last     streamPos
			failures int
		)
		for {
			start := c.now()
			news, done, serr := c.streamOnce(ctx, jobID, &last, yield)
			if done {
				return
			}
			if err := ctx.Err(); err != nil {
				yield(Event{}, err)
				return
			}
			// The stream ended or broke without a terminal event.
			info, gerr := c.GetJob(ctx, jobID)
			if gerr == nil && info.Status.Terminal() {
				yield(Event{Type: EventType(info.Status), JobID: info.JobID, FromStatus: true}, nil)
				return
			}
			if gerr != nil && (ctx.Err() != nil || !c.retryable(ctx, gerr)) {
				yield(Event{}, gerr)
				return
			}
			if news || c.now().Sub(start) >= streamHealthy {
				failures = 0
			}
			failures++
			status := JobStatus("unknown")
			if info != nil {
				status = info.Status
			}
			if failures >= c.maxAttempts {
				yield(Event{}, streamEnded(jobID, status, errors.Join(serr, gerr)))
				return
			}
			wait := c.backoff(failures)
			if dl, ok := ctx.Deadline(); ok && c.now().Add(wait).After(dl) {
				yield(Event{}, streamEnded(jobID, status, context.DeadlineExceeded))
				return
			}
			c.logger.LogAttrs(ctx, slog.LevelDebug, "ezthrottle: job stream ended early, reconnecting",
				slog.String("job_id", jobID), slog.String("status", string(status)), slog.Duration("backoff", wait))
			if err := c.sleep(ctx, wait); err != nil {
				yield(Event{}, err)
				return
			}
		}
	}
}

func streamEnded(jobID string, status JobStatus, cause error) error {
	if cause == nil {
		return fmt.Errorf("%w (job %s, last status %s)", ErrStreamEnded, jobID, status)
	}
	return fmt.Errorf("%w (job %s, last status %s): %w", ErrStreamEnded, jobID, status, cause)
}

// WaitJob blocks until the job on a self-hosted engine reaches a final
// state and returns its terminal event (see StreamJob), or an error. It
// always returns: when ctx ends, with ctx's error. A job that finished
// before the call is answered at once, from the status lookup. The
// event's Succeeded says whether the upstream call succeeded: a
// "completed" job may have been answered 429.
func (c *Client) WaitJob(ctx context.Context, jobID string) (Event, error) {
	for ev, err := range c.StreamJob(ctx, jobID) {
		if err != nil {
			return Event{}, err
		}
		if ev.Terminal() {
			return ev, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	return Event{}, fmt.Errorf("%w (job %s)", ErrStreamEnded, jobID)
}

// streamHealthy is how long a job stream must have stayed open for its end
// to count as a cut of a working stream, not as a failed attempt, when it
// brought no new event (see StreamJob): engines send a keepalive every 30 s.
const streamHealthy = 30 * time.Second

// streamPos is the last event a job stream handed over.
type streamPos struct {
	id  string    // its SSE id (sent as Last-Event-ID on reconnecting)
	typ EventType // its type
	set bool      // an event was handed over
}

// streamOnce reads one connection of the job's stream, yielding its
// events. done is true when the sequence is over: a terminal event was
// yielded, or the consumer stopped. news reports whether an event arrived
// that is not a repeat of the last one before it (same id and type). err
// is why the stream ended otherwise (nil for a clean end).
func (c *Client) streamOnce(ctx context.Context, jobID string, last *streamPos, yield func(Event, error) bool) (news, done bool, err error) {
	req, err := c.newRequest(ctx, http.MethodGet, c.engineURL+"/jobs/"+url.PathEscape(jobID)+"/stream", nil)
	if err != nil {
		return false, false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if last.id != "" {
		req.Header.Set("Last-Event-ID", last.id)
	}
	resp, err := c.streamHC.Do(req)
	if err != nil {
		return false, false, c.transportError(req, err)
	}
	if resp.StatusCode != http.StatusOK {
		// The error's message is read within drainTimeout: an engine that
		// trickles it cannot hold the stream (whose context often has no
		// deadline); what is left unread is not drained but closed.
		b, _ := c.readClose(ctx, resp.Body, maxErrorBody, true)
		return false, false, c.replyError(reply{status: resp.StatusCode, header: resp.Header, body: b})
	}
	// A live stream is closed, never drained: draining would wait for the
	// engine's next event (or forever).
	defer resp.Body.Close()
	// final asks, once per occasion, whether the job is already final,
	// and returns the terminal event to end with (ok false otherwise).
	var (
		answered bool // a lookup on this connection got an answer
		got      bool // an event arrived on this connection
	)
	final := func(looked *bool) (Event, bool) {
		if *looked || ctx.Err() != nil {
			return Event{}, false
		}
		*looked = true
		st, ok := c.peekJobStatus(ctx, jobID)
		answered = answered || ok
		if ok && st.Terminal() {
			return Event{Type: EventType(st), JobID: jobID, FromStatus: true}, true
		}
		return Event{}, false
	}
	var lookedOpen, lookedCatchUp, lookedKeepalive bool
	// The stream is open, so the client is subscribed: a job that had
	// already finished will send nothing more but keepalives.
	if fin, ok := final(&lookedOpen); ok {
		yield(fin, nil)
		return news, true, nil
	}
	sr := newSSEReader(resp.Body)
	for {
		se, rerr := sr.next()
		if rerr != nil {
			if rerr == io.EOF {
				return news, false, nil
			}
			if ctx.Err() != nil {
				return news, false, ctx.Err()
			}
			return news, false, &networkError{err: rerr}
		}
		if se.keepalive {
			// Engines send no terminal event to a client that connects
			// after the job finished: only keepalives. A keepalive before
			// any event on this (already subscribed) connection is the
			// moment to ask, once, whether that happened.
			// A keepalive before any event: ask again if the lookup on
			// opening got no answer.
			if !got && !answered {
				if fin, ok := final(&lookedKeepalive); ok {
					yield(fin, nil)
					return news, true, nil
				}
			}
			continue
		}
		ev := decodeEvent(jobID, se)
		if !last.set || se.id != last.id || ev.Type != last.typ {
			news = true
		}
		*last = streamPos{id: se.id, typ: ev.Type, set: true}
		got = true
		// The first event of a connection is the engine's catch-up (the
		// job's state when it subscribed the client): ask again, in case
		// the job finished before the subscription. The lookup comes
		// before the event is handed over, so that whatever the consumer
		// does on seeing it cannot finish the job first and make a
		// FromStatus event pre-empt the real terminal event.
		var (
			fin     Event
			isFinal bool
		)
		if !ev.Terminal() {
			fin, isFinal = final(&lookedCatchUp)
		}
		if !yield(ev, nil) || ev.Terminal() {
			return news, true, nil
		}
		if isFinal {
			yield(fin, nil)
			return news, true, nil
		}
	}
}

// decodeEvent turns an SSE event into an Event. The data is read leniently:
// a JSON object's job_id, position, response_status (or status_code), body
// and reason (or error) are used when present; an event without an SSE
// event type takes its type from the data's "type", "event" or "status".
func decodeEvent(jobID string, se sseEvent) Event {
	ev := Event{Type: EventType(se.event), JobID: jobID, ID: se.id}
	data := bytes.TrimSpace([]byte(se.data))
	if len(data) > 0 {
		ev.Data = json.RawMessage(data)
	}
	var raw struct {
		Type           json.RawMessage `json:"type"`
		Event          json.RawMessage `json:"event"`
		Status         json.RawMessage `json:"status"`
		JobID          json.RawMessage `json:"job_id"`
		Position       json.RawMessage `json:"position"`
		ResponseStatus json.RawMessage `json:"response_status"`
		StatusCode     json.RawMessage `json:"status_code"`
		Body           json.RawMessage `json:"body"`
		Reason         json.RawMessage `json:"reason"`
		Error          json.RawMessage `json:"error"`
	}
	if len(data) == 0 || data[0] != '{' || json.Unmarshal(data, &raw) != nil {
		if ev.Type == "" || ev.Type == "message" {
			ev.Type = EventType(se.data) // e.g. "data: completed"
			if !knownEvent(ev.Type) {
				ev.Type = "message"
			}
		}
		return ev
	}
	if ev.Type == "" || ev.Type == "message" {
		for _, r := range []json.RawMessage{raw.Type, raw.Event, raw.Status} {
			if t := EventType(scalarString(r)); knownEvent(t) {
				ev.Type = t
				break
			}
		}
		if ev.Type == "" {
			ev.Type = "message"
		}
	}
	if id := scalarString(raw.JobID); id != "" {
		ev.JobID = id
	}
	if n, ok := looseInt(raw.Position); ok {
		ev.Position = n
	}
	if n, ok := looseInt(raw.ResponseStatus); ok {
		ev.ResponseStatus = n
	} else if n, ok := looseInt(raw.StatusCode); ok {
		ev.ResponseStatus = n
	}
	if b := bytes.TrimSpace(raw.Body); len(b) > 0 {
		if b[0] == '"' {
			ev.Body = scalarString(b)
		} else if !bytes.Equal(b, []byte("null")) {
			ev.Body = string(b) // a JSON body sent as an object: keep its text
		}
	}
	ev.Reason = firstNonEmpty(looseString(raw.Reason), looseString(raw.Error))
	ev.Succeeded = ev.Type == EventCompleted && ev.ResponseStatus >= 200 && ev.ResponseStatus <= 299
	return ev
}

func knownEvent(t EventType) bool {
	switch t {
	case EventQueued, EventPosition, EventDispatching, EventCompleted, EventFailed:
		return true
	}
	return false
}

// Limits of the SSE parser: a longer line or a larger event is an error,
// never an unbounded allocation.
const (
	maxSSELine  = 1 << 20
	maxSSEEvent = 4 << 20
)

// errSSETooLarge reports an SSE line or event beyond the parser's limits.
var errSSETooLarge = errors.New("ezthrottle: SSE event too large")

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	event string // the "event" field; "" when absent
	data  string // the "data" lines joined with "\n"
	id    string // the last event ID seen so far
	// keepalive marks a comment line seen between events (no other field
	// is set): the engine is alive but has nothing to say.
	keepalive bool
}

// sseReader parses a text/event-stream (the WHATWG HTML "server-sent
// events" format): lines end in "\n", "\r\n" or "\r"; lines starting with
// ':' are comments (keepalives); "field: value" lines fill the event; an
// empty line dispatches it.
//
// Deviations, deliberate: an event with an event type but no data is
// dispatched too (engines send "event: dispatching" alone), and an event
// cut off by the end of the stream is dispatched rather than dropped (a
// final "completed" event is worth keeping).
type sseReader struct {
	sc     *bufio.Scanner
	lastID string
	done   bool
}

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxSSELine)
	sc.Split(scanSSELines)
	return &sseReader{sc: sc}
}

// scanSSELines is a bufio.SplitFunc for lines ending in "\n", "\r\n" or "\r".
func scanSSELines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		// '\r': a following '\n' belongs to the same line ending.
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // need one more byte to decide
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// next returns the next event, io.EOF at the end of the stream, or the
// read error.
func (r *sseReader) next() (sseEvent, error) {
	if r.done {
		return sseEvent{}, io.EOF
	}
	var (
		event    string
		data     strings.Builder
		hasData  bool
		pending  bool
		size     int
		firstBOM = true
	)
	for r.sc.Scan() {
		line := r.sc.Text()
		if firstBOM {
			line = strings.TrimPrefix(line, "\ufeff")
			firstBOM = false
		}
		if line == "" {
			if pending {
				return sseEvent{event: event, data: data.String(), id: r.lastID}, nil
			}
			continue
		}
		if line[0] == ':' {
			if !pending {
				return sseEvent{keepalive: true}, nil
			}
			continue // comment inside an event
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			event, pending = value, true
		case "data":
			size += len(value) + 1
			if size > maxSSEEvent {
				r.done = true
				return sseEvent{}, errSSETooLarge
			}
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData, pending = true, true
		case "id":
			if !strings.ContainsRune(value, 0) {
				r.lastID = value
			}
		}
		// "retry" (the reconnection delay) and unknown fields are ignored:
		// the client reconnects with its own bounded backoff.
	}
	r.done = true
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return sseEvent{}, errSSETooLarge
		}
		return sseEvent{}, err
	}
	if pending {
		return sseEvent{event: event, data: data.String(), id: r.lastID}, nil
	}
	return sseEvent{}, io.EOF
}
