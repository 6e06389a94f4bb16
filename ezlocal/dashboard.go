package ezlocal

import (
	"embed"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// The dashboard: a page for a person at the engine's root URL (GET / and
// /ui/...), fed by two JSON endpoints under /ui/api/. It is plain HTML, CSS
// and JavaScript embedded in the binary; every value that came from a job
// (URLs, headers, bodies, webhook answers) is inserted into the page as
// text, never as markup, and the Content-Security-Policy allows only the
// dashboard's own script and style. The API routes are unchanged: the
// dashboard only adds GET / (which was a 404) and the /ui/ prefix.

//go:embed dashboard/index.html dashboard/app.js dashboard/app.css
var dashboardFS embed.FS

// dashboardCSP allows the dashboard's own files and nothing else.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'self'"

// Bounds of what the dashboard sends to the page.
const (
	dashMaxJobs = 500      // jobs in the list (newest first)
	dashMaxBody = 16 << 10 // bytes of a request or reply body shown
)

// dashboardRoutes adds the dashboard's routes to the engine's mux.
func (e *Engine) dashboardRoutes(mux *http.ServeMux) {
	page := dashboardFile("dashboard/index.html", "text/html; charset=utf-8")
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /ui/{$}", page)
	mux.Handle("GET /ui/jobs/{id}", page)
	mux.Handle("GET /ui/app.js", dashboardFile("dashboard/app.js", "text/javascript; charset=utf-8"))
	mux.Handle("GET /ui/app.css", dashboardFile("dashboard/app.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /ui/api/overview", e.handleDashOverview)
	mux.HandleFunc("GET /ui/api/jobs/{id}", e.handleDashJob)
}

// dashboardFile serves one embedded file with its content type.
func dashboardFile(name, ctype string) http.Handler {
	b, err := dashboardFS.ReadFile(name)
	if err != nil {
		panic("ezlocal: dashboard file missing: " + name) // embedded at build time
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(b)
	})
}

func writeDashJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	writeJSON(w, status, v)
}

// dashJob is a job in the dashboard's list.
type dashJob struct {
	ID         string             `json:"id"`
	Status     ezclient.JobStatus `json:"status"`
	Dialect    string             `json:"dialect"`
	Method     string             `json:"method"`
	URL        string             `json:"url"`
	Parent     string             `json:"parent,omitempty"`
	Role       string             `json:"role,omitempty"`
	CreatedAt  time.Time          `json:"created_at"`
	FinishedAt time.Time          `json:"finished_at,omitzero"`
	Attempts   int                `json:"attempts"`
	Regions    []string           `json:"regions"`
	LastStatus int                `json:"last_status,omitempty"`
	Webhooks   int                `json:"webhooks"`
	Delivered  int                `json:"delivered"`
	Settled    bool               `json:"settled"`
	Reason     string             `json:"reason,omitempty"`
}

// dashRegion is a region of the engine.
type dashRegion struct {
	Name      string `json:"name"`
	Down      bool   `json:"down"`
	LatencyMS int64  `json:"latency_ms"`
}

// dashDest is a destination host's pace and load.
type dashDest struct {
	Host          string     `json:"host"`
	RPS           float64    `json:"rps"`
	MaxConcurrent int        `json:"max_concurrent"`
	InFlight      int        `json:"in_flight"`
	Queued        int        `json:"queued"`
	Lanes         []dashLane `json:"lanes"`
}

type dashLane struct {
	Region   string `json:"region"`
	InFlight int    `json:"in_flight"`
	// NextInMS is how long until the lane's next start (0: now).
	NextInMS int64 `json:"next_in_ms"`
}

type dashOverview struct {
	Now          time.Time                  `json:"now"`
	URL          string                     `json:"url"`
	Regions      []dashRegion               `json:"regions"`
	Counts       map[ezclient.JobStatus]int `json:"counts"`
	Total        int                        `json:"total"`
	Shown        int                        `json:"shown"`
	Jobs         []dashJob                  `json:"jobs"`
	Destinations []dashDest                 `json:"destinations"`
}

// handleDashOverview serves GET /ui/api/overview[?status=...]: counts by
// status, the newest jobs (filtered by status), the regions and every
// destination's pace and queue.
func (e *Engine) handleDashOverview(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("status")
	now := e.now()
	ov := dashOverview{Now: now, URL: e.url, Counts: map[ezclient.JobStatus]int{}, Jobs: []dashJob{},
		Regions: []dashRegion{}, Destinations: []dashDest{}}
	for _, st := range []ezclient.JobStatus{ezclient.StatusQueued, ezclient.StatusRacing, ezclient.StatusInFlight, ezclient.StatusCompleted, ezclient.StatusFailed} {
		ov.Counts[st] = 0
	}
	queued := map[string]int{} // destination host -> jobs waiting for a turn

	// One pass under the engine's lock, reading the jobs in place (no
	// clone of every job per poll: the page may stay open during a load
	// test of thousands of jobs).
	e.mu.Lock()
	ov.Total = len(e.order)
	for i := len(e.order) - 1; i >= 0; i-- {
		ji := e.order[i].view()
		ov.Counts[ji.Status]++
		if host, ok := waitingAt(ji); ok {
			queued[host]++
		}
		if filter != "" && string(ji.Status) != filter {
			continue
		}
		if len(ov.Jobs) < dashMaxJobs {
			ov.Jobs = append(ov.Jobs, summarize(ji))
		}
	}
	ov.Shown = len(ov.Jobs)
	for _, name := range e.regionList {
		rc := e.regions[name]
		ov.Regions = append(ov.Regions, dashRegion{Name: name, Down: rc.Down, LatencyMS: rc.Latency.Milliseconds()})
	}
	for host, p := range e.pacers {
		d := destLocked(host, p, now)
		// A job whose request holds a slot has not recorded its attempt
		// yet either: the queue is what is left.
		d.Queued = max(0, queued[host]-d.InFlight)
		delete(queued, host)
		ov.Destinations = append(ov.Destinations, d)
	}
	rps, conc := e.cfg.rps, e.cfg.maxConc
	e.mu.Unlock()
	for host, n := range queued { // waiting for a host not called yet
		ov.Destinations = append(ov.Destinations, dashDest{Host: host, RPS: rps, MaxConcurrent: conc, Queued: n, Lanes: []dashLane{}})
	}
	sort.Slice(ov.Destinations, func(i, j int) bool { return ov.Destinations[i].Host < ov.Destinations[j].Host })
	writeDashJSON(w, http.StatusOK, ov)
}

// destLocked reads one destination's pace and lanes (Engine.mu held). It
// is the dashboard's only reader of the pacer's fields.
func destLocked(host string, p *pacer, now time.Time) dashDest {
	d := dashDest{Host: host, RPS: p.rps, MaxConcurrent: p.maxConc, Lanes: []dashLane{}}
	for region, l := range p.lanes {
		ln := dashLane{Region: region, InFlight: l.inflight}
		if l.next.After(now) {
			ln.NextInMS = int64(math.Ceil(float64(l.next.Sub(now)) / float64(time.Millisecond)))
		}
		d.InFlight += l.inflight
		d.Lanes = append(d.Lanes, ln)
	}
	sort.Slice(d.Lanes, func(i, j int) bool { return d.Lanes[i].Region < d.Lanes[j].Region })
	return d
}

// view is a read-only JobInfo of j sharing its memory (Engine.mu held; use
// it before unlocking, and never modify it).
func (j *job) view() JobInfo {
	ji := JobInfo{ID: j.id, Dialect: j.dialect, Spec: j.spec, Parent: j.parent, Role: j.role, Status: j.status,
		Reason: j.reason, CreatedAt: j.createdAt, FinishedAt: j.finishedAt, Events: j.events, Result: j.result}
	select {
	case <-j.settled:
		ji.Settled = true
	default:
	}
	return ji
}

// waitingAt reports the destination host a job is waiting to call or
// calling: it is not finished and its last step was a queueing, a
// dispatch, a retry or a reroute (its attempt is recorded when the reply
// comes).
func waitingAt(ji JobInfo) (string, bool) {
	if ji.Status == ezclient.StatusCompleted || ji.Status == ezclient.StatusFailed || len(ji.Events) == 0 {
		return "", false
	}
	target := ji.Spec.URL
	for _, ev := range ji.Events {
		if ev.Type == EventDispatched && ev.URL != "" {
			target = ev.URL
		}
	}
	switch ji.Events[len(ji.Events)-1].Type {
	case EventQueued, EventDispatched, EventRetried, EventRerouted, EventScheduled:
	default:
		return "", false
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return "", false
	}
	return u.Host, true
}

func summarize(ji JobInfo) dashJob {
	d := dashJob{
		ID: ji.ID, Status: ji.Status, Dialect: ji.Dialect.String(), Method: ji.Spec.Method, URL: ji.Spec.URL,
		Parent: ji.Parent, Role: ji.Role, CreatedAt: ji.CreatedAt, FinishedAt: ji.FinishedAt,
		Regions: []string{}, Webhooks: len(ji.Spec.Webhooks), Settled: ji.Settled, Reason: ji.Reason,
	}
	if d.Method == "" {
		d.Method = http.MethodGet
	}
	seen := map[string]bool{}
	for _, ev := range ji.Events {
		switch ev.Type {
		case EventAttempt:
			d.Attempts++
			d.LastStatus = ev.StatusCode
			if ev.Region != "" && !seen[ev.Region] {
				seen[ev.Region] = true
				d.Regions = append(d.Regions, ev.Region)
			}
		case EventWebhookDelivered:
			d.Delivered++
		}
	}
	if ji.Result != nil && ji.Result.StatusCode != 0 {
		d.LastStatus = ji.Result.StatusCode
	}
	return d
}

// dashEvent is an event in JSON.
type dashEvent struct {
	Type       EventType `json:"type"`
	Time       time.Time `json:"time"`
	Region     string    `json:"region,omitempty"`
	FromRegion string    `json:"from_region,omitempty"`
	Attempt    int       `json:"attempt,omitempty"`
	StatusCode int       `json:"status,omitempty"`
	URL        string    `json:"url,omitempty"`
	JobID      string    `json:"job_id,omitempty"`
	DelayMS    int64     `json:"delay_ms,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	Signed     bool      `json:"signed,omitempty"`
}

func toDashEvent(ev Event) dashEvent {
	return dashEvent{Type: ev.Type, Time: ev.Time, Region: ev.Region, FromRegion: ev.FromRegion, Attempt: ev.Attempt,
		StatusCode: ev.StatusCode, URL: ev.URL, JobID: ev.JobID, DelayMS: ev.Delay.Milliseconds(), Detail: ev.Detail, Signed: ev.Signed}
}

// dashDelivery is one webhook with its delivery attempts.
type dashDelivery struct {
	URL      string      `json:"url"`
	Votes    bool        `json:"votes"`
	Regions  []string    `json:"regions,omitempty"`
	Outcome  string      `json:"outcome"` // pending, delivered, failed
	Attempts []dashEvent `json:"attempts"`
}

type dashQuorum struct {
	Required  int  `json:"required"`
	Voting    int  `json:"voting"`
	Delivered int  `json:"delivered"`
	Reached   bool `json:"reached"`
	Failed    bool `json:"failed"`
}

type dashSpec struct {
	Method        string            `json:"method"`
	URL           string            `json:"url"`
	Headers       map[string]string `json:"headers"`
	Body          string            `json:"body"`
	BodyTruncated bool              `json:"body_truncated,omitempty"`
	Metadata      map[string]any    `json:"metadata,omitempty"`
	Regions       []string          `json:"regions,omitempty"`
	RegionPolicy  string            `json:"region_policy,omitempty"`
	ExecutionMode string            `json:"execution_mode,omitempty"`
	RetryPolicy   any               `json:"retry_policy,omitempty"`
	Fallback      string            `json:"fallback,omitempty"`
	OnSuccess     string            `json:"on_success,omitempty"`
	OnFailure     string            `json:"on_failure,omitempty"`
}

type dashResult struct {
	StatusCode    int               `json:"status"`
	Headers       map[string]string `json:"headers"`
	Body          string            `json:"body"`
	BodyTruncated bool              `json:"body_truncated,omitempty"`
	Region        string            `json:"region,omitempty"`
	URL           string            `json:"url,omitempty"`
	Error         string            `json:"error,omitempty"`
}

type dashChild struct {
	ID     string             `json:"id"`
	Role   string             `json:"role,omitempty"`
	Status ezclient.JobStatus `json:"status"`
}

type dashJobDetail struct {
	dashJob
	Customer      string         `json:"customer"`
	IdempotentKey string         `json:"idempotent_key"`
	Spec          dashSpec       `json:"spec"`
	Result        *dashResult    `json:"result,omitempty"`
	Events        []dashEvent    `json:"events"`
	Webhooks      []dashDelivery `json:"webhook_deliveries"`
	Quorum        *dashQuorum    `json:"quorum,omitempty"`
	Children      []dashChild    `json:"children"`
}

// handleDashJob serves GET /ui/api/jobs/{id}: one job in full, with its
// secrets redacted (the dashboard needs no API key).
func (e *Engine) handleDashJob(w http.ResponseWriter, r *http.Request) {
	ji, ok := e.Job(r.PathValue("id"))
	if !ok {
		writeDashJSON(w, http.StatusNotFound, map[string]string{"error": "job not found"})
		return
	}
	d := dashJobDetail{dashJob: summarize(ji), Customer: ji.Customer, IdempotentKey: ji.IdempotentKey,
		Events: []dashEvent{}, Webhooks: []dashDelivery{}, Children: []dashChild{}}
	sp := ji.Spec
	d.Spec = dashSpec{Method: d.Method, URL: sp.URL, Headers: redactHeaders(sp.Headers), Metadata: sp.Metadata,
		RegionPolicy: string(sp.RegionPolicy), ExecutionMode: string(sp.ExecutionMode)}
	d.Spec.Body, d.Spec.BodyTruncated = clip(sp.Body)
	for _, rg := range sp.Regions {
		d.Spec.Regions = append(d.Spec.Regions, string(rg))
	}
	if sp.RetryPolicy != nil {
		d.Spec.RetryPolicy = sp.RetryPolicy
	}
	if sp.Fallback != nil && sp.Fallback.Job != nil {
		d.Spec.Fallback = sp.Fallback.Job.URL
	}
	if sp.OnSuccess != nil {
		d.Spec.OnSuccess = sp.OnSuccess.URL
	}
	if sp.OnFailure != nil {
		d.Spec.OnFailure = sp.OnFailure.URL
	}
	if res := ji.Result; res != nil {
		dr := &dashResult{StatusCode: res.StatusCode, Headers: map[string]string{}, Region: res.Region, URL: res.URL, Error: res.Error}
		for k, vs := range res.Header {
			dr.Headers[k] = strings.Join(vs, ", ")
		}
		dr.Headers = redactHeaders(dr.Headers)
		dr.Body, dr.BodyTruncated = clip(res.Body)
		d.Result = dr
	}
	byURL := map[string]*dashDelivery{}
	for _, h := range sp.Webhooks {
		dd := dashDelivery{URL: h.URL, Votes: h.Votes(), Outcome: "pending", Attempts: []dashEvent{}}
		for _, rg := range h.Regions {
			dd.Regions = append(dd.Regions, string(rg))
		}
		d.Webhooks = append(d.Webhooks, dd)
	}
	for i := range d.Webhooks {
		if _, dup := byURL[d.Webhooks[i].URL]; !dup {
			byURL[d.Webhooks[i].URL] = &d.Webhooks[i]
		}
	}
	q := &dashQuorum{Required: max(sp.WebhookQuorum, 1), Reached: ji.QuorumReached}
	for _, h := range sp.Webhooks {
		if h.Votes() {
			q.Voting++
		}
	}
	for _, ev := range ji.Events {
		de := toDashEvent(ev)
		d.Events = append(d.Events, de)
		switch ev.Type {
		case EventWebhookDelivered, EventWebhookRetried, EventWebhookFailed:
			dd := byURL[ev.URL]
			if dd == nil {
				continue
			}
			dd.Attempts = append(dd.Attempts, de)
			switch ev.Type {
			case EventWebhookDelivered:
				dd.Outcome = "delivered"
				if dd.Votes {
					q.Delivered++
				}
			case EventWebhookFailed:
				dd.Outcome = "failed"
			}
		case EventQuorumFailed:
			q.Failed = true
		}
	}
	if len(sp.Webhooks) > 0 {
		d.Quorum = q
	}
	for _, id := range ji.Children {
		c := dashChild{ID: id}
		if cj, ok := e.Job(id); ok {
			c.Role, c.Status = cj.Role, cj.Status
		}
		d.Children = append(d.Children, c)
	}
	writeDashJSON(w, http.StatusOK, d)
}

// clip bounds a body shown on the page.
func clip(s string) (string, bool) {
	if len(s) <= dashMaxBody {
		return s, false
	}
	return strings.ToValidUTF8(s[:dashMaxBody], ""), true
}

// redactHeaders hides the values of credential headers: the dashboard is
// served without an API key, and jobs carry the API's credentials.
func redactHeaders(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if sensitiveHeader(k) {
			v = "[redacted]"
		}
		out[k] = v
	}
	return out
}

func sensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key":
		return true
	}
	for _, s := range []string{"secret", "token", "password", "signature", "api-key", "apikey", "auth"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}
