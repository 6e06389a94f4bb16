package ezthrottle

import (
	"crypto/sha256"
	_ "embed" // the live page
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"
)

// LiveSnapshot is the Transport's live state: every host it tracks, with
// its limits, its throttle state and its recent outcomes, and the recent
// events and forwarded jobs. LiveHandler serves it as HTML and JSON.
type LiveSnapshot struct {
	// Now is when the snapshot was taken (the Transport's clock).
	Now time.Time `json:"now"`
	// Recording is true once the live view is on (EnableLive,
	// LiveHandler); Since is when it started. Counters and events cover
	// that period.
	Recording bool      `json:"recording"`
	Since     time.Time `json:"since,omitzero"`
	// Limiter describes the limiter: "memory" for the in-process
	// MemoryLimiter, whose state (tokens, in flight, queued) is included;
	// otherwise its Go type, and only what this process saw is shown.
	Limiter string `json:"limiter"`
	// Hosts are the tracked hosts, sorted by key.
	Hosts []LiveHost `json:"hosts"`
	// Events are the recent events, oldest first (at most LiveEvents).
	Events []LiveEvent `json:"events"`
	// Forwarded are the recent forwarded jobs, oldest first (at most
	// LiveForwards).
	Forwarded []LiveEvent `json:"forwarded"`
}

// LiveHost is one host in a LiveSnapshot.
type LiveHost struct {
	// Key is the host key (see HostKey).
	Key string `json:"key"`
	// Configured is the limit configured for the host (WithDefaultLimit,
	// WithHostLimit); HasConfigured is false when the host is known only
	// to a shared limiter.
	Configured    Limit `json:"-"`
	HasConfigured bool  `json:"-"`
	// InForce is the limit in force (learned values included); valid when
	// HasState.
	InForce Limit `json:"-"`
	// HasState is true when the limiter's state below is known (the
	// MemoryLimiter).
	HasState bool `json:"has_state"`
	// Tokens is how many requests may start now on pace alone (NaN when
	// unknown); InFlight and Queued count requests holding a slot and
	// waiting for their turn.
	Tokens   float64 `json:"-"`
	InFlight int     `json:"in_flight"`
	Queued   int     `json:"queued"`
	// LearnedRate and LearnedMaxInFlight are the pace and cap the host's
	// headers set last (0: none), with the header that taught them and
	// when.
	LearnedRate          float64   `json:"learned_rate,omitempty"`
	LearnedRateHeader    string    `json:"learned_rate_header,omitempty"`
	LearnedRateAt        time.Time `json:"learned_rate_at,omitzero"`
	LearnedMaxInFlight   int       `json:"learned_max_in_flight,omitempty"`
	LearnedMaxInFlightBy string    `json:"learned_max_in_flight_header,omitempty"`
	LearnedMaxInFlightAt time.Time `json:"learned_max_in_flight_at,omitzero"`
	// PausedUntil is the end of the host's pause, Paused true while it
	// runs; PauseCause says which response header caused it (the last
	// pause this process saw).
	PausedUntil time.Time  `json:"paused_until,omitzero"`
	Paused      bool       `json:"paused"`
	PauseCause  *LiveEvent `json:"pause_cause,omitempty"`
	// Outcome counters since recording started: requests admitted (at
	// once or after a wait), admitted after waiting at least
	// LiveWaitThreshold (WaitTotal and MaxWait over them), refused by the
	// throttle, forwarded as jobs, and failed forwards.
	Admitted      int64         `json:"admitted"`
	Waited        int64         `json:"waited"`
	WaitTotal     time.Duration `json:"wait_total_ns"`
	MaxWait       time.Duration `json:"max_wait_ns"`
	Refused       int64         `json:"refused"`
	Forwarded     int64         `json:"forwarded"`
	ForwardFailed int64         `json:"forward_failed"`
	// LastEvent is the time of the host's last recorded event (zero: none).
	LastEvent time.Time `json:"last_event,omitzero"`
}

// jsonLimit is a Limit in JSON: a rate of null means unpaced.
type jsonLimit struct {
	Rate        *float64 `json:"rate"`
	Burst       int      `json:"burst"`
	MaxInFlight int      `json:"max_in_flight"`
}

func toJSONLimit(l Limit) *jsonLimit {
	j := &jsonLimit{Burst: l.Burst, MaxInFlight: l.MaxInFlight}
	if !math.IsInf(l.Rate, 0) && !math.IsNaN(l.Rate) {
		r := l.Rate
		j.Rate = &r
	}
	return j
}

// MarshalJSON encodes the host with its limits as objects whose rate is
// null when unpaced (JSON has no infinity), and tokens null when unknown.
func (h LiveHost) MarshalJSON() ([]byte, error) {
	type plain LiveHost
	out := struct {
		plain
		Configured *jsonLimit `json:"configured,omitempty"`
		InForce    *jsonLimit `json:"in_force,omitempty"`
		Tokens     *float64   `json:"tokens"`
	}{plain: plain(h)}
	if h.HasConfigured {
		out.Configured = toJSONLimit(h.Configured)
	}
	if h.HasState {
		out.InForce = toJSONLimit(h.InForce)
	}
	if !math.IsNaN(h.Tokens) && !math.IsInf(h.Tokens, 0) {
		tk := math.Round(h.Tokens*100) / 100
		out.Tokens = &tk
	}
	return json.Marshal(out)
}

// LiveSnapshot returns the Transport's live state. The limiter's state is
// read without waiting for any lock a request holds. Counters and events
// are recorded only once the live view is on (EnableLive, LiveHandler).
func (t *Transport) LiveSnapshot() LiveSnapshot {
	lv := t.live.Load()
	now := t.clock.Now()
	snap := LiveSnapshot{Now: now, Limiter: "memory", Hosts: []LiveHost{}, Events: []LiveEvent{}, Forwarded: []LiveEvent{}}
	if t.mem == nil {
		snap.Limiter = strings.TrimPrefix(typeName(t.limiter), "*")
	}
	hosts := map[string]*LiveHost{}
	get := func(key string) *LiveHost {
		h, ok := hosts[key]
		if !ok {
			h = &LiveHost{Key: key, Tokens: math.NaN()}
			hosts[key] = h
		}
		return h
	}
	if t.mem != nil {
		t.mem.rangeHosts(func(lh limiterHost) {
			h := get(lh.key)
			h.HasState = true
			h.InFlight, h.Queued, h.Tokens = lh.stats.InFlight, lh.stats.Waiting, lh.tokens
			if lh.locked {
				h.InForce = Limit{Rate: lh.stats.Rate, Burst: lh.stats.Burst, MaxInFlight: lh.stats.MaxInFlight}
				h.PausedUntil = lh.stats.PausedUntil
			}
		})
	}
	if lv != nil {
		snap.Recording, snap.Since = true, lv.since
		lv.mu.Lock()
		recs := append([]*liveHost(nil), lv.order...)
		lv.mu.Unlock()
		for _, r := range recs {
			h := get(r.key)
			h.Configured, h.HasConfigured = r.limit, true
			h.Admitted, h.Waited, h.Refused = r.admitted.Load(), r.waited.Load(), r.refused.Load()
			h.WaitTotal, h.MaxWait = time.Duration(r.waitNanos.Load()), time.Duration(r.maxWait.Load())
			h.Forwarded, h.ForwardFailed = r.forwarded.Load(), r.fwdFailed.Load()
			if ns := r.lastEvent.Load(); ns != 0 {
				h.LastEvent = lv.timeOf(ns)
			}
			if l := r.learned.Load(); l != nil {
				h.LearnedRate, h.LearnedRateHeader, h.LearnedRateAt = l.rps, l.rpsHeader, l.rpsAt
				h.LearnedMaxInFlight, h.LearnedMaxInFlightBy, h.LearnedMaxInFlightAt = l.mc, l.mcHeader, l.mcAt
			}
			if p := r.pause.Load(); p != nil {
				cp := *p
				h.PauseCause = &cp
				if !h.HasState || h.PausedUntil.Before(p.Until) {
					// What this process saw (a shared limiter may know more).
					h.PausedUntil = p.Until
				}
			}
		}
		snap.Events = lv.events.list()
		snap.Forwarded = lv.forwards.list()
	}
	for _, h := range hosts {
		h.Paused = h.PausedUntil.After(now)
		snap.Hosts = append(snap.Hosts, *h)
	}
	sort.Slice(snap.Hosts, func(i, j int) bool { return snap.Hosts[i].Key < snap.Hosts[j].Key })
	return snap
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

//go:embed livepage/live.html
var livePageHTML string

//go:embed livepage/live.css
var livePageCSS string

//go:embed livepage/live.js
var livePageJS string

// livePage is the live view's page: HTML with its style and script
// inlined (so the handler can be mounted at any path), and the
// Content-Security-Policy that allows that script and style only.
var livePage, livePageCSP = func() (string, string) {
	page := strings.Replace(livePageHTML, "/*STYLE*/", livePageCSS, 1)
	page = strings.Replace(page, "/*SCRIPT*/", livePageJS, 1)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	csp := "default-src 'none'; connect-src 'self'; img-src 'self' data:; style-src " + hash(livePageCSS) +
		"; script-src " + hash(livePageJS) + "; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
	return page, csp
}()

// LiveHandler returns an http.Handler serving the Transport's live state,
// in the spirit of net/http/pprof and expvar: mount it where you want
// (e.g. mux.Handle("/debug/ezthrottle", tr.LiveHandler())), behind your
// own authentication when the service is reachable from outside. It turns
// recording on (EnableLive).
//
// A GET with "?format=json", or an Accept header asking for
// application/json and not for HTML, gets the LiveSnapshot as JSON;
// anything else gets an HTML page that shows the same data and refreshes
// itself every second. Host keys, header values and job IDs are rendered
// as text, never as markup.
func (t *Transport) LiveHandler() http.Handler {
	t.enableLive()
	return http.HandlerFunc(t.serveLive)
}

func (t *Transport) serveLive(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if wantsJSON(r) {
		b, err := json.Marshal(t.LiveSnapshot())
		if err != nil {
			http.Error(w, "encoding the live state: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", livePageCSP)
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write([]byte(livePage))
}

// wantsJSON reports whether the request asks for the JSON form.
func wantsJSON(r *http.Request) bool {
	if f := r.URL.Query().Get("format"); f != "" {
		return f == "json"
	}
	acc := r.Header.Get("Accept")
	return strings.Contains(acc, "application/json") && !strings.Contains(acc, "text/html")
}
