package ezlocal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// EventType names a step in a job's history.
type EventType string

// Event types, in the order they typically happen.
const (
	// EventQueued: the job was accepted.
	EventQueued EventType = "queued"
	// EventScheduled: the job waits for its retry_at time.
	EventScheduled EventType = "scheduled"
	// EventRegionDown: a region the job asked for is down (Region).
	EventRegionDown EventType = "region_down"
	// EventDispatched: the job was dispatched to Region (URL is the
	// destination).
	EventDispatched EventType = "dispatched"
	// EventAttempt: attempt number Attempt in Region got StatusCode (0 with
	// Detail on a transport error).
	EventAttempt EventType = "attempt"
	// EventPaceChanged: the destination's reply changed its host's pace
	// (Detail says how).
	EventPaceChanged EventType = "pace_changed"
	// EventRetried: the status is in retry_codes; the job is retried in the
	// same Region after Delay.
	EventRetried EventType = "retried"
	// EventRerouted: the job moved from FromRegion to Region (a reroute
	// code, or FromRegion was down).
	EventRerouted EventType = "rerouted"
	// EventRaceWon: Region completed first; the other regions are cancelled.
	EventRaceWon EventType = "race_won"
	// EventCancelled: the run in Region was cancelled (race lost, timeout).
	EventCancelled EventType = "cancelled"
	// EventFallbackTriggered: the fallback to URL runs (Detail names the
	// trigger).
	EventFallbackTriggered EventType = "fallback_triggered"
	// EventTimedOut: on_failure_timeout_ms elapsed before the job succeeded.
	EventTimedOut EventType = "timed_out"
	// EventCompleted: the job succeeded (StatusCode, Region).
	EventCompleted EventType = "completed"
	// EventFailed: every execution path failed (StatusCode, Detail).
	EventFailed EventType = "failed"
	// EventChildSpawned: an on_success or on_failure child (Detail) was
	// spawned as job JobID.
	EventChildSpawned EventType = "child_spawned"
	// EventWebhookDelivered: delivery to URL from Region succeeded on
	// attempt Attempt with StatusCode.
	EventWebhookDelivered EventType = "webhook_delivered"
	// EventWebhookRetried: delivery attempt Attempt to URL failed
	// (StatusCode or Detail); it is retried after Delay.
	EventWebhookRetried EventType = "webhook_retried"
	// EventWebhookFailed: delivery to URL failed for good after Attempt
	// attempts.
	EventWebhookFailed EventType = "webhook_failed"
	// EventQuorumReached: enough voting webhooks were delivered.
	EventQuorumReached EventType = "quorum_reached"
	// EventQuorumFailed: deliveries finished without reaching the quorum.
	EventQuorumFailed EventType = "quorum_failed"
)

// Event is one step of a job's history.
type Event struct {
	// Type says what happened; it decides which other fields are set.
	Type EventType
	// Time is the engine clock's time of the event.
	Time time.Time
	// Region is where it happened (or, for EventRerouted, the new region).
	Region string
	// FromRegion is the region a reroute left.
	FromRegion string
	// Attempt numbers request or delivery attempts from 1.
	Attempt int
	// StatusCode is the HTTP status involved (0 when there was no reply).
	StatusCode int
	// URL is the destination, fallback or webhook concerned.
	URL string
	// JobID is a spawned child's job ID.
	JobID string
	// Delay is the wait that follows (retries, retry_at, timeouts).
	Delay time.Duration
	// Detail is a human-readable explanation.
	Detail string
	// Signed reports, on webhook events, that the delivery carried an
	// X-EZThrottle-Signature header (the Cloud customer has a secret).
	Signed bool
}

// String renders the event on one line, for logs and test failures, with
// credentials redacted (URL user info, sensitive query values, ...).
func (ev Event) String() string {
	var b strings.Builder
	b.WriteString(string(ev.Type))
	add := func(k string, v any) { fmt.Fprintf(&b, " %s=%v", k, v) }
	if ev.FromRegion != "" {
		add("from", ev.FromRegion)
	}
	if ev.Region != "" {
		add("region", ev.Region)
	}
	if ev.Attempt != 0 {
		add("attempt", ev.Attempt)
	}
	if ev.StatusCode != 0 {
		add("status", ev.StatusCode)
	}
	if ev.URL != "" {
		add("url", redact.URL(ev.URL)) // user info and secret query values redacted
	}
	if ev.JobID != "" {
		add("job", ev.JobID)
	}
	if ev.Delay != 0 {
		add("delay", ev.Delay)
	}
	if ev.Detail != "" {
		add("detail", fmt.Sprintf("%q", ev.Detail))
	}
	if ev.Signed {
		add("signed", true)
	}
	// The detail may quote a transport error, which quotes the URL.
	return redact.Text(b.String())
}

// Result is what a job's last execution got from its destination.
type Result struct {
	// StatusCode is the destination's status (0 when no reply arrived).
	StatusCode int
	// Header is the destination's reply header.
	Header http.Header
	// Body is the reply body, truncated to the engine's response limit.
	Body string
	// Region is where the request ran.
	Region string
	// URL is the destination (the fallback's when a fallback ran).
	URL string
	// Error describes a transport failure (no reply), if any.
	Error string
}

// JobInfo is a snapshot of a job.
type JobInfo struct {
	// ID is the job ID the submission returned.
	ID string
	// Dialect is the API the job arrived through.
	Dialect ezclient.Dialect
	// Customer is the Cloud customer ID or the self-hosted user_id.
	Customer string
	// IdempotentKey is the key the engine de-duplicates on.
	IdempotentKey string
	// Spec is the job as submitted (self-hosted jobs as the equivalent
	// ezclient.Job with one webhook).
	Spec *ezclient.Job
	// Parent and Role are set on children: the parent job's ID and
	// "on_success" or "on_failure".
	Parent, Role string
	// Status is queued or racing, then in_flight, then completed or failed.
	Status ezclient.JobStatus
	// Result is the final result (nil until the job finished).
	Result *Result
	// Reason explains a failure.
	Reason string
	// Children are the IDs of the jobs this one spawned.
	Children []string
	// QuorumReached reports whether enough voting webhooks were delivered.
	QuorumReached bool
	// Settled reports that execution and every webhook delivery finished.
	Settled bool
	// CreatedAt and FinishedAt are the engine clock's times of submission
	// and of the end of execution (zero while running).
	CreatedAt, FinishedAt time.Time
	// Events is the job's history.
	Events []Event
}

// EventsOf returns the job's events of the given types, in order.
func (ji JobInfo) EventsOf(types ...EventType) []Event {
	var out []Event
	for _, ev := range ji.Events {
		for _, t := range types {
			if ev.Type == t {
				out = append(out, ev)
				break
			}
		}
	}
	return out
}

// Has reports whether the job has an event of type t.
func (ji JobInfo) Has(t EventType) bool { return len(ji.EventsOf(t)) > 0 }

// job is the engine's record of a job; mutable fields are guarded by Engine.mu.
type job struct {
	id        string
	dialect   ezclient.Dialect
	customer  string
	key       string
	spec      *ezclient.Job
	parent    string
	role      string
	initial   ezclient.JobStatus
	createdAt time.Time
	settled   chan struct{}

	status     ezclient.JobStatus
	result     *Result
	reason     string
	children   []string
	quorum     bool
	events     []Event
	finishedAt time.Time
	subs       map[chan sseMsg]struct{}
	dropped    bool // forgotten by WithMaxFinishedJobs
}

func (j *job) info() JobInfo {
	ji := JobInfo{
		ID: j.id, Dialect: j.dialect, Customer: j.customer, IdempotentKey: j.key,
		Spec: j.spec.Clone(), Parent: j.parent, Role: j.role, Status: j.status,
		Reason: j.reason, Children: append([]string(nil), j.children...), QuorumReached: j.quorum,
		CreatedAt: j.createdAt, FinishedAt: j.finishedAt, Events: append([]Event(nil), j.events...),
	}
	select {
	case <-j.settled:
		ji.Settled = true
	default:
	}
	if j.result != nil {
		r := *j.result
		r.Header = j.result.Header.Clone()
		ji.Result = &r
	}
	return ji
}

func (j *job) finished() bool {
	return j.status == ezclient.StatusCompleted || j.status == ezclient.StatusFailed
}

// event appends ev to the job's history.
func (e *Engine) event(j *job, ev Event) {
	ev.Time = e.now()
	e.mu.Lock()
	j.events = append(j.events, ev)
	e.mu.Unlock()
	e.observe(j, ev)
}

// observe logs an event already appended to j's history and calls the hook.
// The event's text (Event.String, which redacts its URL) is formatted only
// when the logger handles debug records: with logging off (the default) an
// event costs no formatting.
func (e *Engine) observe(j *job, ev Event) {
	ctx := context.Background()
	if l := e.cfg.logger; l.Enabled(ctx, slog.LevelDebug) {
		l.LogAttrs(ctx, slog.LevelDebug, "ezlocal: job event", slog.String("job_id", j.id), slog.String("event", ev.String()))
	}
	if e.cfg.eventHook != nil {
		e.cfg.eventHook(j.id, ev)
	}
}

func dedupKey(d ezclient.Dialect, customer, key string) string {
	return d.String() + "\x00" + customer + "\x00" + key
}

// submitResult is what submit reports to the HTTP layer.
type submitResult struct {
	job       *job
	duplicate bool
}

// owner is whose jobs count together against WithAdmissionLimit: a
// dialect's customer (a self-hosted user).
type owner struct {
	dialect  ezclient.Dialect
	customer string
}

// admissionError is returned by submitAdmitted when the owner already has
// limit unfinished jobs.
type admissionError struct{ unfinished, limit int }

func (e *admissionError) Error() string {
	return fmt.Sprintf("%d unfinished jobs (limit %d)", e.unfinished, e.limit)
}

// finishedLocked takes an unfinished job out of the unfinished index;
// e.mu is held. Call it once, when the job leaves the unfinished states.
func (e *Engine) finishedLocked(j *job) {
	o := owner{j.dialect, j.customer}
	if n := e.unfinished[o] - 1; n > 0 {
		e.unfinished[o] = n
	} else {
		delete(e.unfinished, o)
	}
}

// submit registers a job (or finds its duplicate) and starts it.
func (e *Engine) submit(d ezclient.Dialect, customer, key string, spec *ezclient.Job, parent, role string) (submitResult, error) {
	return e.submitAdmitted(d, customer, key, spec, parent, role, 0)
}

// submitAdmitted is submit with an admission limit (0: none): a new job
// whose owner already has limit unfinished jobs is refused with an
// *admissionError; a duplicate is always found. The check and the
// registration happen under one lock, in O(1): the unfinished jobs are
// counted per owner as they start and finish (e.unfinished), not by a scan
// of every job.
func (e *Engine) submitAdmitted(d ezclient.Dialect, customer, key string, spec *ezclient.Job, parent, role string, limit int) (submitResult, error) {
	now := e.now()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return submitResult{}, ErrClosed
	}
	dk := dedupKey(d, customer, key)
	if old, ok := e.byKey[dk]; ok {
		e.mu.Unlock()
		return submitResult{job: old, duplicate: true}, nil
	}
	o := owner{d, customer}
	if n := e.unfinished[o]; limit > 0 && n >= limit {
		e.mu.Unlock()
		return submitResult{}, &admissionError{unfinished: n, limit: limit}
	}
	e.unfinished[o]++ // the job starts unfinished (queued or racing)
	e.seq++
	j := &job{
		dialect: d, customer: customer, key: key, spec: spec, parent: parent, role: role,
		createdAt: now, settled: make(chan struct{}), subs: map[chan sseMsg]struct{}{},
		initial: ezclient.StatusQueued,
	}
	if d == ezclient.DialectCloud {
		j.id = fmt.Sprintf("job_%d_%d", now.UnixMilli(), e.seq)
	} else {
		j.id = randomHex(16)
	}
	if len(spec.Regions) > 1 && (spec.ExecutionMode == "" || spec.ExecutionMode == ezclient.ExecutionRace) {
		j.initial = ezclient.StatusRacing
	}
	j.status = j.initial
	j.events = []Event{{Type: EventQueued, Time: now, URL: spec.URL}}
	e.jobs[j.id] = j
	e.order = append(e.order, j)
	e.byKey[dk] = j
	e.wg.Add(1)
	queued := j.events[0]
	e.mu.Unlock()
	e.observe(j, queued)
	go func() {
		defer e.wg.Done()
		e.run(j)
	}()
	return submitResult{job: j}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
