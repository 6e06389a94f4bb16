package ezlocal

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// selfHostedJob is the body of POST /jobs (protocol §2).
type selfHostedJob struct {
	UserID        string            `json:"user_id"`
	IdempotentKey string            `json:"idempotent_key"`
	URL           string            `json:"url"`
	Method        string            `json:"method"`
	Headers       map[string]string `json:"headers"`
	Body          string            `json:"body"`
	WebhookURL    string            `json:"webhook_url"`
}

// decodeSelfHostedJob parses and checks a POST /jobs body; the error text
// is the reply's "error".
func decodeSelfHostedJob(raw []byte) (*selfHostedJob, error) {
	var sj selfHostedJob
	if err := json.Unmarshal(raw, &sj); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	for _, f := range []struct{ name, v string }{
		{"user_id", sj.UserID}, {"idempotent_key", sj.IdempotentKey}, {"url", sj.URL},
		{"method", sj.Method}, {"webhook_url", sj.WebhookURL},
	} {
		if f.v == "" {
			return nil, fmt.Errorf("missing required field: %s", f.name)
		}
	}
	for _, err := range []error{
		ezclient.ValidateURL("url", sj.URL),
		ezclient.ValidateMethod("method", sj.Method),
		ezclient.ValidateURL("webhook_url", sj.WebhookURL),
	} {
		if err != nil {
			return nil, err
		}
	}
	spec := sj.spec()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return &sj, nil
}

// spec is the job as an ezclient.Job with its one webhook.
func (sj *selfHostedJob) spec() *ezclient.Job {
	return &ezclient.Job{
		URL: sj.URL, Method: sj.Method, Headers: sj.Headers, Body: sj.Body,
		Webhooks: []ezclient.Webhook{{URL: sj.WebhookURL}}, IdempotentKey: sj.IdempotentKey,
	}
}

// handleSelfSubmit is POST /jobs.
func (e *Engine) handleSelfSubmit(w http.ResponseWriter, r *http.Request) {
	raw, tooBig, err := readLimited(w, r, e.cfg.maxJob)
	if tooBig {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "request body too large", "limit_bytes": e.cfg.maxJob})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "reading the body: " + err.Error()})
		return
	}
	sj, err := decodeSelfHostedJob(raw)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return
	}
	sr, err := e.submitAdmitted(ezclient.DialectSelfHosted, sj.UserID, sj.IdempotentKey, sj.spec(), "", "", e.cfg.admissionLimit)
	var ae *admissionError
	if errors.As(err, &ae) {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(e.cfg.admissionRetryIn.Seconds())), 10))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{
			"error":        fmt.Sprintf("admission rejected: user %q has %d unfinished jobs (limit %d)", sj.UserID, ae.unfinished, ae.limit),
			"limit_reason": "user_queue_full",
		})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error()})
		return
	}
	if sr.duplicate {
		writeJSON(w, http.StatusOK, map[string]any{"job_id": sr.job.id, "status": "queued", "duplicate": true})
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"job_id": sr.job.id, "status": "queued"})
}

// wireStatus is the status GET /jobs/{id} reports.
func wireStatus(s ezclient.JobStatus) ezclient.JobStatus {
	if s == ezclient.StatusRacing {
		return ezclient.StatusQueued
	}
	return s
}

// handleSelfStatus is GET /jobs/{id}.
func (e *Engine) handleSelfStatus(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	j, ok := e.jobs[r.PathValue("id")]
	var body map[string]any
	if ok {
		method := j.spec.Method
		if method == "" {
			method = http.MethodGet
		}
		body = map[string]any{
			"job_id": j.id, "status": wireStatus(j.status), "url": j.spec.URL, "method": method,
			"created_at": j.createdAt.UTC().Format(time.RFC3339Nano),
		}
	}
	e.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "job not found"})
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// handleHealth is GET /health.
func (e *Engine) handleHealth(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	n := len(e.jobs)
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "engine": "ezlocal", "version": ezclient.Version, "jobs": n, "regions": e.Regions()})
}

// sseMsg is one Server-Sent Event for a job's stream.
type sseMsg struct {
	event    string
	data     any
	terminal bool
}

// publishLocked sends msg to the job's stream subscribers; e.mu is held.
// A subscriber too slow to keep up loses the message rather than block jobs,
// except the terminal one: the oldest message makes room for it (only
// publishLocked sends, under e.mu, so the room stays free).
func (e *Engine) publishLocked(j *job, msg sseMsg) {
	for ch := range j.subs {
		select {
		case ch <- msg:
		default:
			if msg.terminal {
				select {
				case <-ch:
				default:
				}
				select {
				case ch <- msg:
				default:
				}
			}
		}
	}
}

// terminalMsg is the stream's completed or failed event; e.mu is held.
func terminalMsg(j *job) sseMsg {
	res := j.result
	if res == nil {
		res = &Result{}
	}
	if j.status == ezclient.StatusCompleted {
		return sseMsg{event: "completed", terminal: true, data: map[string]any{
			"job_id": j.id, "response_status": res.StatusCode, "body": res.Body}}
	}
	data := map[string]any{"job_id": j.id, "reason": j.reason}
	if res.StatusCode != 0 {
		data["response_status"] = res.StatusCode
	}
	return sseMsg{event: "failed", terminal: true, data: data}
}

// handleStream is GET /jobs/{id}/stream: queued, position, dispatching, then
// completed or failed, with keepalive comments. Like the real engines, the
// stream starts with a catch-up event (queued and position for a queued
// job, dispatching for one in flight, and queued for a job that already
// finished), and a client connecting after the job finished gets no
// terminal event: the stream stays open with keepalives only, and the
// client must fall back to GET /jobs/{id}. There is no opening comment
// (a client must not rely on a keepalive to learn that the stream is live).
func (e *Engine) handleStream(w http.ResponseWriter, r *http.Request) {
	if !e.track() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": ErrClosed.Error()})
		return
	}
	defer e.wg.Done()
	id := r.PathValue("id")
	sub := make(chan sseMsg, 32)
	var initial []sseMsg
	e.mu.Lock()
	j, ok := e.jobs[id]
	if ok {
		switch j.status {
		case ezclient.StatusQueued, ezclient.StatusRacing:
			pos := 0
			for _, o := range e.order {
				if o == j {
					break
				}
				if o.status == ezclient.StatusQueued || o.status == ezclient.StatusRacing {
					pos++
				}
			}
			initial = append(initial,
				sseMsg{event: "queued", data: map[string]any{"job_id": j.id}},
				sseMsg{event: "position", data: map[string]any{"position": pos}})
		case ezclient.StatusInFlight:
			initial = append(initial, sseMsg{event: "dispatching", data: map[string]any{"job_id": j.id}})
		default:
			// A finished job: the real engines' catch-up is a plain
			// "queued", and no terminal event follows.
			initial = append(initial, sseMsg{event: "queued", data: map[string]any{"job_id": j.id}})
		}
		j.subs[sub] = struct{}{}
	}
	e.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "job not found"})
		return
	}
	defer func() {
		e.mu.Lock()
		delete(j.subs, sub)
		e.mu.Unlock()
	}()
	flusher, _ := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	w.WriteHeader(http.StatusOK)
	write := func(m sseMsg) bool {
		b, _ := marshalJSON(m.data)
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.event, b)
		if flusher != nil {
			flusher.Flush()
		}
		return err == nil
	}
	for _, m := range initial {
		if !write(m) {
			return
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	tick := time.NewTicker(e.cfg.keepAlive)
	defer tick.Stop()
	for {
		select {
		case m := <-sub:
			if !write(m) || m.terminal {
				return
			}
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		case <-r.Context().Done():
			return
		case <-e.ctx.Done():
			return
		}
	}
}
