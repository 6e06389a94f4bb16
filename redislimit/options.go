package redislimit

import (
	"fmt"
	"log/slog"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Defaults of the options.
const (
	// DefaultPrefix is the namespace of every key the Limiter writes.
	DefaultPrefix = "ezthrottle:"
	// DefaultLeaseTTL is how long a slot in flight survives the process
	// holding it. A live process renews its leases every third of it.
	DefaultLeaseTTL = 30 * time.Second
	// DefaultLearnedTTL is how long a learned pace or cap is kept in Redis
	// after the last response that announced it.
	DefaultLearnedTTL = 5 * time.Minute
	// DefaultPollInterval is how often a request waiting for a free slot in
	// flight asks Redis again (releases by other processes are not
	// signalled; releases in the same process wake it at once).
	DefaultPollInterval = 25 * time.Millisecond
	// DefaultProbeInterval is how long the Limiter stays on its failure
	// mode after Redis failed before an Acquire tries Redis again.
	DefaultProbeInterval = time.Second
	// DefaultTimeout bounds each Redis operation through its context.
	DefaultTimeout = time.Second
	// maxRecheck is the longest a waiting request sleeps between two looks
	// at Redis, so limits learned by other processes are picked up.
	maxRecheck = time.Second
)

// Option configures a Limiter.
type Option func(*config)

type config struct {
	prefix     string
	leaseTTL   time.Duration
	learnedTTL time.Duration
	poll       time.Duration
	probe      time.Duration
	timeout    time.Duration
	failClosed bool
	fallback   ezthrottle.Limiter
	clock      ezthrottle.Clock
	logger     *slog.Logger
	errs       []error
}

func (c *config) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// WithPrefix sets the namespace of the Limiter's keys (default
// DefaultPrefix). Processes share a limit when they use the same Redis, the
// same prefix and the same host key; give unrelated deployments (or tests)
// different prefixes. Keep braces out of the prefix: the host is the keys'
// Redis Cluster hash tag.
func WithPrefix(prefix string) Option {
	return func(c *config) { c.prefix = prefix }
}

// WithLeaseTTL sets how long a slot in flight outlives a process that died
// while holding it (default DefaultLeaseTTL). While a process is alive it
// renews its leases every ttl/3, however long the request takes. A short
// TTL frees the slots of a dead process sooner but needs renewals to reach
// Redis in time.
func WithLeaseTTL(ttl time.Duration) Option {
	return func(c *config) {
		if ttl < 10*time.Millisecond {
			c.fail("redislimit: WithLeaseTTL(%v): must be at least 10ms", ttl)
			return
		}
		c.leaseTTL = ttl
	}
}

// WithLearnedTTL sets how long a pace or cap learned from a response is
// kept in Redis after the last response announcing it (default
// DefaultLearnedTTL). A pause is always kept until it ends.
func WithLearnedTTL(ttl time.Duration) Option {
	return func(c *config) {
		if ttl < time.Millisecond {
			c.fail("redislimit: WithLearnedTTL(%v): must be at least 1ms", ttl)
			return
		}
		c.learnedTTL = ttl
	}
}

// WithPollInterval sets how often a request waiting for a free slot in
// flight asks Redis again (default DefaultPollInterval).
func WithPollInterval(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail("redislimit: WithPollInterval(%v): must be positive", d)
			return
		}
		c.poll = d
	}
}

// WithProbeInterval sets how long the Limiter keeps using its failure mode
// (the local fallback, or failing closed) after a Redis failure before the
// next Acquire tries Redis again (default DefaultProbeInterval). Only one
// Acquire probes at a time; the others keep using the failure mode.
func WithProbeInterval(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail("redislimit: WithProbeInterval(%v): must be positive", d)
			return
		}
		c.probe = d
	}
}

// WithTimeout bounds every Redis operation (default DefaultTimeout; 0 means
// only the caller's context bounds it). go-redis honours context deadlines
// only when its client has ContextTimeoutEnabled set (the Limiter then
// applies WithTimeout; otherwise it does not, which spares a timer per
// call); without it, the client's own DialTimeout, ReadTimeout,
// WriteTimeout and PoolTimeout bound how long an unreachable Redis can
// delay a request. Keep them short.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.fail("redislimit: WithTimeout(%v): negative", d)
			return
		}
		c.timeout = d
	}
}

// WithFailOpen makes the Limiter throttle with a local limiter while Redis
// is unavailable (the default). Each process then applies the limit on its
// own, so N processes may together send up to N times the limit until Redis
// is back. fallback is that local limiter; nil means a new
// ezthrottle.MemoryLimiter.
func WithFailOpen(fallback ezthrottle.Limiter) Option {
	return func(c *config) {
		c.failClosed = false
		c.fallback = fallback
	}
}

// WithFailClosed makes Acquire fail with an *UnavailableError
// (errors.Is(err, ErrUnavailable)) while Redis is unavailable, so no request
// starts without the shared limit's consent.
func WithFailClosed() Option {
	return func(c *config) { c.failClosed = true }
}

// WithClock sets the local time source used for waiting and for deadlines
// (default: the system clock). Rate, pause and lease decisions always use
// the Redis server's clock.
func WithClock(clk ezthrottle.Clock) Option {
	return func(c *config) {
		if clk == nil {
			c.fail("redislimit: WithClock(nil)")
			return
		}
		c.clock = clk
	}
}

// WithLogger sets the logger (default: discard). The Limiter logs once at
// Warn when Redis becomes unavailable and once at Info when it is back.
// Every record is scrubbed of credentials (a Redis URL's password, ...).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = redact.Logger(l, nil) // every record scrubbed (internal/redact)
		}
	}
}
