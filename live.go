package ezthrottle

import (
	"errors"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The live view: what the Transport did recently, per host, for a person
// debugging a throttle (LiveHandler) or a program (LiveSnapshot).
//
// Recording is off until LiveHandler (or EnableLive) is first called; the
// hot path then pays one nil check. Once on, a request adds two reads of the
// monotonic clock and one atomic add on its host's record: no lock and no
// allocation. Only the non-trivial outcomes (a wait, a refusal, a forward, a
// failed forward, a learned limit or pause) write an event into a
// fixed-size ring, lock-free.

// Sizes of the live view's rings and tables.
const (
	// LiveEvents is how many recent events the live view keeps.
	LiveEvents = 256
	// LiveForwards is how many recent forwarded jobs the live view keeps.
	LiveForwards = 100
	// LiveHosts bounds the hosts the live view tracks; beyond, the least
	// recently added host is dropped.
	LiveHosts = 1024
	// LiveWaitThreshold is the shortest turn that counts as a wait.
	LiveWaitThreshold = time.Millisecond
)

// LiveEventKind names an outcome recorded by the live view.
type LiveEventKind string

// Kinds of live events.
const (
	// LiveWaited: the request got its turn after waiting Wait.
	LiveWaited LiveEventKind = "waited"
	// LiveRefused: the throttle refused the request (Detail says why).
	LiveRefused LiveEventKind = "refused"
	// LiveForwarded: the request became job JobID (Reason, Status).
	LiveForwarded LiveEventKind = "forwarded"
	// LiveForwardFailed: forwarding was attempted and failed (Detail); the
	// caller got the original outcome.
	LiveForwardFailed LiveEventKind = "forward_failed"
	// LiveLearned: a response header changed the host's limits (Header,
	// Detail).
	LiveLearned LiveEventKind = "learned"
	// LivePaused: a response paused the host until Until (Header, Detail).
	LivePaused LiveEventKind = "paused"
)

// LiveEvent is one recorded outcome.
type LiveEvent struct {
	// Seq numbers the events of a Transport from 1.
	Seq uint64 `json:"seq"`
	// Time is when it happened (the Transport's clock).
	Time time.Time `json:"time"`
	// Host is the host key.
	Host string `json:"host"`
	// Kind says what happened.
	Kind LiveEventKind `json:"kind"`
	// Wait is the throttle wait (waited, refused).
	Wait time.Duration `json:"wait_ns,omitempty"`
	// Reason is why a request was forwarded (or failed to be).
	Reason ForwardReason `json:"reason,omitempty"`
	// Status is the upstream status involved (0 when none).
	Status int `json:"status,omitempty"`
	// JobID and IdempotentKey identify a forwarded job.
	JobID         string `json:"job_id,omitempty"`
	IdempotentKey string `json:"idempotent_key,omitempty"`
	// Header names the response header that taught a limit or a pause.
	Header string `json:"header,omitempty"`
	// Until is the end of a pause.
	Until time.Time `json:"until,omitzero"`
	// Detail is a human-readable explanation.
	Detail string `json:"detail,omitempty"`
}

// liveState is the Transport's recorder (nil until enabled).
type liveState struct {
	clock Clock
	epoch time.Time // clock reading at enabling; waits are measured from it
	sys   bool      // clock is the system clock: nanos reads the monotonic clock only
	since time.Time

	mu    sync.Mutex // guards hosts and order (new hosts, snapshots)
	hosts map[string]*liveHost
	order []*liveHost

	events   liveRing
	forwards liveRing
}

// liveHost is the record of one host: counters written with atomics on the
// request path, and the latest learned limits and pause.
type liveHost struct {
	key       string
	limit     Limit
	admitted  atomic.Int64
	waited    atomic.Int64
	waitNanos atomic.Int64
	maxWait   atomic.Int64
	refused   atomic.Int64
	forwarded atomic.Int64
	fwdFailed atomic.Int64
	lastEvent atomic.Int64 // nanos since epoch of the last event; 0: none
	dropped   atomic.Bool  // removed from the table (LiveHosts): a new record replaces it
	learned   atomic.Pointer[liveLearned]
	pause     atomic.Pointer[LiveEvent]
}

// liveLearned is the latest pace and cap a host's headers set.
type liveLearned struct {
	rps       float64
	rpsHeader string
	rpsAt     time.Time
	mc        int
	mcHeader  string
	mcAt      time.Time
}

// liveRing is a fixed-size ring of events; writers never lock.
type liveRing struct {
	seq   atomic.Uint64
	slots []atomic.Pointer[LiveEvent]
}

func (r *liveRing) add(ev *LiveEvent) {
	n := r.seq.Add(1)
	ev.Seq = n
	r.slots[(n-1)%uint64(len(r.slots))].Store(ev)
}

// list returns the events held, oldest first.
func (r *liveRing) list() []LiveEvent {
	out := make([]LiveEvent, 0, len(r.slots))
	for i := range r.slots {
		if ev := r.slots[i].Load(); ev != nil {
			out = append(out, *ev)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

func newLiveState(clk Clock) *liveState {
	lv := &liveState{clock: clk, hosts: map[string]*liveHost{}}
	_, lv.sys = clk.(systemClock)
	lv.epoch = clk.Now()
	lv.since = lv.epoch
	lv.events.slots = make([]atomic.Pointer[LiveEvent], LiveEvents)
	lv.forwards.slots = make([]atomic.Pointer[LiveEvent], LiveForwards)
	return lv
}

// nanos is the time since epoch: with the system clock one read of the
// monotonic clock.
func (lv *liveState) nanos() int64 {
	if lv.sys {
		return int64(time.Since(lv.epoch))
	}
	return int64(lv.clock.Now().Sub(lv.epoch))
}

func (lv *liveState) timeOf(ns int64) time.Time { return lv.epoch.Add(time.Duration(ns)) }

// enableLive turns recording on (once) and returns the recorder.
func (t *Transport) enableLive() *liveState {
	if lv := t.live.Load(); lv != nil {
		return lv
	}
	t.live.CompareAndSwap(nil, newLiveState(t.clock))
	return t.live.Load()
}

// EnableLive starts recording the live view (LiveSnapshot, LiveHandler)
// now, if it is not on yet. LiveHandler calls it; call it yourself to
// record from start-up when the handler is made later.
func (t *Transport) EnableLive() { t.enableLive() }

// hostOf returns the record of hi's host, creating it on first use (the
// request path then takes the table's lock once per host).
func (lv *liveState) hostOf(hi *hostInfo) *liveHost {
	if lh := hi.live.Load(); lh != nil && !lh.dropped.Load() {
		return lh
	}
	lh := lv.host(hi.key, hi.limit)
	hi.live.Store(lh)
	return lh
}

// host returns the record of key, creating it.
func (lv *liveState) host(key string, lim Limit) *liveHost {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lh, ok := lv.hosts[key]; ok {
		return lh
	}
	if len(lv.order) >= LiveHosts {
		old := lv.order[0]
		lv.order = lv.order[1:]
		delete(lv.hosts, old.key)
		old.dropped.Store(true)
	}
	lh := &liveHost{key: key, limit: lim}
	lv.hosts[key] = lh
	lv.order = append(lv.order, lh)
	return lh
}

// lookup returns the record of key, or nil.
func (lv *liveState) lookup(key string) *liveHost {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.hosts[key]
}

func (lv *liveState) event(lh *liveHost, ev *LiveEvent, ns int64) {
	ev.Time = lv.timeOf(ns)
	if lh != nil {
		lh.lastEvent.Store(ns)
	}
	lv.events.add(ev)
}

// acquired records a turn: admitted after wait, or refused with err.
func (lv *liveState) acquired(hi *hostInfo, wait int64, ns int64, err error) {
	lh := lv.hostOf(hi)
	if err != nil {
		lh.refused.Add(1)
		lv.event(lh, &LiveEvent{Host: hi.key, Kind: LiveRefused, Wait: time.Duration(wait), Detail: err.Error()}, ns)
		return
	}
	lh.admitted.Add(1)
	if wait < int64(LiveWaitThreshold) {
		return
	}
	lh.waited.Add(1)
	lh.waitNanos.Add(wait)
	for {
		m := lh.maxWait.Load()
		if wait <= m || lh.maxWait.CompareAndSwap(m, wait) {
			break
		}
	}
	lv.event(lh, &LiveEvent{Host: hi.key, Kind: LiveWaited, Wait: time.Duration(wait)}, ns)
}

// forwarded records a job made of a request.
func (lv *liveState) forwarded(info *ForwardInfo) {
	ns := lv.nanos()
	lh := lv.lookup(info.Host)
	if lh != nil {
		lh.forwarded.Add(1)
	}
	ev := &LiveEvent{Host: info.Host, Kind: LiveForwarded, Reason: info.Reason, Status: info.UpstreamStatus}
	ev.JobID, ev.IdempotentKey = info.Submission.JobID, info.Submission.IdempotentKey
	lv.event(lh, ev, ns)
	cp := *ev
	lv.forwards.add(&cp)
}

// forwardFailed records a failed forward.
func (lv *liveState) forwardFailed(err error) {
	ns := lv.nanos()
	ev := &LiveEvent{Kind: LiveForwardFailed, Detail: err.Error()}
	var fe *ForwardFailedError
	if errors.As(err, &fe) {
		ev.Host, ev.Reason = fe.Host, fe.Reason
	}
	lh := lv.lookup(ev.Host)
	if lh != nil {
		lh.fwdFailed.Add(1)
	}
	lv.event(lh, ev, ns)
}

// learned records the limits and pause a response taught. Nothing is
// written when a pace or cap repeats the one recorded (APIs send their
// headers on every response).
func (lv *liveState) learned(key string, v *signalHeaders, s Signals, status int) {
	if !s.HasRPS && !s.HasMaxConcurrent && s.PauseUntil.IsZero() {
		return
	}
	lh := lv.lookup(key)
	if lh == nil {
		return
	}
	old := lh.learned.Load()
	changedRPS := s.HasRPS && (old == nil || old.rps != s.RPS)
	changedMC := s.HasMaxConcurrent && (old == nil || old.mc != s.MaxConcurrent)
	if !changedRPS && !changedMC && s.PauseUntil.IsZero() {
		return
	}
	ns := lv.nanos()
	now := lv.timeOf(ns)
	if changedRPS || changedMC {
		nl := &liveLearned{}
		if old != nil {
			*nl = *old
		}
		if changedRPS {
			nl.rps, nl.rpsAt = s.RPS, now
			nl.rpsHeader = HeaderEZThrottleRPS
			if _, ok := ParseRate(firstOf(v, hAqRPS)); ok {
				nl.rpsHeader = HeaderAqueductRPS
			}
			lv.event(lh, &LiveEvent{Host: key, Kind: LiveLearned, Header: nl.rpsHeader, Status: status,
				Detail: "pace " + formatRate(s.RPS) + " req/s"}, ns)
		}
		if changedMC {
			nl.mc, nl.mcAt = s.MaxConcurrent, now
			nl.mcHeader = HeaderEZThrottleMaxConcurrent
			if _, ok := ParseConcurrency(firstOf(v, hAqMC)); ok {
				nl.mcHeader = HeaderAqueductMaxConcurrent
			}
			lv.event(lh, &LiveEvent{Host: key, Kind: LiveLearned, Header: nl.mcHeader, Status: status,
				Detail: "at most " + itoa(s.MaxConcurrent) + " in flight"}, ns)
		}
		lh.learned.Store(nl)
	}
	if !s.PauseUntil.IsZero() {
		ev := &LiveEvent{Host: key, Kind: LivePaused, Status: status, Until: s.PauseUntil}
		retryPause := s.HasRetryAfter && (status == 429 || status == 503)
		if s.HasQuota && s.Quota.Exhausted() && (!retryPause || s.Quota.Reset.After(now.Add(s.RetryAfter))) {
			ev.Header = s.Quota.Source
			ev.Detail = "quota exhausted (" + s.Quota.Source + "), resets " + s.Quota.Reset.UTC().Format(time.RFC3339)
		} else {
			ev.Header = "Retry-After"
			ev.Detail = "Retry-After: " + truncate(firstOf(v, hRetryAfter), 64) + " on a " + itoa(status)
		}
		lv.event(lh, ev, ns) // sets ev's time and number: publish it after
		lh.pause.Store(ev)
	}
}

func firstOf(v *signalHeaders, kind int) string {
	if vs := v[kind]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func itoa(n int) string { return strconv.Itoa(n) }

func formatRate(r float64) string {
	if math.IsInf(r, 1) {
		return "unlimited"
	}
	return strconv.FormatFloat(r, 'g', 4, 64)
}
