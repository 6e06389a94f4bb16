package webhook

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Defaults.
const (
	// DefaultMaxBodyBytes is the largest webhook body a Handler reads (4 MiB):
	// the payload carries the target API's response body.
	DefaultMaxBodyBytes = 4 << 20
	// DefaultTTL is how long a Store keeps a result: long enough to let a
	// waiter that starts late still find it. Job IDs are remembered apart
	// from results, for DefaultDedupWindow.
	DefaultTTL = 15 * time.Minute
	// DefaultMaxResults bounds the number of results a Store keeps; the
	// oldest go first. Evicting a result does not forget its job ID.
	DefaultMaxResults = 10000
	// DefaultDedupWindow is how long a Store remembers the job ID of each
	// result it accepted, so that a redelivery or a replay of it is
	// recognised as a duplicate: the engines' redelivery schedule (1, 2, 4,
	// 8 s) many times over, and more than a signature's tolerance.
	DefaultDedupWindow = 15 * time.Minute
	// MinDedupWindow is the shortest de-duplication window WithDedupWindow
	// accepts (shorter values are raised to it).
	MinDedupWindow = time.Minute
	// DefaultMaxSeenIDs bounds how many job IDs a Store remembers (~73
	// bytes each whatever the ID's length, BenchmarkSeenIDs: ~73 MB at the
	// bound). It covers a sustained ~1,100 new results per second for the
	// default window; when it is reached, new deliveries are refused (503)
	// until the oldest IDs expire, never accepted at the cost of forgetting.
	DefaultMaxSeenIDs = 1_000_000
	// DefaultSubscriberBuffer is the channel capacity of a subscription.
	DefaultSubscriberBuffer = 64
	// DefaultCallbackWorkers is how many callbacks run at once.
	DefaultCallbackWorkers = 4
	// DefaultCallbackQueue is how many results may wait for a callback
	// worker; when it is full, deliveries wait for room (back-pressure).
	DefaultCallbackQueue = 1024
	// DefaultCallbackWait is how long a delivery waits for room in a full
	// callback queue before it is refused with 503 and Retry-After (and not
	// recorded, so the engine's redelivery is taken as new). The request's
	// context usually ends the wait first: when the engine gives up on the
	// delivery (its timeout, or the server's WriteTimeout), the delivery is
	// refused the same way and the engine's redelivery is taken as new.
	DefaultCallbackWait = 30 * time.Second
)

// Option configures NewHandler and NewStore. Options that do not apply to
// the constructor they are given to are ignored (NewStore uses only WithTTL,
// WithMaxResults, WithDedupWindow, WithMaxSeenIDs, WithSubscriberBuffer,
// WithClock and WithLogger).
type Option func(*config)

type config struct {
	primary, secondary string
	primarySet         bool
	tolerance          time.Duration
	now                func() time.Time
	logger             *slog.Logger
	maxBody            int64
	ttl                time.Duration
	maxResults         int
	dedupWindow        time.Duration
	maxSeenIDs         int
	callbackWait       time.Duration
	subBuffer          int
	onResult           func(context.Context, Result)
	workers, queue     int
	store              *Store
	tracerProvider     trace.TracerProvider
	propagators        propagation.TextMapPropagator
}

func newConfig(opts []Option) *config {
	c := &config{
		now:          time.Now,
		logger:       slog.New(slog.DiscardHandler),
		maxBody:      DefaultMaxBodyBytes,
		ttl:          DefaultTTL,
		maxResults:   DefaultMaxResults,
		dedupWindow:  DefaultDedupWindow,
		maxSeenIDs:   DefaultMaxSeenIDs,
		callbackWait: DefaultCallbackWait,
		subBuffer:    DefaultSubscriberBuffer,
		workers:      DefaultCallbackWorkers,
		queue:        DefaultCallbackQueue,
	}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	return c
}

// errEmptySecret is returned by NewHandler for WithSecret("").
var errEmptySecret = errors.New("webhook: WithSecret given an empty secret (omit the option to accept unsigned deliveries)")

// WithSecret sets the account's webhook secret. With a secret configured,
// the Handler rejects (401) every delivery without a valid signature. An
// empty secret is a configuration error reported by NewHandler, so a
// missing environment variable cannot silently disable verification.
func WithSecret(primary string) Option {
	return func(c *config) { c.primary, c.primarySet = primary, true }
}

// WithSecondarySecret sets the previous webhook secret, still accepted while
// a rotation is in progress (the primary is tried first). Empty means none.
func WithSecondarySecret(secondary string) Option {
	return func(c *config) { c.secondary = secondary }
}

// WithTolerance sets how far a signature's timestamp may be from now, in
// either direction (default DefaultTolerance, 300 s). d <= 0 keeps the
// default.
func WithTolerance(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.tolerance = d
		}
	}
}

// WithClock sets the clock used for signature timestamps, result expiry and
// ReceivedAt (default time.Now). Tests inject a fake clock here.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.now = now
		}
	}
}

// WithLogger sets the logger (default: discard). Log lines never contain
// secrets, signatures or payload bodies.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = redact.Logger(l, nil) // every record scrubbed (internal/redact)
		}
	}
}

// WithMaxBodyBytes sets the largest body the Handler reads; larger ones get
// 413 (default DefaultMaxBodyBytes). n <= 0 keeps the default.
func WithMaxBodyBytes(n int64) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBody = n
		}
	}
}

// WithTTL sets how long results are kept for Wait and Lookup (default
// DefaultTTL). Job IDs are remembered for the de-duplication window or the
// TTL, whichever is longer (see WithDedupWindow), so a short TTL never
// shortens duplicate detection. d <= 0 keeps the default.
func WithTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.ttl = d
		}
	}
}

// WithMaxResults bounds how many results are kept (default
// DefaultMaxResults); when full, the oldest is evicted. Its job ID stays
// remembered (see WithDedupWindow), so a bound reached early never
// shortens duplicate detection. n <= 0 keeps the default.
func WithMaxResults(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxResults = n
		}
	}
}

// WithDedupWindow sets how long a Store remembers the job ID of every
// result it accepted (default DefaultDedupWindow; the TTL when that is
// longer). Within it, a delivery with a remembered job ID is a duplicate
// (answered 200 with "duplicate":true, not stored or passed on again),
// however many results arrived in between. A Handler with a secret also
// remembers each ID until the accepted delivery's signature expires
// (timestamp + tolerance), so a captured delivery replayed at any moment
// its signature still verifies is refused as a duplicate. d <= 0 keeps the
// default; d < MinDedupWindow is raised to it.
func WithDedupWindow(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.dedupWindow = max(d, MinDedupWindow)
		}
	}
}

// WithMaxSeenIDs bounds how many job IDs a Store remembers (default
// DefaultMaxSeenIDs; each takes ~73 bytes). When the bound is
// reached a new delivery is refused rather than an ID forgotten: the
// Handler answers 503 with Retry-After (the time until the oldest IDs
// expire) and logs a warning, and Store.Add fails with a *CapacityError.
// Size it for the peak rate of new results times the window. n <= 0
// keeps the default.
func WithMaxSeenIDs(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxSeenIDs = n
		}
	}
}

// WithSubscriberBuffer sets the channel capacity of each subscription
// (default DefaultSubscriberBuffer). A subscriber that falls further behind
// misses results (they are logged and stay available to Wait and Lookup).
// n <= 0 keeps the default.
func WithSubscriberBuffer(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.subBuffer = n
		}
	}
}

// WithCallback registers fn to be called exactly once for every new
// (non-duplicate) result the Handler accepts. fn runs off the request
// path, on a bounded pool of workers fed by a queue (see
// WithCallbackConcurrency); a panic in fn is recovered and logged. The
// Handler never acknowledges a result it cannot hand to fn: a delivery is
// answered 200 only once its result is in the queue. When the queue is
// full, the delivery waits for room (back-pressure, up to WithCallbackWait
// or until the request's context ends); if none comes, it is answered 503
// with Retry-After, nothing of it is stored or remembered, and the engine's
// redelivery is taken as new. The ctx passed to fn is cancelled by
// Handler.Close.
func WithCallback(fn func(ctx context.Context, r Result)) Option {
	return func(c *config) { c.onResult = fn }
}

// WithCallbackConcurrency sets how many callbacks run at once and how many
// results may queue for them (defaults DefaultCallbackWorkers and
// DefaultCallbackQueue). Values <= 0 keep the defaults.
//
// Sustained, the Handler accepts new results no faster than the callbacks
// finish them (workers / callback duration); above that, deliveries wait
// (WithCallbackWait) and then get 503.
func WithCallbackConcurrency(workers, queue int) Option {
	return func(c *config) {
		if workers > 0 {
			c.workers = workers
		}
		if queue > 0 {
			c.queue = queue
		}
	}
}

// WithCallbackWait sets how long a delivery waits for room in a full
// callback queue before it is refused with 503 and Retry-After (default
// DefaultCallbackWait). The request's context bounds the wait too. d <= 0
// keeps the default.
func WithCallbackWait(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.callbackWait = d
		}
	}
}

// WithStore makes the Handler put results into s instead of a Store of its
// own; the Handler's Close then leaves s open. Store options given to
// NewHandler are ignored in that case.
func WithStore(s *Store) Option {
	return func(c *config) { c.store = s }
}

// WithTracerProvider sets the OpenTelemetry tracer provider of the Handler's
// spans (default: the global one, otel.GetTracerProvider). See Handler for
// the span it records.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// WithPropagators sets the propagators that read trace context from a
// delivery's headers and from its result's metadata (default: the global
// ones, otel.GetTextMapPropagator; set propagation.TraceContext{} there or
// here to read W3C traceparent and tracestate).
func WithPropagators(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.propagators = p }
}
