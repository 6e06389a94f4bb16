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
	// DefaultTTL is how long a Store keeps a result: long enough to cover
	// the engines' redelivery schedule (1, 2, 4, 8 s) many times over and to
	// let a waiter that starts late still find it.
	DefaultTTL = 15 * time.Minute
	// DefaultMaxResults bounds the number of results a Store keeps; the
	// oldest go first.
	DefaultMaxResults = 10000
	// DefaultSubscriberBuffer is the channel capacity of a subscription.
	DefaultSubscriberBuffer = 64
	// DefaultCallbackWorkers is how many callbacks run at once.
	DefaultCallbackWorkers = 4
	// DefaultCallbackQueue is how many results may wait for a callback
	// worker before new ones are dropped (and logged).
	DefaultCallbackQueue = 1024
)

// Option configures NewHandler and NewStore. Options that do not apply to
// the constructor they are given to are ignored (NewStore uses only WithTTL,
// WithMaxResults, WithSubscriberBuffer, WithClock and WithLogger).
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
	subBuffer          int
	onResult           func(context.Context, Result)
	workers, queue     int
	store              *Store
	tracerProvider     trace.TracerProvider
	propagators        propagation.TextMapPropagator
}

func newConfig(opts []Option) *config {
	c := &config{
		now:        time.Now,
		logger:     slog.New(slog.DiscardHandler),
		maxBody:    DefaultMaxBodyBytes,
		ttl:        DefaultTTL,
		maxResults: DefaultMaxResults,
		subBuffer:  DefaultSubscriberBuffer,
		workers:    DefaultCallbackWorkers,
		queue:      DefaultCallbackQueue,
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

// WithTTL sets how long results are kept (default DefaultTTL). Duplicate
// deliveries are recognised for as long as the first one is kept. d <= 0
// keeps the default.
func WithTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.ttl = d
		}
	}
}

// WithMaxResults bounds how many results are kept (default
// DefaultMaxResults); when full, the oldest is evicted. n <= 0 keeps the
// default.
func WithMaxResults(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxResults = n
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

// WithCallback registers fn to be called once for every new (non-duplicate)
// result the Handler accepts. fn runs off the request path, on a bounded
// pool of workers (see WithCallbackConcurrency): the delivery is answered
// before fn runs, a slow fn never delays a response, and a panic in fn is
// recovered and logged. When the queue is full the result is not passed to
// fn (a warning is logged) but is still stored for Wait and subscribers.
// The ctx passed to fn is cancelled by Handler.Close.
func WithCallback(fn func(ctx context.Context, r Result)) Option {
	return func(c *config) { c.onResult = fn }
}

// WithCallbackConcurrency sets how many callbacks run at once and how many
// results may queue for them (defaults DefaultCallbackWorkers and
// DefaultCallbackQueue). Values <= 0 keep the defaults.
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
