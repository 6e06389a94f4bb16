// Package ezthrottle makes rate-limited HTTP APIs boring.
//
// Its Transport is an http.RoundTripper that wraps the *http.Client you hand
// to stripe-go, openai-go or your own code:
//
//   - every destination host is throttled: a token bucket plus a cap on
//     requests in flight (EZThrottle's pace by default, 2 requests per
//     second and 2 in flight), adapting live to the rate-limit headers the
//     API sends back (X-EZTHROTTLE-RPS and its X-Aqueduct-* and X-Aquifer-*
//     siblings, Retry-After, RateLimit, X-RateLimit-*, OpenAI's
//     x-ratelimit-*);
//   - when forwarding is configured (WithForwarding / WithClient), a 429, a
//     5xx, a network failure or a throttle wait that cannot finish in time no
//     longer loses the call: it becomes a durable EZThrottle job and the
//     caller receives a synthetic 202 Accepted carrying the job ID (or a
//     *ForwardedError, see WithForwardedError).
//
// The Transport follows the http.RoundTripper contract strictly: it is safe
// for concurrent use, never modifies the caller's request, always closes the
// request body, never returns a response together with an error, drains and
// closes every response it discards, and honours the request context. When
// forwarding is not possible or fails, the caller receives exactly what the
// upstream returned.
//
// # Throttling
//
// Each host (scheme, lower-cased host and port; see HostKey) has a token
// bucket and a cap on requests in flight (WithDefaultLimit, WithHostLimit).
// A slot in flight is held until the response body is closed. Waiters are
// served in arrival order. A request waits only while its turn can come
// before its context's deadline (and WithMaxWait): otherwise it does not
// wait at all and is forwarded, or fails with a *ThrottleError that
// satisfies errors.Is(err, context.DeadlineExceeded). Rate-limit headers
// adjust the host's limits before the response is returned, so they apply
// to the very next request; a Retry-After or an exhausted quota pauses the
// host (capped by WithMaxPause, plus a small jitter). The limiter is
// pluggable (Limiter, WithLimiter); the default is a MemoryLimiter.
//
// # Forwarding
//
// With WithForwarding (or WithClient), a request answered with a forwarding
// status (DefaultForwardStatuses), failing with a network error (not the
// caller's cancellation) or overflowing the throttle becomes an
// ezclient.Job: the same method, URL, headers and body bytes, plus the
// job options of the Transport (WithJobDefaults) and of the request
// (WithJobOptions). Hop-by-hop headers are dropped. The Authorization header
// is copied into the job by default, because the engine calls the API on
// the user's behalf: the API credentials then travel to, and are stored by,
// the EZThrottle engine. Use WithoutForwardHeaders("Authorization") or
// WithForwardHeaders to restrict what is copied.
//
// Writes are not replayed blindly: after a 5xx or a network error a POST or
// PATCH is forwarded only when it carries an Idempotency-Key header or the
// failure proves it was not processed (429, 503 with Retry-After, dial
// failure); see WithForwardUnsafeWrites. The idempotent key is chosen as
// KeyStrategy documents. A request whose context carries
// ezclient.SuppressForwarding is throttled but never forwarded.
//
// An answer with a forwarding status is read (up to 64 KiB) for at most
// WithAnswerTimeout before the request is forwarded: an answer that
// trickles is returned as it is, not forwarded. While a larger answer waits
// on the connection, the submission keeps a quarter of the time left before
// the request's deadline back, for the caller to read that answer should
// forwarding fail.
//
// The caller receives a synthetic 202 Accepted (IsForwarded,
// JobFromResponse), or a *ForwardedError with WithForwardedError; a Receipt
// planted with WithReceipt reports the job even through SDKs that hide the
// 202. AutoForward does the same for code that returns a *ForwardError.
package ezthrottle

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Defaults of the Transport's options.
const (
	// DefaultMaxPause caps a pause requested by Retry-After or an
	// exhausted quota.
	DefaultMaxPause = 5 * time.Minute
	// DefaultPauseJitter bounds the random delay added to a pause so the
	// waiters of a host do not stampede when it ends.
	DefaultPauseJitter = time.Second
	// DefaultMinRate floors a pace learned from a header (a "0" pace would
	// otherwise stall the host forever): one request per minute.
	DefaultMinRate = 1.0 / 60
	// DefaultMaxForwardBody is the largest request body that is forwarded,
	// measured as it travels to the engine: ezclient.WireBodySize, the body
	// JSON-escaped twice inside the Cloud envelope (plain text counts
	// once, a quote or backslash four times). It leaves room for the rest
	// of the job within the proxy's 1 MiB envelope limit.
	DefaultMaxForwardBody = 256 << 10
)

// Submitter submits jobs to an EZThrottle engine. *ezclient.Client
// implements it.
type Submitter interface {
	Submit(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error)
}

// SubmitterFunc adapts a function to Submitter, for example to submit to
// an in-process engine. A function says nothing of the engine it submits
// to: use its WithDialect method for a self-hosted engine, and
// DecorateSubmitter to decorate an *ezclient.Client (see SubmitterDialect).
type SubmitterFunc func(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error)

// Submit calls f.
func (f SubmitterFunc) Submit(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
	return f(ctx, job)
}

type config struct {
	base         http.RoundTripper
	limiter      Limiter
	clock        Clock
	logger       *slog.Logger
	defaultLimit Limit
	hostRules    []hostRule
	maxWait      time.Duration
	maxPause     time.Duration
	pauseJitter  time.Duration
	minRate      float64
	capRate      float64
	capInFlight  int
	idleTimeout  time.Duration

	answerTimeout time.Duration

	submitter        Submitter
	forwardStatuses  statusSet
	forwardNetwork   bool
	forwardOverflow  bool
	forwardAllWrites bool
	forwardedError   bool
	maxBody          int64
	headerAllow      map[string]bool
	headerDeny       map[string]bool
	jobDefaults      []JobOption
	keyStrategy      KeyStrategy

	tel telemetryConfig // OpenTelemetry (otel.go)

	budgetRules []budgetRule // WithTokenBudget
	budgetCap   TokenBudget  // WithLearnedBudgetCap
	costFunc    CostFunc     // WithCost

	errs []error
}

// Option configures a Transport.
type Option func(*config)

func (c *config) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// WithBase sets the RoundTripper that performs the requests (default
// http.DefaultTransport). It may be an otelhttp transport, or anything else.
func WithBase(rt http.RoundTripper) Option {
	return func(c *config) {
		if rt == nil {
			c.fail("ezthrottle: WithBase(nil)")
			return
		}
		c.base = rt
	}
}

// WithLimiter replaces the in-memory per-host limiter, e.g. with one shared
// by several processes. WithClock and WithIdleTimeout then do not apply to it.
func WithLimiter(l Limiter) Option {
	return func(c *config) {
		if l == nil {
			c.fail("ezthrottle: WithLimiter(nil)")
			return
		}
		c.limiter = l
	}
}

// WithClock sets the time source (default: the system clock), for tests.
// A test clock should also be a TimerAtClock and an AfterFuncClock (see
// both): without AfterFunc, idle hosts are evicted inside calls only.
func WithClock(clk Clock) Option {
	return func(c *config) {
		if clk == nil {
			c.fail("ezthrottle: WithClock(nil)")
			return
		}
		c.clock = clk
	}
}

// WithLogger sets the logger (default: discard). It logs forwarding
// failures at Warn and forwarded requests at Info; it never logs header
// values or bodies, and every record goes through a handler that scrubs
// credentials (see the README's Security section).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithDefaultLimit sets the limit of every host without a WithHostLimit
// rule (default DefaultLimit()).
func WithDefaultLimit(l Limit) Option {
	return func(c *config) {
		if err := l.Validate(); err != nil {
			c.errs = append(c.errs, err)
			return
		}
		c.defaultLimit = l
	}
}

// WithHostLimit sets the limit of the hosts matching pattern: an exact host
// ("api.stripe.com", any port), a host and port ("localhost:8080") or a
// wildcard ("*.example.com": every subdomain, not example.com itself).
// Exact rules win over wildcards, the longest wildcard wins among them, and
// a rule with a port wins over one without. Use Unlimited() to exempt a host.
func WithHostLimit(pattern string, l Limit) Option {
	return func(c *config) {
		r, err := parseHostPattern(pattern)
		if err != nil {
			c.errs = append(c.errs, err)
			return
		}
		if err := l.Validate(); err != nil {
			c.errs = append(c.errs, fmt.Errorf("host %q: %w", pattern, err))
			return
		}
		r.limit = l
		c.hostRules = append(c.hostRules, r)
	}
}

// WithMaxWait bounds how long a request waits for its turn (default: only
// the request context's deadline bounds it). A request whose predicted wait
// is longer does not wait: it is forwarded, or fails with a *ThrottleError
// whose Cause is ErrMaxWait.
func WithMaxWait(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.fail("ezthrottle: WithMaxWait(%v): negative", d)
			return
		}
		c.maxWait = d
	}
}

// WithMaxPause caps the pause applied on Retry-After or an exhausted quota
// (default DefaultMaxPause), so nothing can stall a host for long.
func WithMaxPause(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail("ezthrottle: WithMaxPause(%v): must be positive", d)
			return
		}
		c.maxPause = d
	}
}

// WithPauseJitter bounds the random delay added to a pause (default
// DefaultPauseJitter; the jitter is at most a tenth of the pause, at least
// 10 ms). 0 disables it.
func WithPauseJitter(max time.Duration) Option {
	return func(c *config) {
		if max < 0 {
			c.fail("ezthrottle: WithPauseJitter(%v): negative", max)
			return
		}
		c.pauseJitter = max
	}
}

// WithMinRate floors a pace learned from a header (default DefaultMinRate).
func WithMinRate(rps float64) Option {
	return func(c *config) {
		if !(rps > 0) {
			c.fail("ezthrottle: WithMinRate(%v): must be positive", rps)
			return
		}
		c.minRate = rps
	}
}

// WithLearnedLimitCap caps what pace headers may set: at most rps requests
// per second and maxInFlight in flight (0 leaves either uncapped, the
// default).
func WithLearnedLimitCap(rps float64, maxInFlight int) Option {
	return func(c *config) {
		if rps < 0 || rps != rps || maxInFlight < 0 {
			c.fail("ezthrottle: WithLearnedLimitCap(%v, %d): negative", rps, maxInFlight)
			return
		}
		c.capRate, c.capInFlight = rps, maxInFlight
	}
}

// WithIdleTimeout sets how long the default limiter keeps an idle host's
// state (default DefaultIdleTimeout); it and the Transport's cached
// resolution of the host are evicted at most half of it later, by later
// requests to any host.
func WithIdleTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail("ezthrottle: WithIdleTimeout(%v): must be positive", d)
			return
		}
		c.idleTimeout = d
	}
}

// WithForwarding enables forwarding: requests that fail with a forwarding
// status, a network error or a throttle overflow are submitted to s as jobs
// carrying the request's method, URL, headers and body, plus defaults.
// Without it the Transport only throttles. Do not pass an *ezclient.Client
// whose own HTTP client goes through this Transport.
func WithForwarding(s Submitter, defaults ...JobOption) Option {
	return func(c *config) {
		if s == nil {
			c.fail("ezthrottle: WithForwarding(nil)")
			return
		}
		c.submitter = s
		c.jobDefaults = append(c.jobDefaults, defaults...)
	}
}

// WithClient is WithForwarding for an *ezclient.Client.
func WithClient(cl *ezclient.Client, defaults ...JobOption) Option {
	if cl == nil {
		return func(c *config) { c.fail("ezthrottle: WithClient(nil)") }
	}
	return WithForwarding(cl, defaults...)
}

// WithJobDefaults adds options applied to every forwarded job (webhooks,
// regions, execution mode, retry policy, metadata, ...). Per-request options
// (WithJobOptions) are applied after them.
func WithJobDefaults(opts ...JobOption) Option {
	return func(c *config) { c.jobDefaults = append(c.jobDefaults, opts...) }
}

// WithForwardStatuses sets the upstream statuses that forward a request
// (default DefaultForwardStatuses()). No codes disables status forwarding.
func WithForwardStatuses(codes ...int) Option {
	return func(c *config) {
		var s statusSet
		for _, code := range codes {
			if code < 100 || code > 599 {
				c.fail("ezthrottle: WithForwardStatuses: %d is not an HTTP status", code)
				return
			}
			s.add(code)
		}
		c.forwardStatuses = s
	}
}

// WithForwardOnNetworkError sets whether network errors forward (default true).
func WithForwardOnNetworkError(on bool) Option {
	return func(c *config) { c.forwardNetwork = on }
}

// WithForwardOnOverflow sets whether a request whose throttle wait cannot
// finish in time is forwarded instead of failing (default true).
func WithForwardOnOverflow(on bool) Option {
	return func(c *config) { c.forwardOverflow = on }
}

// WithForwardUnsafeWrites forwards non-idempotent requests (POST, PATCH)
// after a 5xx or a network error even without an Idempotency-Key header. By
// default such a write is forwarded only when the upstream cannot have
// processed it (429, 503 with Retry-After, dial failure) or when it carries
// an Idempotency-Key, because the engine would execute it a second time.
func WithForwardUnsafeWrites() Option {
	return func(c *config) { c.forwardAllWrites = true }
}

// WithMaxForwardBody sets the largest request body that can be forwarded
// (default DefaultMaxForwardBody), measured as it travels to the engine
// (ezclient.WireBodySize: JSON-escaped twice inside the Cloud envelope). A
// larger body is not forwarded (ErrBodyTooLarge) and the caller gets the
// original response or error. A body without GetBody is captured while it
// is sent, up to this many bytes.
func WithMaxForwardBody(n int64) Option {
	return func(c *config) {
		if n < 0 {
			c.fail("ezthrottle: WithMaxForwardBody(%d): negative", n)
			return
		}
		c.maxBody = n
	}
}

// WithAnswerTimeout bounds how long the Transport reads an upstream answer
// that has a forwarding status before it forwards the request (default
// DefaultAnswerTimeout), and how long it drains a response body it
// discards. The read never outlasts the request's context either. An
// answer that has not arrived within it (up to 64 KiB, see the
// README's Forwarding section) is not forwarded: the caller receives the
// response at once, its body yielding the bytes already read followed by
// the rest of the stream.
func WithAnswerTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail("ezthrottle: WithAnswerTimeout(%v): must be positive", d)
			return
		}
		c.answerTimeout = d
	}
}

// WithForwardHeaders restricts the request headers copied into a job to the
// named ones (case-insensitive). By default every header is copied except
// hop-by-hop headers, Host and Content-Length.
//
// Authorization is copied by default: the engine calls the API on the
// user's behalf and needs the API's credentials. Exclude it with
// WithoutForwardHeaders("Authorization") if the job's target does not need it.
func WithForwardHeaders(names ...string) Option {
	return func(c *config) {
		if c.headerAllow == nil {
			c.headerAllow = map[string]bool{}
		}
		for _, n := range names {
			c.headerAllow[http.CanonicalHeaderKey(n)] = true
		}
	}
}

// WithoutForwardHeaders keeps the named request headers out of jobs.
func WithoutForwardHeaders(names ...string) Option {
	return func(c *config) {
		if c.headerDeny == nil {
			c.headerDeny = map[string]bool{}
		}
		for _, n := range names {
			c.headerDeny[http.CanonicalHeaderKey(n)] = true
		}
	}
}

// WithKeyStrategy sets how a job's idempotent key is chosen when the
// request has no Idempotency-Key header (default HashKeys()).
func WithKeyStrategy(s KeyStrategy) Option {
	return func(c *config) {
		if s == nil {
			c.fail("ezthrottle: WithKeyStrategy(nil)")
			return
		}
		c.keyStrategy = s
	}
}

// WithForwardedError makes RoundTrip return a *ForwardedError carrying the
// submission instead of the synthetic 202. Use it with SDKs that decode any
// 2xx into an empty result without error (openai-go does); http.Client
// wraps it in a *url.Error, errors.As finds it.
func WithForwardedError() Option {
	return func(c *config) { c.forwardedError = true }
}

// Transport is an http.RoundTripper that throttles requests per host and,
// when forwarding is configured, turns failed ones into EZThrottle jobs.
// Create it with New, Wrap or Middleware; it is safe for concurrent use.
type Transport struct {
	cfg     config
	base    http.RoundTripper
	limiter Limiter
	mem     *MemoryLimiter // limiter, when it is the in-memory one
	obs     observer       // nil: no observation (see observe.go)
	tel     *telemetry     // OpenTelemetry (otel.go); also obs
	jobMeta bool           // forwarded jobs may carry metadata (not self-hosted)
	bufPool sync.Pool      // *[]byte capture buffers
	clock   Clock
	log     *slog.Logger
	seed    maphash.Seed
	hot     atomic.Pointer[hostInfo]  // the host resolved last (see hostFor)
	live    atomic.Pointer[liveState] // the live view's recorder; nil: off (live.go)
	keys    [keyShards]keyShard
	llm     llmBudgets // LLM token budgets (llm_budget.go)

	// Idle entries of the host cache are evicted by generations: an entry
	// is stamped with the generation it was last used in, and the shards
	// are swept, keySweepShards per hostFor call, after each new
	// generation; an entry unused for a whole generation goes. A
	// generation starts with each pass of the MemoryLimiter's sweep (every
	// IdleTimeout/2), or, with another Limiter, when a miss finds the last
	// one older than IdleTimeout/2. When no call comes, a timer armed while
	// the cache holds entries does the same (armReaper).
	gen       atomic.Uint64
	genPass   atomic.Uint64 // the MemoryLimiter pass that started gen
	genAt     atomic.Int64  // when gen started (UnixNano; other Limiters)
	sweepNext atomic.Uint64 // next shard to sweep; keyShards: none
	reaper    sweepTimer    // sweeps when no call comes (see armReaper)
}

func newConfig(opts []Option) (config, error) {
	c := config{
		defaultLimit:    DefaultLimit(),
		maxPause:        DefaultMaxPause,
		pauseJitter:     DefaultPauseJitter,
		minRate:         DefaultMinRate,
		forwardNetwork:  true,
		forwardOverflow: true,
		maxBody:         DefaultMaxForwardBody,
		keyStrategy:     HashKeys(),
		answerTimeout:   DefaultAnswerTimeout,
	}
	for _, code := range DefaultForwardStatuses() {
		c.forwardStatuses.add(code)
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if len(c.errs) > 0 {
		return c, errors.Join(c.errs...)
	}
	if c.clock == nil {
		c.clock = SystemClock()
	}
	// Every line goes through the redacting handler (see internal/redact).
	c.logger = redact.Logger(c.logger, nil)
	return c, nil
}

// New returns a Transport. With no options it throttles every host at
// EZThrottle's pace over http.DefaultTransport and does not forward.
func New(opts ...Option) (*Transport, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return newTransport(c), nil
}

func newTransport(c config) *Transport {
	t := &Transport{cfg: c, base: c.base, limiter: c.limiter, clock: c.clock, log: c.logger, seed: maphash.MakeSeed()}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	if t.limiter == nil {
		t.limiter = NewMemoryLimiter(MemoryLimiterConfig{Clock: c.clock, IdleTimeout: c.idleTimeout})
	}
	t.mem, _ = t.limiter.(*MemoryLimiter)
	for i := range t.keys {
		t.keys[i].tab.Store(newHostTable(0))
	}
	t.sweepNext.Store(keyShards)
	t.genAt.Store(c.clock.Now().UnixNano())
	t.tel = newTelemetry(c.tel, c.clock)
	t.obs = t.tel
	t.tel.registerGauges(t)
	t.jobMeta = SubmitterDialect(c.submitter) != ezclient.DialectSelfHosted // self-hosted jobs have no metadata
	return t
}

// Wrap returns a copy of c whose Transport throttles (and, when configured,
// forwards) around c.Transport (http.DefaultTransport when nil). c itself
// is not modified; a nil c is treated as &http.Client{}.
func Wrap(c *http.Client, opts ...Option) (*http.Client, error) {
	var cp http.Client
	if c != nil {
		cp = *c
	}
	base := cp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	t, err := New(append(append([]Option(nil), opts...), WithBase(base))...)
	if err != nil {
		return nil, err
	}
	cp.Transport = t
	return &cp, nil
}

// Middleware returns the Transport as a middleware: each call of the
// returned function wraps a base RoundTripper. The options are validated
// once; all Transports made by one middleware share one limiter (unless
// WithLimiter gives one), so a host's limit holds across them.
func Middleware(opts ...Option) (func(http.RoundTripper) http.RoundTripper, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if c.limiter == nil {
		c.limiter = NewMemoryLimiter(MemoryLimiterConfig{Clock: c.clock, IdleTimeout: c.idleTimeout})
	}
	return func(base http.RoundTripper) http.RoundTripper {
		cc := c
		cc.base = base
		return newTransport(cc)
	}, nil
}

// Limiter returns the Transport's limiter (a *MemoryLimiter by default).
func (t *Transport) Limiter() Limiter { return t.limiter }

// Base returns the wrapped RoundTripper.
func (t *Transport) Base() http.RoundTripper { return t.base }

// CloseIdleConnections closes the idle connections of the base
// RoundTripper and of the submitter (an *ezclient.Client's connections to
// the engine), when they have such a method.
func (t *Transport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
	if ci, ok := t.cfg.submitter.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// HostKey returns the throttling key of a URL: scheme "://" lower-cased
// host ":" port, with the scheme's default port when the URL has none
// (e.g. "https://api.stripe.com:443").
func HostKey(u *url.URL) string {
	var buf [128]byte
	return string(appendHostKey(buf[:0], u.Scheme, u.Host))
}

func appendHostKey(b []byte, scheme, hostport string) []byte {
	b = appendLower(b, scheme)
	b = append(b, "://"...)
	hasPort := false
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.Contains(hostport[i:], "]") &&
		(hostport[0] == '[' || strings.IndexByte(hostport, ':') == i) {
		hasPort = true
	}
	b = appendLower(b, hostport)
	if !hasPort {
		switch {
		case strings.EqualFold(scheme, "https"):
			b = append(b, ":443"...)
		case strings.EqualFold(scheme, "http"):
			b = append(b, ":80"...)
		}
	}
	return b
}

// appendLower appends s lower-cased (ASCII).
func appendLower(b []byte, s string) []byte {
	n := len(b)
	b = append(b, s...)
	for i := n; i < len(b); i++ {
		b[i] = lower(b[i])
	}
	return b
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
