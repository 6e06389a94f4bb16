package redislimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// maxIntervalMicros caps the spacing of a very slow pace (7 days, like
// ezthrottle.MaxSignalWait), keeping every time in the scripts exact.
const maxIntervalMicros = int64(7 * 24 * time.Hour / time.Microsecond)

// Limiter is an ezthrottle.Limiter shared by every process that uses the
// same Redis and key prefix. It is safe for concurrent use. Create it with
// New, plug it into a Transport with ezthrottle.WithLimiter, and Close it on
// shutdown.
type Limiter struct {
	rdb      redis.Scripter
	cfg      config
	sc       scripts
	clock    ezthrottle.Clock
	log      *slog.Logger
	fallback ezthrottle.Limiter // nil when failing closed
	idPrefix string
	seq      atomic.Uint64

	mu     sync.Mutex
	gates  map[string]*gate
	closed bool

	down atomic.Bool // mirrors h.down for the hot path
	hmu  sync.Mutex
	h    health

	lmu      sync.Mutex
	held     map[*lease]struct{}
	renewing bool
	lclosed  bool
	kick     chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup

	decisions, errs, outages, fallbacks, rejected, lost atomic.Uint64
}

// health is the outage state machine; hmu guards it.
type health struct {
	down    bool
	since   time.Time
	retryAt time.Time
	probing bool
	lastErr error
	failed  uint64 // operations failed during the current outage
}

// New returns a Limiter on rdb: a *redis.Client, *redis.ClusterClient,
// *redis.Ring or any redis.UniversalClient. The Limiter does not own rdb
// (Close leaves it open).
//
// Configure rdb with short timeouts (DialTimeout, ReadTimeout, WriteTimeout,
// or ContextTimeoutEnabled with WithTimeout): they bound how long a Redis
// outage can delay a request before the Limiter falls back.
func New(rdb redis.Scripter, opts ...Option) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("redislimit: New: nil Redis client")
	}
	c := config{
		prefix:     DefaultPrefix,
		leaseTTL:   DefaultLeaseTTL,
		learnedTTL: DefaultLearnedTTL,
		poll:       DefaultPollInterval,
		probe:      DefaultProbeInterval,
		timeout:    DefaultTimeout,
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	if c.clock == nil {
		c.clock = ezthrottle.SystemClock()
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	l := &Limiter{
		rdb:      rdb,
		cfg:      c,
		sc:       newScripts(),
		clock:    c.clock,
		log:      c.logger,
		idPrefix: hex.EncodeToString(rnd[:]) + ":",
		gates:    make(map[string]*gate),
		held:     make(map[*lease]struct{}),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	if !c.failClosed {
		l.fallback = c.fallback
		if l.fallback == nil {
			l.fallback = ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: c.clock})
		}
	}
	return l, nil
}

var _ ezthrottle.Limiter = (*Limiter)(nil)

// hostKeys are the Redis keys of one host.
type hostKeys struct {
	tat, leases, learned string
}

func (l *Limiter) keys(host string) hostKeys {
	base := l.cfg.prefix + "{" + host + "}:"
	return hostKeys{tat: base + "t", leases: base + "f", learned: base + "l"}
}

// gate is the local queue of one host: only its head talks to Redis, the
// other requests of this process wait in arrival order. It exists while
// some request of the host is being admitted; l.mu guards it.
type gate struct {
	head, tail *waiter
	n          int
	wake       chan struct{} // nudges the head (a local release or Learn)
	nextAt     time.Time     // when the head expects its turn
	interval   time.Duration // spacing in force, from the last answer
	burst      int
}

type waiter struct {
	prev, next *waiter
	ch         chan struct{} // closed when the waiter becomes the head
	turn       bool
}

func (g *gate) push(w *waiter) {
	w.prev = g.tail
	if g.tail != nil {
		g.tail.next = w
	} else {
		g.head = w
	}
	g.tail = w
	g.n++
}

func (g *gate) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else if g.head == w {
		g.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else if g.tail == w {
		g.tail = w.prev
	}
	w.prev, w.next = nil, nil
	g.n--
}

// predict is the wait of a request joining the queue now: the head's
// expected turn plus one spacing per request ahead (optimistic about the
// burst, since the bucket's content is only known to Redis).
func (g *gate) predict(now time.Time) time.Duration {
	var d time.Duration
	if g.nextAt.After(now) {
		d = g.nextAt.Sub(now)
	}
	if ahead := g.n + 1 - (g.burst - 1); ahead > 0 {
		d += time.Duration(ahead) * g.interval
	}
	return d
}

// Acquire implements ezthrottle.Limiter. The decision is made atomically in
// Redis (pause, then the cap in flight, then the GCRA pace), on the Redis
// server's clock. Requests of this process wait in arrival order; across
// processes the order is best effort (whichever process asks first after a
// turn frees up gets it).
//
// A wait for the pace or a pause is predicted from Redis's answer: when it
// ends after a.Deadline, Acquire returns a *ezthrottle.ThrottleError at once.
// A wait for a free slot in flight cannot be predicted; it is bounded by ctx
// and a.Deadline. When Redis is unavailable Acquire uses the local fallback
// (WithFailOpen, the default) or returns an *UnavailableError
// (WithFailClosed).
func (l *Limiter) Acquire(ctx context.Context, a ezthrottle.Admission) (ezthrottle.Permit, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := a.Limit.Validate(); err != nil {
		return nil, err
	}
	start := l.clock.Now()
	g, waited, err := l.enter(ctx, a, start)
	if err != nil {
		return nil, err
	}
	p, err, degrade := l.serve(ctx, a, g, start, waited)
	l.leave(a.Key, g)
	if degrade {
		return l.degraded(ctx, a, err)
	}
	return p, err
}

// enter makes the request the head of its host's gate, waiting in line
// when another request of this process is being admitted. waited reports
// whether it had to queue.
func (l *Limiter) enter(ctx context.Context, a ezthrottle.Admission, start time.Time) (g *gate, waited bool, err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, false, ErrClosed
	}
	g = l.gates[a.Key]
	if g == nil {
		g = &gate{
			wake:     make(chan struct{}, 1),
			interval: time.Duration(intervalMicros(a.Limit.Rate)) * time.Microsecond,
			burst:    burstOf(a.Limit),
		}
		l.gates[a.Key] = g
		l.mu.Unlock()
		return g, false, nil
	}
	if !a.Deadline.IsZero() {
		if wait := g.predict(start); start.Add(wait).After(a.Deadline) {
			l.mu.Unlock()
			return nil, false, &ezthrottle.ThrottleError{Host: a.Key, Wait: wait, Predicted: true}
		}
	}
	w := &waiter{ch: make(chan struct{})}
	g.push(w)
	l.mu.Unlock()

	var tc <-chan time.Time
	if !a.Deadline.IsZero() {
		t := ezthrottle.NewTimerAt(l.clock, a.Deadline)
		defer t.Stop()
		tc = t.C()
	}
	select {
	case <-w.ch:
		return g, true, nil
	case <-ctx.Done():
		l.abandon(a.Key, g, w)
		return nil, false, l.deadlineError(ctx.Err(), a, start)
	case <-tc:
		l.abandon(a.Key, g, w)
		return nil, false, &ezthrottle.ThrottleError{Host: a.Key, Wait: l.clock.Now().Sub(start)}
	}
}

// leave passes the head of the gate to the next waiter, or removes the
// gate when nobody waits.
func (l *Limiter) leave(host string, g *gate) {
	l.mu.Lock()
	if w := g.head; w != nil {
		g.remove(w)
		w.turn = true
		close(w.ch)
	} else if l.gates[host] == g {
		delete(l.gates, host)
	}
	l.mu.Unlock()
}

// abandon removes a waiter that gives up; if it had just been given the
// turn, the turn goes to the next one.
func (l *Limiter) abandon(host string, g *gate, w *waiter) {
	l.mu.Lock()
	if w.turn {
		l.mu.Unlock()
		l.leave(host, g)
		return
	}
	g.remove(w)
	l.mu.Unlock()
}

// nudge wakes the head of host's gate, if any, to ask Redis again now.
func (l *Limiter) nudge(host string) {
	l.mu.Lock()
	if g := l.gates[host]; g != nil {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	l.mu.Unlock()
}

// decision is the acquire script's answer.
type decision struct {
	allowed  bool
	leased   bool
	reason   int64
	wait     time.Duration
	interval time.Duration
}

const (
	reasonPaused = 1
	reasonRate   = 2
	reasonSlots  = 3
)

func parseDecision(v []int64) (decision, error) {
	if len(v) != 6 || v[0] < 0 || v[0] > 1 || v[2] < 0 || v[2] > 3 || v[3] < 0 {
		return decision{}, fmt.Errorf("redislimit: unexpected reply from the acquire script: %v", v)
	}
	return decision{
		allowed:  v[0] == 1,
		wait:     micros(v[1]),
		reason:   v[2],
		interval: micros(v[3]),
		leased:   v[5] == 1,
	}, nil
}

// micros converts microseconds from Redis to a Duration, clamped to
// [0, math.MaxInt64] instead of overflowing into a negative wait.
func micros(us int64) time.Duration {
	const maxMicros = math.MaxInt64 / int64(time.Microsecond)
	return time.Duration(min(max(us, 0), maxMicros)) * time.Microsecond
}

// serve asks Redis until the request is admitted, cannot be admitted in
// time, or Redis fails (degrade is then true and err the Redis error).
func (l *Limiter) serve(ctx context.Context, a ezthrottle.Admission, g *gate, start time.Time, waited bool) (p ezthrottle.Permit, err error, degrade bool) {
	k := l.keys(a.Key)
	interval, burst := intervalMicros(a.Limit.Rate), burstOf(a.Limit)
	ttl := l.cfg.leaseTTL.Microseconds()
	first := !waited
	for {
		probe, ok, lastErr := l.useRedis()
		if !ok {
			return nil, lastErr, true
		}
		id := l.idPrefix + strconv.FormatUint(l.seq.Add(1), 36)
		cctx, cancel := l.opCtx(ctx)
		v, err := l.sc.acquire.Run(cctx, l.rdb, []string{k.tat, k.leases, k.learned},
			interval, burst, a.Limit.MaxInFlight, id, ttl).Int64Slice()
		cancel()
		var d decision
		if err == nil {
			d, err = parseDecision(v)
		}
		if err != nil {
			if cerr := callerDone(ctx); cerr != nil {
				l.probeAborted(probe)
				return nil, l.deadlineError(cerr, a, start), false
			}
			l.failed(err)
			return nil, err, true
		}
		l.succeeded()
		l.decisions.Add(1)
		if d.allowed {
			if !d.leased {
				return noPermit{}, nil, false
			}
			ls := &lease{l: l, host: a.Key, key: k.leases, id: id}
			l.hold(ls)
			return ls, nil, false
		}

		now := l.clock.Now()
		wait := d.wait
		slotBound := d.reason == reasonSlots
		if slotBound && (wait <= 0 || wait > l.cfg.poll) {
			wait = l.cfg.poll
		}
		l.mu.Lock()
		g.interval = d.interval
		if slotBound {
			g.nextAt = now
		} else {
			g.nextAt = now.Add(wait)
		}
		l.mu.Unlock()
		sleep := min(wait, maxRecheck)
		if !a.Deadline.IsZero() {
			left := a.Deadline.Sub(now)
			if !slotBound && wait > left {
				if first {
					return nil, &ezthrottle.ThrottleError{Host: a.Key, Wait: wait, Predicted: true}, false
				}
				return nil, &ezthrottle.ThrottleError{Host: a.Key, Wait: now.Sub(start)}, false
			}
			if left <= 0 {
				return nil, &ezthrottle.ThrottleError{Host: a.Key, Wait: now.Sub(start)}, false
			}
			sleep = min(sleep, left)
		}
		first = false
		if err := l.sleepUntil(ctx, g, now.Add(sleep)); err != nil {
			return nil, l.deadlineError(err, a, start), false
		}
	}
}

// sleepUntil waits until at, or until the gate is nudged; it returns
// ctx.Err() when ctx ends first.
func (l *Limiter) sleepUntil(ctx context.Context, g *gate, at time.Time) error {
	t := ezthrottle.NewTimerAt(l.clock, at)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-g.wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// callerDone returns the caller's context error, also when its deadline
// has passed but the context has not noticed yet (a Redis call bounded by
// that deadline fails with an i/o timeout a moment before ctx.Err() is set):
// such a failure is the caller's, not Redis's.
func callerDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// deadlineError turns the context's deadline into a *ThrottleError when it
// is also the admission's deadline (the request waited for its turn until
// it ran out); any other ctx error is returned as is.
func (l *Limiter) deadlineError(err error, a ezthrottle.Admission, start time.Time) error {
	now := l.clock.Now()
	if errors.Is(err, context.DeadlineExceeded) && !a.Deadline.IsZero() && !now.Before(a.Deadline) {
		return &ezthrottle.ThrottleError{Host: a.Key, Wait: now.Sub(start), Cause: context.DeadlineExceeded}
	}
	return err
}

// degraded admits a request while Redis is unavailable.
func (l *Limiter) degraded(ctx context.Context, a ezthrottle.Admission, err error) (ezthrottle.Permit, error) {
	if l.fallback == nil {
		l.rejected.Add(1)
		return nil, &UnavailableError{Host: a.Key, Err: err}
	}
	l.fallbacks.Add(1)
	return l.fallback.Acquire(ctx, a)
}

// opCtx bounds one Redis operation.
func (l *Limiter) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if l.cfg.timeout > 0 {
		return context.WithTimeout(ctx, l.cfg.timeout)
	}
	return ctx, func() {}
}

// useRedis reports whether Redis may be used now (ok), and whether this use
// is the probe that ends an outage (probe). lastErr is the outage's error.
func (l *Limiter) useRedis() (probe, ok bool, lastErr error) {
	if !l.down.Load() {
		return false, true, nil
	}
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if !l.h.down {
		return false, true, nil
	}
	if l.h.probing || l.clock.Now().Before(l.h.retryAt) {
		return false, false, l.h.lastErr
	}
	l.h.probing = true
	return true, true, nil
}

// usable reports whether Redis may be used now by an operation that does
// not probe (Learn, renewals, releases).
func (l *Limiter) usable() bool { return !l.down.Load() }

// failed records a failed Redis operation; the first failure of an outage
// is logged.
func (l *Limiter) failed(err error) {
	l.errs.Add(1)
	now := l.clock.Now()
	l.hmu.Lock()
	l.h.probing = false
	l.h.lastErr = err
	l.h.retryAt = now.Add(l.cfg.probe)
	l.h.failed++
	if l.h.down {
		l.hmu.Unlock()
		return
	}
	l.h.down, l.h.since, l.h.failed = true, now, 1
	l.down.Store(true)
	l.hmu.Unlock()
	l.outages.Add(1)
	mode := "fail-open: throttling with the local limiter"
	if l.fallback == nil {
		mode = "fail-closed: refusing requests"
	}
	l.log.Warn("redislimit: Redis unavailable", "error", err, "mode", mode, "probe_interval", l.cfg.probe)
}

// succeeded records a successful Redis operation, ending an outage.
func (l *Limiter) succeeded() {
	if !l.down.Load() {
		return
	}
	l.hmu.Lock()
	if !l.h.down {
		l.hmu.Unlock()
		return
	}
	since, failed := l.h.since, l.h.failed
	l.h = health{}
	l.down.Store(false)
	l.hmu.Unlock()
	l.log.Info("redislimit: Redis available again", "outage", l.clock.Now().Sub(since), "failed_operations", failed)
}

func (l *Limiter) probeAborted(probe bool) {
	if probe {
		l.hmu.Lock()
		l.h.probing = false
		l.hmu.Unlock()
	}
}

// Learn implements ezthrottle.Limiter: a pace, a cap or a pause learned
// from a response is stored in Redis (the pace and cap for WithLearnedTTL
// after the last response announcing them, a pause until it ends), so every
// process applies it from its next Acquire. The pause is converted to a
// length and anchored on the Redis server's clock. With WithFailOpen the
// local fallback learns it too, so it is ready for an outage. During an
// outage only the fallback learns.
func (l *Limiter) Learn(ctx context.Context, key string, s ezthrottle.Signals) {
	var iv, sl, pz string
	if s.HasRPS && s.RPS > 0 && !math.IsNaN(s.RPS) && !math.IsInf(s.RPS, 1) {
		iv = strconv.FormatInt(intervalMicros(s.RPS), 10)
	}
	if s.HasMaxConcurrent && s.MaxConcurrent > 0 {
		sl = strconv.Itoa(s.MaxConcurrent)
	}
	if !s.PauseUntil.IsZero() {
		if d := s.PauseUntil.Sub(l.clock.Now()); d > 0 {
			pz = strconv.FormatInt(int64(math.Ceil(float64(d)/float64(time.Microsecond))), 10)
		}
	}
	if iv == "" && sl == "" && pz == "" {
		return
	}
	if l.fallback != nil {
		l.fallback.Learn(ctx, key, s)
	}
	if l.isClosed() || !l.usable() {
		return
	}
	// What was learned matters beyond the request that saw it.
	cctx, cancel := l.opCtx(context.WithoutCancel(ctx))
	err := l.sc.learn.Run(cctx, l.rdb, []string{l.keys(key).learned}, iv, sl, pz, l.cfg.learnedTTL.Milliseconds()).Err()
	cancel()
	if err != nil {
		l.failed(err)
		return
	}
	l.succeeded()
	l.nudge(key)
}

func (l *Limiter) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops renewing leases and releases the leases this Limiter still
// holds (best effort: those it cannot release expire after the lease TTL).
// Acquire then fails with ErrClosed. Close does not close the Redis client.
func (l *Limiter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.lmu.Lock()
	l.lclosed = true
	held := l.held
	l.held = make(map[*lease]struct{})
	close(l.stop)
	l.lmu.Unlock()
	l.wg.Wait()
	if len(held) == 0 || !l.usable() {
		return nil
	}
	var errs []error
	for key, ls := range groupLeases(held) {
		ids := make([]any, len(ls))
		for i, p := range ls {
			ids[i] = p.id
		}
		ctx, cancel := l.opCtx(context.Background())
		err := l.sc.release.Run(ctx, l.rdb, []string{key}, ids...).Err()
		cancel()
		if err != nil {
			l.failed(err)
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("redislimit: Close: releasing leases (they expire on their own): %w", errors.Join(errs...))
	}
	return nil
}

// Stats is a snapshot of a Limiter's counters.
type Stats struct {
	// Available is false during an outage (Redis failed and has not
	// answered since).
	Available bool
	// OutageSince is when the current outage began (zero when Available).
	OutageSince time.Time
	// Outages counts the outages since New; each is logged once.
	Outages uint64
	// Errors counts the Redis operations that failed.
	Errors uint64
	// Decisions counts the admission decisions Redis made (admitted or
	// not).
	Decisions uint64
	// FallbackAcquires counts the Acquires served by the local fallback
	// during outages.
	FallbackAcquires uint64
	// Rejected counts the Acquires refused with ErrUnavailable (fail-closed).
	Rejected uint64
	// LeasesHeld is the number of slots in flight this Limiter holds in
	// Redis.
	LeasesHeld int
	// LeasesLost counts the leases found expired when renewed (their
	// holder was stalled longer than the lease TTL, or Redis lost them):
	// the cap in flight may have been exceeded meanwhile.
	LeasesLost uint64
}

// Stats returns the Limiter's counters (for metrics and health checks).
func (l *Limiter) Stats() Stats {
	s := Stats{
		Errors:           l.errs.Load(),
		Outages:          l.outages.Load(),
		Decisions:        l.decisions.Load(),
		FallbackAcquires: l.fallbacks.Load(),
		Rejected:         l.rejected.Load(),
		LeasesLost:       l.lost.Load(),
	}
	l.hmu.Lock()
	s.Available, s.OutageSince = !l.h.down, l.h.since
	l.hmu.Unlock()
	l.lmu.Lock()
	s.LeasesHeld = len(l.held)
	l.lmu.Unlock()
	return s
}

// HostState is the shared state of one host in Redis.
type HostState struct {
	// ServerTime is the Redis server's clock when the state was read.
	ServerTime time.Time
	// LearnedRate is the pace learned from the host's headers, in requests
	// per second; 0 when none.
	LearnedRate float64
	// LearnedMaxInFlight is the cap learned from the host's headers; 0
	// when none.
	LearnedMaxInFlight int
	// PausedUntil is the end of the last pause, on the server's clock (zero
	// when none; in the past when over).
	PausedUntil time.Time
	// InFlight is the number of live leases: requests in flight, across
	// every process, when a cap is in force.
	InFlight int
}

// Inspect reads the shared state of host (a host key, see
// ezthrottle.HostKey) from Redis.
func (l *Limiter) Inspect(ctx context.Context, host string) (HostState, error) {
	k := l.keys(host)
	cctx, cancel := l.opCtx(ctx)
	defer cancel()
	v, err := l.sc.inspect.Run(cctx, l.rdb, []string{k.tat, k.leases, k.learned}).Int64Slice()
	if err != nil {
		return HostState{}, fmt.Errorf("redislimit: Inspect %s: %w", host, err)
	}
	if len(v) != 6 {
		return HostState{}, fmt.Errorf("redislimit: Inspect %s: unexpected reply %v", host, v)
	}
	hs := HostState{ServerTime: time.UnixMicro(v[0]), InFlight: int(v[4])}
	if v[1] > 0 {
		hs.LearnedRate = 1e6 / float64(v[1])
	}
	if v[2] > 0 {
		hs.LearnedMaxInFlight = int(v[2])
	}
	if v[3] > 0 {
		hs.PausedUntil = time.UnixMicro(v[3])
	}
	return hs, nil
}

// intervalMicros is the GCRA spacing of a pace, in µs (0: unpaced). It is
// rounded up so the pace is never exceeded.
func intervalMicros(rate float64) int64 {
	if math.IsInf(rate, 1) {
		return 0
	}
	us := math.Ceil(1e6 / rate)
	switch {
	case us < 1:
		return 1
	case us > float64(maxIntervalMicros) || math.IsNaN(us):
		return maxIntervalMicros
	}
	return int64(us)
}

func burstOf(lim ezthrottle.Limit) int {
	if lim.Burst < 1 {
		return 1
	}
	return lim.Burst
}

// noPermit is the Permit of a request admitted without a cap in flight.
type noPermit struct{}

// Release implements ezthrottle.Permit.
func (noPermit) Release() {}
