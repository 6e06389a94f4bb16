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
	rdb       redis.Scripter
	cfg       config
	sc        scripts
	clock     ezthrottle.Clock
	log       *slog.Logger
	fallback  ezthrottle.Limiter // nil when failing closed
	idPrefix  string
	seq       atomic.Uint64
	opTimeout time.Duration // WithTimeout, when the client honours deadlines
	pipe      pipeliner     // nil when rdb cannot pipeline

	// serverNow, when set (tests only), replaces the Redis server's clock
	// in the scripts.
	serverNow func() time.Time

	mu     sync.Mutex
	gates  map[string]*gate
	closed bool
	// The hosts seen, by generation (see hostEntry).
	hosts    map[string]*hostEntry // used in this generation
	oldHosts map[string]*hostEntry // used in the one before
	hostsGen time.Time             // when this generation started

	disp dispatcher // groups concurrent acquire calls

	down atomic.Bool // mirrors h.down for the hot path
	hmu  sync.Mutex
	h    health

	// Leases held and released (lease.go); lmu guards them.
	lmu          sync.Mutex
	held         map[*lease]struct{}
	pend         map[string][]released // lease set -> leases released, not yet removed
	npend        int                   // IDs in pend
	pendSince    time.Time             // when pend stopped being empty
	flushArmed   bool                  // the keeper knows pend is not empty
	keeping      bool                  // the keeper goroutine runs
	keeperStarts int                   // for tests
	lclosed      bool
	kick         chan struct{}
	stop         chan struct{}
	wg           sync.WaitGroup
	fmu          sync.Mutex // held while releases are sent in the background

	decisions, errs, outages, fallbacks, rejected, lost, rts atomic.Uint64
}

// pipeliner is what the Limiter needs from a client to send several
// commands in one round trip (*redis.Client, *redis.ClusterClient and
// *redis.Ring have it).
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

const (
	// reserveHorizon is how far ahead a request may be given its turn in
	// Redis (and sleep until it). Within it, late wake-ups cost nothing;
	// beyond it, a request asks again when its turn is closer, so a pause
	// or a new pace learned meanwhile still applies to it.
	reserveHorizon = 250 * time.Millisecond
	// maxBatch is the most requests the head of a local queue asks Redis
	// for in one call (itself and those queued behind it).
	maxBatch = 64
	// flushDelay is how long a released lease may wait for the next call
	// of its host to carry it to Redis, before it is sent on its own (in
	// one pipeline with every other release pending).
	flushDelay = 2 * time.Millisecond
	// maxFold is the most released leases one acquire call carries.
	maxFold = 256
)

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
		sc:       newScripts(false),
		clock:    c.clock,
		log:      c.logger,
		idPrefix: hex.EncodeToString(rnd[:]) + ":",
		gates:    make(map[string]*gate),
		hosts:    make(map[string]*hostEntry),
		held:     make(map[*lease]struct{}),
		pend:     make(map[string][]released),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	l.pipe, _ = rdb.(pipeliner)
	l.opTimeout = c.timeout
	if !honoursDeadlines(rdb) {
		l.opTimeout = 0 // a context deadline would cost a timer per call and bound nothing
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

// hostEntry is what the Limiter keeps about a host between its requests:
// its keys (built once), and the acquire script's first arguments for the
// host's last Limit (boxed once).
type hostEntry struct {
	keys hostKeys
	list []string // the acquire script's KEYS
	args atomic.Pointer[hostArgs]
}

type hostArgs struct {
	lim  ezthrottle.Limit
	args []any // interval, burst, max in flight, lease TTL
}

// static returns the acquire script's first arguments for lim.
func (e *hostEntry) static(lim ezthrottle.Limit, ttl time.Duration) []any {
	if ha := e.args.Load(); ha != nil && ha.lim == lim {
		return ha.args
	}
	ha := &hostArgs{lim: lim, args: []any{intervalMicros(lim.Rate), burstOf(lim), lim.MaxInFlight, ttl.Microseconds()}}
	e.args.Store(ha)
	return ha.args
}

// hostGeneration is how long a generation of the Limiter's memory of hosts
// lasts: a host not used for a whole generation is forgotten (its keys are
// built again if it comes back).
const hostGeneration = 5 * time.Minute

// hostEntry returns the entry of host, creating it; now is the time of the
// request. The memory of hosts has two generations: an entry used in the
// current one or the one before is kept, so that whatever the number of
// hosts in use none is rebuilt while it is used, and memory is bounded by
// the hosts used within two generations. l.mu must be held.
func (l *Limiter) hostEntry(host string, now time.Time) *hostEntry {
	if d := now.Sub(l.hostsGen); d >= hostGeneration || d < 0 {
		l.oldHosts, l.hosts, l.hostsGen = l.hosts, make(map[string]*hostEntry), now
	}
	if e := l.hosts[host]; e != nil {
		return e
	}
	if e := l.oldHosts[host]; e != nil {
		l.hosts[host] = e
		return e
	}
	k := l.keys(host)
	e := &hostEntry{keys: k, list: []string{k.tat, k.leases, k.learned, k.leasesExp}}
	l.hosts[host] = e
	return e
}

// knownHost returns the entry of host, or nil. l.mu must be held.
func (l *Limiter) knownHost(host string) *hostEntry {
	if e := l.hosts[host]; e != nil {
		return e
	}
	return l.oldHosts[host]
}

// hostKeys are the Redis keys of one host.
type hostKeys struct {
	tat, leases, learned, leasesExp string
}

func (l *Limiter) keys(host string) hostKeys {
	base := l.cfg.prefix + "{" + host + "}:"
	return hostKeys{tat: base + "t", leases: base + "f", learned: base + "m", leasesExp: base + "x"}
}

// gate is the local queue of one host: only its head talks to Redis, the
// other requests of this process wait in arrival order, and the head asks
// for their turns too (up to maxBatch requests per call). It exists while
// some request of the host is being admitted; l.mu guards it.
type gate struct {
	host       *hostEntry
	head, tail *waiter
	n          int
	wake       chan struct{} // nudges the head (a local release or Learn); made when it first sleeps
	nextAt     time.Time     // when the head expects its turn
	interval   time.Duration // spacing in force, from the last answer
	burst      int
}

// waiter is a request queued behind the head of its gate. l.mu guards its
// fields.
type waiter struct {
	prev, next *waiter
	ch         chan struct{} // closed when the waiter becomes the head or is granted
	turn       bool          // it is the head now
	granted    bool          // the head obtained its turn: gr
	gone       bool          // it gave up (left the queue)
	inBatch    bool          // the head is asking Redis for its turn

	lim      ezthrottle.Limit
	cost     int64
	deadline time.Time
	gr       grant
}

// grant is a turn obtained from Redis: the request may start at at (local
// clock; zero: at once), holding lease when a cap in flight is in force.
type grant struct {
	at    time.Time
	lease *lease
}

// at is the time of a turn wait after now; zero for a turn at once.
func at(now time.Time, wait time.Duration) time.Time {
	if wait <= 0 {
		return time.Time{}
	}
	return now.Add(wait)
}

func (gr grant) permit() ezthrottle.Permit {
	if gr.lease == nil {
		return noPermit{}
	}
	return gr.lease
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
// A request whose turn comes within reserveHorizon (250ms) is given that
// turn in Redis at once and sleeps until it: the shared schedule advances
// when the turn is given, not when the request wakes up, so late wake-ups
// never slow the pace down. A turn given and then not used (the caller's
// context ends while it sleeps) is not given back.
//
// A wait for the pace or a pause is predicted from Redis's answer: when it
// ends after a.Deadline, Acquire returns a *ezthrottle.ThrottleError at once.
// A wait for a free slot in flight cannot be predicted; it is bounded by ctx
// and a.Deadline. When Redis is unavailable Acquire uses the local fallback
// (WithFailOpen, the default) or returns an *UnavailableError
// (WithFailClosed).
func (l *Limiter) Acquire(ctx context.Context, a ezthrottle.Admission) (ezthrottle.Permit, error) {
	return l.acquire(ctx, a, costOf(a))
}

// costOf is the cost of an admission in units of the pace: a.Cost rounded
// up, 0 meaning 1; -1 for a cost that is not a finite positive number.
func costOf(a ezthrottle.Admission) int64 {
	c := a.Cost
	switch {
	case c == 0:
		return 1
	case c < 0 || math.IsNaN(c) || math.IsInf(c, 0) || c > math.MaxInt32:
		return -1
	}
	return int64(math.Ceil(c))
}

// acquire admits a request of the given cost: it takes cost x interval of
// the shared schedule (cost tokens of the bucket).
func (l *Limiter) acquire(ctx context.Context, a ezthrottle.Admission, cost int64) (ezthrottle.Permit, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := a.Limit.Validate(); err != nil {
		return nil, err
	}
	if cost < 1 {
		return nil, &ezthrottle.CostError{Host: a.Key, Cost: a.Cost, Burst: float64(burstOf(a.Limit))}
	}
	if burst := int64(burstOf(a.Limit)); cost > burst && intervalMicros(a.Limit.Rate) > 0 {
		return nil, &CostError{Host: a.Key, Cost: cost, Burst: burst}
	}
	start := l.clock.Now()
	g, gr, queued, err := l.enter(ctx, a, cost, start)
	if err != nil {
		return nil, err
	}
	if g != nil { // the head of the gate: it asks Redis
		var degrade bool
		gr, err, degrade = l.serve(ctx, a, cost, g, start, queued)
		l.leave(a.Key, g)
		if degrade {
			return l.degraded(ctx, a, err)
		}
		if err != nil {
			return nil, err
		}
	}
	return l.await(ctx, a, gr, start)
}

// await sleeps until the granted turn. If ctx ends first the turn is lost
// and its lease released.
func (l *Limiter) await(ctx context.Context, a ezthrottle.Admission, gr grant, start time.Time) (ezthrottle.Permit, error) {
	if !gr.at.IsZero() && gr.at.After(l.clock.Now()) {
		t := ezthrottle.NewTimerAt(l.clock, gr.at)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			if gr.lease != nil {
				gr.lease.Release()
			}
			return nil, l.deadlineError(ctx.Err(), a, start)
		}
	}
	return gr.permit(), nil
}

// enter makes the request the head of its host's gate (g not nil), waiting
// in line when another request of this process is being admitted, unless
// the head obtains its turn meanwhile (gr). queued reports whether it had
// to queue.
func (l *Limiter) enter(ctx context.Context, a ezthrottle.Admission, cost int64, start time.Time) (g *gate, gr grant, queued bool, err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, grant{}, false, ErrClosed
	}
	g = l.gates[a.Key]
	if g == nil {
		g = &gate{
			host:     l.hostEntry(a.Key, start),
			interval: time.Duration(intervalMicros(a.Limit.Rate)) * time.Microsecond,
			burst:    burstOf(a.Limit),
		}
		l.gates[a.Key] = g
		l.mu.Unlock()
		return g, grant{}, false, nil
	}
	if !a.Deadline.IsZero() {
		if wait := g.predict(start); start.Add(wait).After(a.Deadline) {
			l.mu.Unlock()
			return nil, grant{}, false, &ezthrottle.ThrottleError{Host: a.Key, Wait: wait, Predicted: true}
		}
	}
	w := &waiter{ch: make(chan struct{}), lim: a.Limit, cost: cost, deadline: a.Deadline}
	g.push(w)
	l.mu.Unlock()

	var tc <-chan time.Time
	if !a.Deadline.IsZero() {
		t := ezthrottle.NewTimerAt(l.clock, a.Deadline)
		defer t.Stop()
		tc = t.C()
	}
	var cerr error
	select {
	case <-w.ch:
	case <-ctx.Done():
		cerr = ctx.Err()
	case <-tc:
	}
	l.mu.Lock()
	switch {
	case w.granted:
		l.mu.Unlock()
		if cerr != nil { // given a turn, but the caller is gone
			if w.gr.lease != nil {
				w.gr.lease.Release()
			}
			return nil, grant{}, false, l.deadlineError(cerr, a, start)
		}
		return nil, w.gr, true, nil // a turn within the deadline: keep it
	case w.turn:
		l.mu.Unlock()
		if cerr != nil {
			l.leave(a.Key, g)
			return nil, grant{}, false, l.deadlineError(cerr, a, start)
		}
		return g, grant{}, true, nil
	}
	g.remove(w)
	w.gone = true
	l.mu.Unlock()
	if cerr != nil {
		return nil, grant{}, false, l.deadlineError(cerr, a, start)
	}
	return nil, grant{}, false, &ezthrottle.ThrottleError{Host: a.Key, Wait: l.clock.Now().Sub(start)}
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

// nudge wakes the head of host's gate, if any, to ask Redis again now.
func (l *Limiter) nudge(host string) {
	l.mu.Lock()
	if g := l.gates[host]; g != nil && g.wake != nil {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	l.mu.Unlock()
}

// newID returns a lease ID unique across processes.
func (l *Limiter) newID() string {
	return l.idPrefix + strconv.FormatUint(l.seq.Add(1), 36)
}

// orderReleases puts first the released leases whose expiry in Redis is
// still at least two thirds of a lease TTL away (keep of them): a request
// given its turn at once takes one over without a new expiry, as safe as a
// lease renewed every third of the TTL (the keeper renews the new holder
// within a third).
func (l *Limiter) orderReleases(rs []released, now time.Time) ([]released, int) {
	keep := 0
	fresh := now.Add(-l.cfg.leaseTTL / 3)
	for i, r := range rs {
		if r.scored.After(fresh) {
			rs[i], rs[keep] = rs[keep], rs[i]
			keep++
		}
	}
	return rs, keep
}

// idArg is the new-lease-ID argument of the request at position i of an
// acquire call: empty when it would take over the i-th released lease
// (*ids starts with the released IDs), else a new ID, appended to *ids.
func (l *Limiter) idArg(ids *[]string, i int) string {
	if i < len(*ids) {
		return ""
	}
	id := l.newID()
	*ids = append(*ids, id)
	return id
}

// scriptArgs starts the arguments of a script call: empty, or in tests
// the test clock's time in µs (see testClockSrc).
func (l *Limiter) scriptArgs(buf []any) []any {
	if l.serverNow == nil {
		return buf[:0]
	}
	return append(buf[:0], l.serverNow().UnixMicro())
}

// decision is the acquire script's answer.
type decision struct {
	granted  int             // requests admitted, in order
	waits    []time.Duration // the granted requests' waits until their turns
	reason   int64           // why the next one was not
	wait     time.Duration   // how long the next one would wait
	interval time.Duration
	leased   bool // the granted requests hold leases (a cap is in force)
}

const (
	reasonPaused = 1
	reasonRate   = 2
	reasonSlots  = 3
	reasonCost   = 4
)

// parseDecision checks and decodes the acquire script's reply to a call for
// n requests.
func parseDecision(v []int64, n int) (decision, error) {
	if len(v) < 5 || v[0] < 0 || int(v[0]) > n || len(v) != 5+int(v[0]) ||
		v[1] < 0 || v[1] > reasonCost || v[3] < 0 {
		return decision{}, fmt.Errorf("redislimit: unexpected reply from the acquire script: %v", v)
	}
	d := decision{
		granted:  int(v[0]),
		reason:   v[1],
		wait:     micros(v[2]),
		interval: micros(v[3]),
		leased:   v[4] > 0,
	}
	if d.granted > 0 {
		d.waits = make([]time.Duration, d.granted)
		for i := range d.waits {
			d.waits[i] = micros(v[5+i])
		}
	}
	return d, nil
}

// maxWaitMicros is how far ahead Redis may give a request its turn: up to
// reserveHorizon, and never after its deadline.
func maxWaitMicros(now, deadline time.Time) int64 {
	m := reserveHorizon
	if !deadline.IsZero() {
		m = min(m, deadline.Sub(now))
	}
	return max(m.Microseconds(), 0)
}

// collect marks the waiters right behind the head that the head asks Redis
// for (same Limit, arrival order, at most maxBatch - 1).
func (l *Limiter) collect(g *gate, lim ezthrottle.Limit, buf []*waiter) []*waiter {
	l.mu.Lock()
	for w := g.head; w != nil && len(buf) < maxBatch-1 && w.lim == lim; w = w.next {
		w.inBatch = true
		buf = append(buf, w)
	}
	l.mu.Unlock()
	return buf
}

// micros converts microseconds from Redis to a Duration, clamped to
// [0, math.MaxInt64] instead of overflowing into a negative wait.
func micros(us int64) time.Duration {
	const maxMicros = math.MaxInt64 / int64(time.Microsecond)
	return time.Duration(min(max(us, 0), maxMicros)) * time.Microsecond
}

// serve asks Redis until the request is admitted, cannot be admitted in
// time, or Redis fails (degrade is then true and err the Redis error). In
// each call it asks for the waiters queued behind it too, and hands them
// the turns Redis gives.
func (l *Limiter) serve(ctx context.Context, a ezthrottle.Admission, cost int64, g *gate, start time.Time, queued bool) (gr grant, err error, degrade bool) {
	k, keys := g.host.keys, g.host.list
	burst := burstOf(a.Limit)
	static := g.host.static(a.Limit, l.cfg.leaseTTL)
	first := !queued
	var (
		batch []*waiter
		ids   []string
		args  []any
	)
	now := start
	for {
		probe, ok, lastErr := l.useRedis()
		if !ok {
			return grant{}, lastErr, true
		}
		if !first || queued {
			now = l.clock.Now()
		}
		batch = l.collect(g, a.Limit, batch[:0])
		rel, keep := l.orderReleases(l.takeReleases(k.leases), now)
		if n := 8 + len(rel) + 3*(1+len(batch)); cap(args) < n {
			args = make([]any, 0, n)
			ids = make([]string, 0, len(rel)+1+len(batch))
		}
		args = append(l.scriptArgs(args), static...)
		args = append(args, len(rel), keep)
		ids = ids[:0]
		for _, r := range rel {
			args = append(args, r.id)
			ids = append(ids, r.id)
		}
		// The i-th admitted request takes over the i-th released lease
		// (ids[i]), the others get new IDs.
		args = append(args, cost, maxWaitMicros(now, a.Deadline), l.idArg(&ids, 0))
		for i, w := range batch {
			args = append(args, w.cost, maxWaitMicros(now, w.deadline), l.idArg(&ids, i+1))
		}
		v, err := l.runAcquire(ctx, keys, args)
		var d decision
		if err == nil {
			d, err = parseDecision(v, 1+len(batch))
		}
		if err != nil {
			l.deliver(g, a.Key, k, batch, ids, decision{}, now, nil, time.Time{})
			// Whether the script ran is unknown: the releases it carried
			// and the leases it may have added are released (again).
			l.requeue(k.leases, ids)
			if cerr := callerDone(ctx); cerr != nil {
				l.probeAborted(probe)
				return grant{}, l.deadlineError(cerr, a, start), false
			}
			l.failed(err)
			return grant{}, err, true
		}
		l.succeeded()
		asked := now
		if d.granted == 0 || d.waits[d.granted-1] > 0 {
			now = l.clock.Now() // turns are counted from the answer
		}
		if d.granted > 0 {
			l.decisions.Add(uint64(d.granted))
			return l.deliver(g, a.Key, k, batch, ids, d, now, rel[:keep], asked), nil, false
		}
		l.decisions.Add(1)
		l.deliver(g, a.Key, k, batch, ids, d, now, nil, time.Time{})
		if d.reason == reasonCost {
			return grant{}, &CostError{Host: a.Key, Cost: cost, Burst: int64(burst)}, false
		}

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
		sleep := wait
		if d.reason == reasonRate {
			// Come back when the turn is within the horizon, with room for
			// a late wake-up: the turn is then given at its due time.
			sleep = max(wait-reserveHorizon*3/4, 0)
		}
		sleep = min(sleep, maxRecheck)
		if !a.Deadline.IsZero() {
			left := a.Deadline.Sub(now)
			if !slotBound && wait > left {
				if first {
					return grant{}, &ezthrottle.ThrottleError{Host: a.Key, Wait: wait, Predicted: true}, false
				}
				return grant{}, &ezthrottle.ThrottleError{Host: a.Key, Wait: now.Sub(start)}, false
			}
			if left <= 0 {
				return grant{}, &ezthrottle.ThrottleError{Host: a.Key, Wait: now.Sub(start)}, false
			}
			sleep = min(sleep, left)
		}
		first = false
		if err := l.sleepUntil(ctx, g, now.Add(sleep)); err != nil {
			return grant{}, l.deadlineError(err, a, start), false
		}
	}
}

// deliver hands the turns of d to the head (its grant is returned) and to
// the batched waiters (d.waits[1:], in order), and returns the others to
// the queue. A turn given to a waiter that gave up meanwhile is lost; its
// lease is released.
//
// ids are the lease IDs of the call's requests, in order; kept are the
// released leases the first requests took over without a new expiry (when
// given their turn at once: the script leaves their expiry as it was);
// asked is when the call was made (the new expiries are at least a lease
// TTL after it).
func (l *Limiter) deliver(g *gate, host string, k hostKeys, batch []*waiter, ids []string, d decision, now time.Time, kept []released, asked time.Time) grant {
	var head grant
	var fresh []*lease
	if d.granted > 0 {
		head.at = at(now, d.waits[0])
		if d.leased {
			fresh = make([]*lease, d.granted)
			for i := range fresh {
				scored := asked
				if i < len(kept) && d.waits[i] == 0 {
					scored = kept[i].scored
				}
				fresh[i] = &lease{l: l, host: host, key: k.leases, expKey: k.leasesExp, id: ids[i], scored: scored}
			}
			head.lease = fresh[0]
			l.hold(fresh) // before any holder can release it
		}
	}
	var orphans []*lease
	l.mu.Lock()
	for i, w := range batch {
		w.inBatch = false
		if i+1 >= d.granted {
			continue
		}
		gr := grant{at: at(now, d.waits[i+1])}
		if fresh != nil {
			gr.lease = fresh[i+1]
		}
		if w.gone {
			if gr.lease != nil {
				orphans = append(orphans, gr.lease)
			}
			continue
		}
		g.remove(w)
		w.granted = true
		w.gr = gr
		close(w.ch)
	}
	if d.granted > 0 {
		if last := now.Add(d.waits[d.granted-1]); last.After(g.nextAt) {
			g.nextAt = last
		}
	}
	l.mu.Unlock()
	for _, p := range orphans {
		p.Release()
	}
	return head
}

// sleepUntil waits until at, or until the gate is nudged; it returns
// ctx.Err() when ctx ends first.
func (l *Limiter) sleepUntil(ctx context.Context, g *gate, at time.Time) error {
	l.mu.Lock()
	if g.wake == nil {
		g.wake = make(chan struct{}, 1)
	}
	wake := g.wake
	l.mu.Unlock()
	t := ezthrottle.NewTimerAt(l.clock, at)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-wake:
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
	if l.opTimeout > 0 {
		return context.WithTimeout(ctx, l.opTimeout)
	}
	return ctx, func() {}
}

// honoursDeadlines reports whether rdb applies context deadlines to its
// network I/O: go-redis clients do only with ContextTimeoutEnabled.
// Clients of other types are assumed to.
func honoursDeadlines(rdb redis.Scripter) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return true
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
	learned := iv != "" || sl != "" || pz != ""
	if !learned && !s.HasAvailable {
		return
	}
	if l.fallback != nil {
		l.fallback.Learn(ctx, key, s)
	}
	if s.HasAvailable {
		l.lowerTo(ctx, key, s.Available)
	}
	// What was learned matters beyond the request that saw it.
	if learned && l.runScript(ctx, l.sc.learn, []string{l.keys(key).learned}, iv, sl, pz, l.cfg.learnedTTL.Milliseconds()) {
		l.nudge(key)
	}
}

// runScript runs a script that changes a host's shared state outside an
// admission (a learned limit, a lowered bucket), even when ctx is
// cancelled: it counts the round trip and records Redis's health. It
// reports whether the script ran; it does nothing while Redis is
// unusable or the Limiter closed.
func (l *Limiter) runScript(ctx context.Context, sc *redis.Script, keys []string, args ...any) bool {
	if l.isClosed() || !l.usable() {
		return false
	}
	cctx, cancel := l.opCtx(context.WithoutCancel(ctx))
	err := sc.Run(cctx, l.rdb, keys, append(l.scriptArgs(nil), args...)...).Err()
	cancel()
	l.rts.Add(1)
	if err != nil {
		l.failed(err)
		return false
	}
	l.succeeded()
	return true
}

// lowerTo applies Signals.Available: the shared bucket of key is lowered to
// avail cost units (its TAT moved on), never raised: other processes'
// requests in flight are not known here. It needs the limit last seen for
// key in this process (a key never acquired here is left alone).
func (l *Limiter) lowerTo(ctx context.Context, key string, avail float64) {
	if math.IsNaN(avail) {
		return
	}
	l.mu.Lock()
	e := l.knownHost(key)
	l.mu.Unlock()
	if e == nil {
		return
	}
	ha := e.args.Load()
	if ha == nil {
		return
	}
	iv, burst := intervalMicros(ha.lim.Rate), burstOf(ha.lim)
	if iv <= 0 || avail >= float64(burst) {
		return
	}
	l.runScript(ctx, l.sc.lower, []string{e.keys.tat, e.keys.learned}, iv, burst, int64(math.Max(avail, 0)))
}

func (l *Limiter) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops renewing leases and releases the leases this Limiter still
// holds, and those released but not sent yet (best effort, in one round
// trip: those it cannot release expire after the lease TTL). Acquire then
// fails with ErrClosed. Close does not close the Redis client.
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
	rel := l.pend
	for key, ls := range groupLeases(l.held) {
		for _, p := range ls {
			rel[key] = append(rel[key], released{id: p.id})
		}
	}
	l.held = make(map[*lease]struct{})
	l.pend, l.npend = make(map[string][]released), 0
	close(l.stop)
	l.lmu.Unlock()
	l.wg.Wait()
	if len(rel) == 0 || !l.usable() {
		return nil
	}
	if err := l.flush(rel); err != nil {
		return fmt.Errorf("redislimit: Close: releasing leases (they expire on their own): %w", err)
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
	// RoundTrips counts the calls to Redis (a pipeline is one): admission
	// calls, background releases and renewals, Learn and Inspect. With a
	// cap in flight, an admitted request costs about one: its release
	// travels with the next admission call of its host.
	RoundTrips uint64
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
		RoundTrips:       l.rts.Load(),
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
	l.fmu.Lock() // after the releases being sent in the background
	defer l.fmu.Unlock()
	args := l.scriptArgs(nil)
	for _, r := range l.takeReleases(k.leases) {
		args = append(args, r.id)
	}
	v, err := l.sc.inspect.Run(cctx, l.rdb, []string{k.tat, k.leases, k.learned}, args...).Int64Slice()
	l.rts.Add(1)
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
