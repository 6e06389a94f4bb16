// Package ezlocal is an in-process EZThrottle engine for development and
// tests: a fake, but faithful, implementation of both backend dialects of the
// EZThrottle wire protocol.
//
// It serves the Cloud dialect (the metering proxy's POST /api/v1/proxy with
// its API-key check, and the /api/v1/jobs and /api/v1/webhook-secrets
// targets behind it) and the self-hosted dialect (POST /jobs, GET /jobs/{id},
// the SSE stream GET /jobs/{id}/stream and GET /health) on one handler. Jobs
// really run: the engine calls their destinations with per-host pacing,
// retries and reroutes them between simulated regions, races or fans them
// out, follows fallback chains, spawns on_success / on_failure children and
// delivers the results to every webhook, with retries: signed for Cloud
// jobs whose customer has a webhook secret, unsigned for self-hosted jobs,
// as the real self-hosted engines do.
//
// Start an engine on a loopback port with Start, or mount Handler in a server
// of your own (then call Close when done). Point an ezclient.Client at it:
//
//	e, _ := ezlocal.Start()
//	defer e.Close()
//	c, _ := ezclient.New(ezclient.WithAPIKey(e.APIKey()),
//		ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()))
//
// Tests can inspect a job's status and typed event history with Job, and
// wait for it to settle with WaitJob. Every delay goes through the Clock
// option, so tests run instantly and deterministically.
//
// # Semantics
//
// Where the protocol leaves room, the engine behaves as follows.
//
//   - Idempotency: a Cloud job without idempotent_key gets HashKey(customer,
//     method, url, body); keys are scoped per customer (Cloud) or per user_id
//     (self-hosted). A duplicate answers 200 with the first job's ID.
//   - Pacing: each destination host has a pace (DefaultRPS, DefaultMaxConcurrent
//     unless WithDefaultPace) that its replies' X-EZTHROTTLE-RPS /
//     X-EZTHROTTLE-MAX-CONCURRENT (or X-Aqueduct-*, X-Aquifer-*) headers change; each
//     region applies it as a separate worker.
//   - Retries: retry_codes are retried in the same region up to max_retries,
//     after the reply's Retry-After or a doubling backoff (WithRetryDelay);
//     reroute_codes move the job to a region not tried yet, up to
//     max_reroutes. Jobs without retry_policy use DefaultRetryPolicy. A
//     transport error (no reply) counts as status 502 for retry, reroute and
//     fallback codes.
//   - Regions: jobs without regions run in the first region. race runs every
//     region and keeps the first success, cancelling the others; fanout runs
//     every region and succeeds only if all do. With the fallback policy a
//     down region is replaced by the first up region not in the job; with
//     strict it fails (and reroutes stay within the job's regions).
//   - Fallbacks: a fallback without trigger runs on any failure; on_error on
//     the listed codes; on_timeout cancels the job when it has not completed
//     in time and runs the fallback. The fallback's result is the job's.
//   - Children: on_success / on_failure of the job (and of the fallback that
//     produced the result) are spawned as jobs with Parent set; without a key
//     of their own they get "<parent id>:<role>:<n>". on_failure_timeout_ms
//     bounds the whole execution.
//   - Webhooks: every webhook gets the result, concurrently, retried on the
//     WithWebhookRetries schedule; a webhook with regions is delivered from the
//     first of them that is up. Cloud deliveries are signed with the
//     customer's primary secret. Self-hosted jobs are "completed" when the
//     destination replied at all, "failed" when it could not be reached.
//   - Tracing: a job runs under a span (SpanJob) continuing the trace
//     context of its metadata or headers, with a client span per attempt and
//     per webhook delivery whose context the request carries (see
//     WithTracerProvider).
//   - Memory: the engine keeps every job it accepted (spec, result, event
//     history; ~3 KB for a small job) and the pace of every destination host
//     for its whole life, so that Job, Jobs and de-duplication work;
//     WithMaxFinishedJobs bounds the settled jobs kept (the earliest-settled
//     are forgotten, as if never submitted). It is meant for development and
//     tests, not for long-running production traffic.
//   - Requests to destinations and webhooks carry X-EZThrottle-Job-ID and
//     X-EZThrottle-Region headers. The proxy serves target_url by its path
//     alone, whatever its host.
package ezlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// Errors returned by the engine's Go API.
var (
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("ezlocal: engine closed")
	// ErrJobNotFound: no job has this ID.
	ErrJobNotFound = errors.New("ezlocal: job not found")
	// ErrUnknownRegion: the region is not one of the engine's regions.
	ErrUnknownRegion = errors.New("ezlocal: unknown region")
)

// Engine is a local EZThrottle engine. Create it with New or Start; it is
// safe for concurrent use. Close stops every goroutine it started.
type Engine struct {
	cfg     *config
	hc      *http.Client
	ownHC   bool
	handler http.Handler
	tracing tracing

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	srv       *http.Server
	ln        net.Listener
	url       string
	serveDone chan struct{}
	closeOnce sync.Once

	connMu    sync.Mutex
	freshConn map[net.Conn]struct{} // connections that have not sent a request yet

	mu         sync.Mutex
	closed     bool
	seq        int64
	jobs       map[string]*job
	order      []*job // submission order; may hold dropped jobs (see settle)
	nDropped   int    // dropped jobs still in order
	settledQ   []*job // settled jobs kept, earliest first, from settledAt (WithMaxFinishedJobs)
	settledAt  int
	byKey      map[string]*job
	unfinished map[owner]int // unfinished jobs per dialect and customer (WithAdmissionLimit); no zero entries
	regions    map[string]*RegionConfig
	regionList []string
	pacers     map[string]*pacer
	secrets    map[string]secretPair
	planUsed   map[string]int
	faults     []int // statuses of the next proxy calls to fail
}

// New returns an engine that is not listening: mount Handler in a server of
// your own, and Close the engine when done. It fails on invalid options.
func New(opts ...Option) (*Engine, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(cfg)
	}
	if len(cfg.errs) > 0 {
		return nil, errors.Join(cfg.errs...)
	}
	e := &Engine{
		cfg:        cfg,
		hc:         cfg.hc,
		jobs:       map[string]*job{},
		byKey:      map[string]*job{},
		unfinished: map[owner]int{},
		regions:    map[string]*RegionConfig{},
		pacers:     map[string]*pacer{},
		secrets:    map[string]secretPair{},
		planUsed:   map[string]int{},
	}
	if e.hc == nil {
		// A pool sized for concurrent jobs and deliveries (Go's default
		// keeps 2 idle connections per host, so every other request opened
		// a new connection).
		e.hc = &http.Client{Timeout: 30 * time.Second, Transport: ezclient.NewHTTPTransport()}
		e.ownHC = true
	}
	for _, r := range cfg.regions {
		rc := r
		e.regions[r.Name] = &rc
		e.regionList = append(e.regionList, r.Name)
	}
	for c, s := range cfg.secrets {
		e.secrets[c] = s
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.tracing = newTracing(cfg)
	e.handler = e.routes()
	return e, nil
}

// Start returns an engine serving on a loopback port (or WithAddr's address).
func Start(opts ...Option) (*Engine, error) {
	e, err := New(opts...)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", e.cfg.addr)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("ezlocal: listen: %w", err)
	}
	e.ln = ln
	e.freshConn = map[net.Conn]struct{}{}
	e.srv = &http.Server{Handler: e.handler, ReadHeaderTimeout: 10 * time.Second, ConnState: e.connState}
	e.url = "http://" + ln.Addr().String()
	e.serveDone = make(chan struct{})
	go func() {
		defer close(e.serveDone)
		_ = e.srv.Serve(ln)
	}()
	e.cfg.logger.Info("ezlocal: engine listening", "url", e.url)
	return e, nil
}

// URL returns the base URL the engine serves on, without a trailing slash,
// or "" when it was created with New and is not listening.
func (e *Engine) URL() string { return e.url }

// Handler returns the engine's HTTP handler, serving both dialects.
func (e *Engine) Handler() http.Handler { return e.handler }

// APIKey returns the engine's first accepted API key (DefaultAPIKey unless
// WithAPIKey was given).
func (e *Engine) APIKey() string { return e.cfg.keys[0].key }

// CustomerID returns the customer the first API key belongs to.
func (e *Engine) CustomerID() string { return e.cfg.keys[0].customer }

// Close stops the server (when started with Start), cancels every running
// job and delivery, and waits for all the engine's goroutines to return. Jobs
// that had not settled end as failed with reason "engine closed". Close is
// idempotent and always returns nil.
//
// Connections that are idle, or that have not sent a complete request yet,
// are closed at once; Close waits (up to 5 s) only for replies being
// written.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		e.cancel()
		if e.srv != nil {
			// Stop accepting first: once Serve has returned, every accepted
			// connection has been registered by connState, so none can
			// escape closeFresh. A connection that never sends a request is
			// not idle to http.Server.Shutdown until it is 5 s old, which
			// stalled Close; it is closed here instead.
			_ = e.ln.Close()
			<-e.serveDone
			e.closeFresh()
			// Shutdown (rather than Close) closes the idle connections and
			// waits for the connection goroutines of replies still being
			// written, so that nothing outlives Close; it is bounded in case
			// a client misbehaves.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if e.srv.Shutdown(ctx) != nil {
				_ = e.srv.Close()
			}
			cancel()
		}
		e.wg.Wait()
		if e.ownHC {
			e.hc.CloseIdleConnections()
		}
	})
	return nil
}

// connState tracks the server's connections that have not sent a request.
func (e *Engine) connState(c net.Conn, st http.ConnState) {
	e.connMu.Lock()
	defer e.connMu.Unlock()
	if st == http.StateNew {
		e.freshConn[c] = struct{}{}
	} else {
		delete(e.freshConn, c)
	}
}

// closeFresh closes the connections that have not sent a request.
func (e *Engine) closeFresh() {
	e.connMu.Lock()
	defer e.connMu.Unlock()
	for c := range e.freshConn {
		_ = c.Close()
		delete(e.freshConn, c)
	}
}

// track registers a goroutine (or a long-running handler) with Close; it
// returns false when the engine is closed. The caller must call e.wg.Done.
func (e *Engine) track() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.wg.Add(1)
	return true
}

// FailProxyCalls makes the next n calls to POST /api/v1/proxy fail with
// status before anything is forwarded, as the real proxy does when it or the
// engine behind it is in trouble: 502 answers the plain-text "Proxy Error",
// other statuses their plain-text status text. Use it to test client retries
// (a retried submission reuses its idempotent key, so the engine
// de-duplicates it).
func (e *Engine) FailProxyCalls(n, status int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for range n {
		e.faults = append(e.faults, status)
	}
}

// Regions returns the engine's regions and their current state.
func (e *Engine) Regions() []RegionConfig {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]RegionConfig, 0, len(e.regionList))
	for _, n := range e.regionList {
		out = append(out, *e.regions[n])
	}
	return out
}

// SetRegionDown marks a region down (or up again). Requests already running
// in it finish; new attempts see the change.
func (e *Engine) SetRegionDown(name string, down bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.regions[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownRegion, name)
	}
	r.Down = down
	return nil
}

// SetRegionLatency changes a region's simulated latency.
func (e *Engine) SetRegionLatency(name string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("ezlocal: negative latency %v", d)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.regions[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownRegion, name)
	}
	r.Latency = d
	return nil
}

func (e *Engine) regionState(name string) (RegionConfig, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.regions[name]
	if !ok {
		return RegionConfig{}, false
	}
	return *r, true
}

// upRegion returns the first up region, in the engine's order, that is not
// excluded and (when only is non-nil) is in only.
func (e *Engine) upRegion(exclude map[string]bool, only []string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.regionList {
		if exclude[n] || e.regions[n].Down {
			continue
		}
		if only != nil && !slices.Contains(only, n) {
			continue
		}
		return n
	}
	return ""
}

func (e *Engine) defaultRegion() string { return e.regionList[0] }

// SetWebhookSecrets sets (or, with an empty primary, deletes) the webhook
// signing secrets of a Cloud customer, as the webhook-secrets API does.
func (e *Engine) SetWebhookSecrets(customerID, primary, secondary string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if primary == "" && secondary == "" {
		delete(e.secrets, customerID)
		return nil
	}
	if err := checkSecrets(primary, secondary); err != nil {
		return err
	}
	e.secrets[customerID] = secretPair{primary, secondary}
	return nil
}

func (e *Engine) secretFor(customer string) (secretPair, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.secrets[customer]
	return s, ok
}

// Job returns a snapshot of the job with this ID: its status, result,
// children and event history.
func (e *Engine) Job(id string) (JobInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok {
		return JobInfo{}, false
	}
	return j.info(), true
}

// Jobs returns snapshots of every job, in submission order (without those
// WithMaxFinishedJobs dropped).
func (e *Engine) Jobs() []JobInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]JobInfo, 0, len(e.order)-e.nDropped)
	for _, j := range e.order {
		if !j.dropped {
			out = append(out, j.info())
		}
	}
	return out
}

// JobsSubmitted returns how many jobs the engine has accepted, including
// those WithMaxFinishedJobs dropped since.
func (e *Engine) JobsSubmitted() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return int(e.seq)
}

// settle marks the job settled and applies WithMaxFinishedJobs: it is kept,
// and the earliest-settled jobs beyond the bound are forgotten, in one step
// under e.mu, so that whoever sees the job settled also sees the bound
// applied.
func (e *Engine) settle(j *job) {
	e.mu.Lock()
	defer e.mu.Unlock()
	close(j.settled)
	limit := e.cfg.maxFinished
	if limit == 0 {
		return
	}
	e.settledQ = append(e.settledQ, j)
	for len(e.settledQ)-e.settledAt > limit {
		e.dropLocked(e.settledQ[e.settledAt])
		e.settledQ[e.settledAt] = nil
		e.settledAt++
	}
	if e.settledAt >= limit {
		// Shift the kept ones down once per limit drops: O(1) amortised,
		// and the backing array stays under 2×limit+1.
		k := copy(e.settledQ, e.settledQ[e.settledAt:])
		clear(e.settledQ[k:])
		e.settledQ, e.settledAt = e.settledQ[:k], 0
	}
}

// dropLocked forgets a settled job; e.mu is held.
func (e *Engine) dropLocked(j *job) {
	if !j.finished() {
		e.finishedLocked(j) // not expected (only settled jobs are dropped): keep the index exact anyway
	}
	j.dropped = true
	delete(e.jobs, j.id)
	if dk := dedupKey(j.dialect, j.customer, j.key); e.byKey[dk] == j {
		delete(e.byKey, dk)
	}
	e.nDropped++
	if e.nDropped > len(e.order)/2 {
		kept := e.order[:0]
		for _, o := range e.order {
			if !o.dropped {
				kept = append(kept, o)
			}
		}
		clear(e.order[len(kept):])
		e.order = kept
		e.nDropped = 0
	}
}

// JobByKey returns the job a Cloud customer (or self-hosted user) submitted
// with this idempotent key.
func (e *Engine) JobByKey(dialect ezclient.Dialect, customer, key string) (JobInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.byKey[dedupKey(dialect, customer, key)]
	if !ok {
		return JobInfo{}, false
	}
	return j.info(), true
}

// WaitJob waits until the job has settled — executed, its children spawned
// and every webhook delivery finished (delivered or given up) — and returns
// its final snapshot. It returns ctx's error, ErrJobNotFound or ErrClosed
// (with the latest snapshot) otherwise.
func (e *Engine) WaitJob(ctx context.Context, id string) (JobInfo, error) {
	e.mu.Lock()
	j, ok := e.jobs[id]
	e.mu.Unlock()
	if !ok {
		return JobInfo{}, fmt.Errorf("%w: %q", ErrJobNotFound, id)
	}
	// The snapshot comes from the job itself, not from a lookup by ID: a
	// job WithMaxFinishedJobs drops right after it settles is still
	// reported.
	snapshot := func() JobInfo {
		e.mu.Lock()
		defer e.mu.Unlock()
		return j.info()
	}
	select {
	case <-j.settled: // a settled job wins over a closed engine or ctx
		return snapshot(), nil
	default:
	}
	select {
	case <-j.settled:
		return snapshot(), nil
	case <-ctx.Done():
		return snapshot(), ctx.Err()
	case <-e.ctx.Done():
		return snapshot(), ErrClosed
	}
}

// WaitIdle waits until every job submitted so far, and every child they
// spawn, has settled.
func (e *Engine) WaitIdle(ctx context.Context) error {
	for {
		// One pass over the jobs per round (not one per job waited for), so
		// that waiting for n jobs costs O(n); a round catches the children
		// spawned during the previous one.
		e.mu.Lock()
		var pending []*job
		for _, j := range e.order {
			select {
			case <-j.settled:
			default:
				pending = append(pending, j)
			}
		}
		e.mu.Unlock()
		if len(pending) == 0 {
			return nil
		}
		for _, j := range pending {
			select {
			case <-j.settled:
			case <-ctx.Done():
				return ctx.Err()
			case <-e.ctx.Done():
				return ErrClosed
			}
		}
	}
}

// Pace returns the current pace of a destination host ("host:port" as in
// the URL): requests per second and requests in flight allowed, per region.
func (e *Engine) Pace(host string) (rps float64, maxConcurrent int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.pacers[host]; ok {
		return p.rps, p.maxConc
	}
	return e.cfg.rps, e.cfg.maxConc
}

func (e *Engine) now() time.Time { return e.cfg.clock.Now() }

// customerForKey returns the customer an API key belongs to.
func (e *Engine) customerForKey(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	for _, k := range e.cfg.keys {
		if k.key == key {
			return k.customer, true
		}
	}
	return "", false
}

// knownRegions lists the engine's region codes, sorted, for messages.
func (e *Engine) knownRegions() []string {
	out := append([]string(nil), e.regionList...)
	sort.Strings(out)
	return out
}
