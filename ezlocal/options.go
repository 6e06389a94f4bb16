package ezlocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Defaults of a new Engine.
const (
	// DefaultAPIKey is the development API key every engine accepts unless
	// WithAPIKey replaces it. It is not a secret: the engine is for local use.
	DefaultAPIKey = "ezt_local_dev_key"
	// DefaultCustomerID is the customer the default API key belongs to.
	DefaultCustomerID = "cus_local"
	// DefaultRPS is the default pace per destination host.
	DefaultRPS = 2.0
	// DefaultMaxConcurrent is the default number of requests in flight per
	// destination host.
	DefaultMaxConcurrent = 2
	// DefaultMaxEnvelopeBytes bounds a Cloud proxy envelope (413 above it).
	DefaultMaxEnvelopeBytes = 1 << 20
	// DefaultMaxJobBytes bounds a self-hosted POST /jobs body (413 above it).
	DefaultMaxJobBytes = 1 << 20
	// DefaultMaxResponseBytes bounds how much of a destination's reply body
	// the engine keeps and delivers; longer bodies are truncated.
	DefaultMaxResponseBytes = 1 << 20
	// DefaultKeepAlive is the interval of SSE keepalive comments.
	DefaultKeepAlive = 15 * time.Second
	// DefaultRetryDelay is the first wait before a same-region retry when the
	// destination sends no Retry-After; it doubles per retry up to
	// maxRetryDelay.
	DefaultRetryDelay = time.Second
)

// DefaultWebhookRetries is the default webhook delivery retry schedule: after
// a failed delivery the engine waits 1, 2, 4 then 8 seconds (five attempts in
// all) before giving up.
func DefaultWebhookRetries() []time.Duration {
	return []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
}

// DefaultRetryPolicy is the retry policy of jobs that send none: up to three
// same-region retries of 429, 502, 503 and 504, no reroutes.
func DefaultRetryPolicy() ezclient.RetryPolicy {
	return ezclient.RetryPolicy{MaxRetries: 3, RetryCodes: []int{429, 502, 503, 504}}
}

// DefaultRegions returns the regions of a new engine: every region code
// known to ezclient, up, with no simulated latency. The first one ("iad") is
// the region of jobs that name none.
func DefaultRegions() []RegionConfig {
	codes := []ezclient.Region{
		ezclient.RegionIAD, ezclient.RegionLAX, ezclient.RegionORD, ezclient.RegionAMS, ezclient.RegionFRA,
		ezclient.RegionLHR, ezclient.RegionNRT, ezclient.RegionSIN, ezclient.RegionSYD,
	}
	rs := make([]RegionConfig, len(codes))
	for i, c := range codes {
		rs[i] = RegionConfig{Name: string(c)}
	}
	return rs
}

// maxRetryDelay caps the engine's own retry backoff and any Retry-After it
// honours between same-region retries.
const maxRetryDelay = time.Minute

// Clock is the engine's source of time. Every delay the engine applies
// (pacing, region latency, retry backoff, retry_at, timeouts, webhook retry
// schedule) goes through Sleep, so a test can make them instant and
// deterministic. SSE keepalive comments are the one exception: they use wall
// time, as they carry no meaning.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Sleep waits for d or until ctx is done, returning ctx.Err() then.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RegionConfig describes a simulated region (a worker of the engine).
type RegionConfig struct {
	// Name is the region code, e.g. "iad".
	Name string
	// Latency is added before every request the region makes.
	Latency time.Duration
	// Down marks the region as unavailable.
	Down bool
}

type apiKey struct {
	key, customer string
}

type secretPair struct {
	primary, secondary string
}

type config struct {
	addr             string
	clock            Clock
	hc               *http.Client
	logger           *slog.Logger
	keys             []apiKey
	keysSet          bool
	regions          []RegionConfig
	rps              float64
	maxConc          int
	webhookRetries   []time.Duration
	retryPolicy      ezclient.RetryPolicy
	retryDelay       time.Duration
	maxEnvelope      int64
	maxJob           int64
	maxResponse      int64
	keepAlive        time.Duration
	planLimit        int
	planRetryAfter   time.Duration
	secrets          map[string]secretPair
	admissionLimit   int
	admissionRetryIn time.Duration
	maxFinished      int
	eventHook        func(jobID string, ev Event)
	allowedHosts     map[string]bool // WithAllowedHosts, as hostName returns them
	anyHost          bool            // WithAllowedHosts("*")
	tracerProvider   trace.TracerProvider
	propagators      propagation.TextMapPropagator
	errs             []error
}

func defaultConfig() *config {
	return &config{
		addr:           "127.0.0.1:0",
		clock:          realClock{},
		logger:         slog.New(slog.DiscardHandler),
		keys:           []apiKey{{DefaultAPIKey, DefaultCustomerID}},
		regions:        DefaultRegions(),
		rps:            DefaultRPS,
		maxConc:        DefaultMaxConcurrent,
		webhookRetries: DefaultWebhookRetries(),
		retryPolicy:    DefaultRetryPolicy(),
		retryDelay:     DefaultRetryDelay,
		maxEnvelope:    DefaultMaxEnvelopeBytes,
		maxJob:         DefaultMaxJobBytes,
		maxResponse:    DefaultMaxResponseBytes,
		keepAlive:      DefaultKeepAlive,
		secrets:        map[string]secretPair{},
	}
}

func (c *config) errf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("ezlocal: "+format, args...))
}

// Option configures an Engine.
type Option func(*config)

// WithAddr sets the address Start listens on (default "127.0.0.1:0", a free
// loopback port).
func WithAddr(addr string) Option {
	return func(c *config) { c.addr = addr }
}

// WithClock replaces the engine's clock (default: wall time). Tests pass a
// clock whose Sleep returns at once to make every delay instant.
func WithClock(clk Clock) Option {
	return func(c *config) {
		if clk == nil {
			c.errf("WithClock(nil)")
			return
		}
		c.clock = clk
	}
}

// WithHTTPClient sets the client the engine uses to call destinations and
// deliver webhooks (default: a client of its own with a 30 s timeout over
// ezclient.NewHTTPTransport, which keeps up to 64 idle connections per host
// for concurrent jobs; Close releases them).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) {
		if hc == nil {
			c.errf("WithHTTPClient(nil)")
			return
		}
		c.hc = hc
	}
}

// WithLogger sets the logger (default: discard). Every record is scrubbed
// of credentials (URL user info, sensitive query values, credential
// headers, bearer tokens), at every level.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = redact.Logger(l, nil) // every record scrubbed (internal/redact)
		}
	}
}

// WithEventHook registers f to be called with every job event as it
// happens (for example to print a live log in a CLI). f runs synchronously
// on the engine's goroutines: it must be quick and must not call back into
// the engine's job methods for the same job.
func WithEventHook(f func(jobID string, ev Event)) Option {
	return func(c *config) { c.eventHook = f }
}

// WithTracerProvider sets the OpenTelemetry tracer provider of the engine's
// spans (default: the global one, otel.GetTracerProvider). The engine
// continues the trace a job was submitted with: it reads the trace context
// from the job's metadata (traceparent, tracestate, as the ezthrottle
// Transport writes them), else from its request headers, and records a
// SpanJob span for the execution with one client span per attempt (named
// after the method) and per webhook delivery (SpanWebhook). Each attempt and
// delivery carries its span's context in its headers, so the destination and
// the webhook receiver continue the same trace.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// WithPropagators sets the propagators the engine reads and writes trace
// context with (default: the global ones, otel.GetTextMapPropagator; use
// propagation.TraceContext{} for W3C traceparent and tracestate).
func WithPropagators(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.propagators = p }
}

// WithAPIKey adds an accepted API key belonging to customerID. The first
// WithAPIKey replaces DefaultAPIKey; later ones add more keys, and the first
// key given is the one APIKey returns.
func WithAPIKey(key, customerID string) Option {
	return func(c *config) {
		if strings.TrimSpace(key) == "" || strings.TrimSpace(customerID) == "" {
			c.errf("WithAPIKey: empty key or customer ID")
			return
		}
		if !c.keysSet {
			c.keys, c.keysSet = nil, true
		}
		c.keys = append(c.keys, apiKey{key, customerID})
	}
}

// WithRegions replaces the simulated regions (default DefaultRegions). The
// first region runs the jobs that name none.
func WithRegions(regions ...RegionConfig) Option {
	return func(c *config) {
		if len(regions) == 0 {
			c.errf("WithRegions: no regions")
			return
		}
		seen := map[string]bool{}
		for _, r := range regions {
			if strings.TrimSpace(r.Name) == "" || seen[r.Name] || r.Latency < 0 {
				c.errf("WithRegions: invalid or repeated region %+v", r)
				return
			}
			seen[r.Name] = true
		}
		c.regions = append([]RegionConfig(nil), regions...)
	}
}

// WithDefaultPace sets the pace applied to a destination host until its
// replies steer it (default DefaultRPS requests per second and
// DefaultMaxConcurrent in flight).
func WithDefaultPace(rps float64, maxConcurrent int) Option {
	return func(c *config) {
		if !(rps > 0) || math.IsInf(rps, 0) || maxConcurrent < 1 {
			c.errf("WithDefaultPace(%v, %d): need rps > 0 and maxConcurrent >= 1", rps, maxConcurrent)
			return
		}
		c.rps, c.maxConc = rps, maxConcurrent
	}
}

// WithWebhookRetries sets the waits between webhook delivery attempts
// (default DefaultWebhookRetries). No delays means a single attempt.
func WithWebhookRetries(delays ...time.Duration) Option {
	return func(c *config) {
		for _, d := range delays {
			if d < 0 {
				c.errf("WithWebhookRetries: negative delay %v", d)
				return
			}
		}
		c.webhookRetries = append([]time.Duration{}, delays...)
	}
}

// WithDefaultRetryPolicy sets the retry policy of jobs that send none
// (default DefaultRetryPolicy). A job's own retry_policy replaces it whole.
func WithDefaultRetryPolicy(p ezclient.RetryPolicy) Option {
	return func(c *config) {
		if p.MaxRetries < 0 || p.MaxReroutes < 0 {
			c.errf("WithDefaultRetryPolicy: negative bound")
			return
		}
		c.retryPolicy = p
	}
}

// WithRetryDelay sets the first wait before a same-region retry when the
// destination sent no usable Retry-After (default DefaultRetryDelay; it
// doubles per retry, capped at one minute).
func WithRetryDelay(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.errf("WithRetryDelay(%v): negative", d)
			return
		}
		c.retryDelay = d
	}
}

// WithBodyLimits sets the largest Cloud proxy envelope, self-hosted job body
// and kept destination reply, in bytes (defaults DefaultMaxEnvelopeBytes,
// DefaultMaxJobBytes, DefaultMaxResponseBytes). Zero keeps a default.
func WithBodyLimits(envelope, job, response int64) Option {
	return func(c *config) {
		if envelope < 0 || job < 0 || response < 0 {
			c.errf("WithBodyLimits: negative limit")
			return
		}
		if envelope > 0 {
			c.maxEnvelope = envelope
		}
		if job > 0 {
			c.maxJob = job
		}
		if response > 0 {
			c.maxResponse = response
		}
	}
}

// WithKeepAlive sets the interval of SSE keepalive comments (default
// DefaultKeepAlive).
func WithKeepAlive(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.errf("WithKeepAlive(%v): need a positive interval", d)
			return
		}
		c.keepAlive = d
	}
}

// WithPlanLimit makes the Cloud proxy deny every call of a customer after
// its first calls allowed ones, with 429 {"status":"denied","error":"Plan
// limit exceeded","retry_after":<seconds>}. Without it there is no limit.
func WithPlanLimit(calls int, retryAfter time.Duration) Option {
	return func(c *config) {
		if calls < 0 || retryAfter < 0 {
			c.errf("WithPlanLimit(%d, %v): negative", calls, retryAfter)
			return
		}
		c.planLimit, c.planRetryAfter = calls, retryAfter
		if calls == 0 {
			c.planLimit = -1 // deny everything
		}
	}
}

// WithAdmissionLimit makes self-hosted POST /jobs answer 429 with a
// Retry-After header when a user already has max unfinished jobs. Without it
// there is no limit.
func WithAdmissionLimit(max int, retryAfter time.Duration) Option {
	return func(c *config) {
		if max < 1 || retryAfter < 0 {
			c.errf("WithAdmissionLimit(%d, %v): need max >= 1", max, retryAfter)
			return
		}
		c.admissionLimit, c.admissionRetryIn = max, retryAfter
	}
}

// WithMaxFinishedJobs bounds how many settled jobs the engine keeps (each
// holds its spec, result and event history, ~3 KB for a small job). When a
// job settles — executed, children spawned, every webhook delivery finished
// — and more than n settled jobs are kept, the one that settled earliest is
// dropped. A dropped job is forgotten entirely, as if it had never been
// submitted: Job, JobByKey and WaitJob report it not found (ErrJobNotFound),
// Jobs omits it, GET /jobs/{id} and its stream answer 404 as for an unknown
// ID, and its idempotent key is free again (a later submission with it
// starts a new job). Jobs still running are never dropped. n = 0, the
// default, keeps every job until Close.
func WithMaxFinishedJobs(n int) Option {
	return func(c *config) {
		if n < 0 {
			c.errf("WithMaxFinishedJobs(%d): negative", n)
			return
		}
		c.maxFinished = n
	}
}

// WithWebhookSecrets sets the webhook signing secrets of a Cloud customer
// (as POST /api/v1/webhook-secrets would). Deliveries of that customer's
// jobs are signed with primary. secondary may be empty.
func WithWebhookSecrets(customerID, primary, secondary string) Option {
	return func(c *config) {
		if err := checkSecrets(primary, secondary); err != nil {
			c.errs = append(c.errs, err)
			return
		}
		c.secrets[customerID] = secretPair{primary, secondary}
	}
}

// minSecretLen is the shortest webhook secret the engine accepts.
const minSecretLen = 16

var errSecretTooShort = errors.New("ezlocal: webhook secrets must be at least 16 characters")

func checkSecrets(primary, secondary string) error {
	if len(primary) < minSecretLen || (secondary != "" && len(secondary) < minSecretLen) {
		return errSecretTooShort
	}
	return nil
}
