package ezthrottle

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Defaults of the per-host throttle: EZThrottle's own pace (protocol §5).
const (
	// DefaultRate is the default pace per host, in requests per second.
	DefaultRate = 2.0
	// DefaultBurst is the default bucket size: requests are spaced evenly,
	// one every 1/DefaultRate seconds.
	DefaultBurst = 1
	// DefaultMaxInFlight is the default cap on requests in flight per host.
	DefaultMaxInFlight = 2
)

// Limit is the throttle applied to one host: a token bucket (Rate, Burst)
// and a cap on requests in flight. A slot in flight is held from the start
// of the round trip until the response body is closed, or the round trip
// fails.
//
// The MemoryLimiter keeps the bucket as a schedule (GCRA, virtual
// scheduling): each admitted request moves the host's theoretical arrival
// time on by Cost/Rate, and a request may start when that schedule allows
// it, so a waiter that wakes late (a busy CPU, a delayed timer) is charged
// at its slot, not at the moment it woke, and does not push the slots of
// the requests after it. Over any period the host sees at most
// Rate × period + Burst requests.
//
// Catch-up after a stall is bounded: when a queued request starts later
// than its slot, the lateness is forgiven up to Burst/Rate (the requests
// after it keep their slots); anything later is lost, as for an idle
// bucket. So after a stall of any length at most Burst requests beyond
// what a full bucket allows start back to back (at most 2 × Burst in all),
// never the whole backlog. A request that waited for a free slot in flight
// (MaxInFlight) rather than for its slot in the schedule gets no catch-up.
type Limit struct {
	// Rate is the sustained pace in requests per second (in cost units per
	// second when admissions carry a Cost); math.Inf(1) means no pacing. It
	// must be positive.
	Rate float64
	// Burst is how many requests (cost units) may start back to back after
	// an idle period; 0 means 1. A request whose Cost exceeds Burst can
	// never start: it fails at once with a *CostError.
	Burst int
	// MaxInFlight caps the requests in flight; 0 means no cap.
	MaxInFlight int
}

// DefaultLimit returns EZThrottle's pace: 2 requests per second, spaced
// evenly (burst 1), at most 2 in flight.
func DefaultLimit() Limit {
	return Limit{Rate: DefaultRate, Burst: DefaultBurst, MaxInFlight: DefaultMaxInFlight}
}

// Unlimited returns a Limit that never delays a request. Pace headers and
// Retry-After pauses sent by the host still apply.
func Unlimited() Limit { return Limit{Rate: math.Inf(1)} }

// IsUnlimited reports whether l neither paces nor caps requests.
func (l Limit) IsUnlimited() bool { return math.IsInf(l.Rate, 1) && l.MaxInFlight == 0 }

// Validate reports whether the limit is usable.
func (l Limit) Validate() error {
	switch {
	case math.IsNaN(l.Rate) || l.Rate <= 0:
		return fmt.Errorf("ezthrottle: limit rate must be positive (got %v); use Unlimited() for no limit", l.Rate)
	case l.Burst < 0:
		return fmt.Errorf("ezthrottle: limit burst must not be negative (got %d)", l.Burst)
	case l.MaxInFlight < 0:
		return fmt.Errorf("ezthrottle: limit max in flight must not be negative (got %d)", l.MaxInFlight)
	}
	return nil
}

func (l Limit) burst() float64 {
	if l.Burst < 1 {
		return 1
	}
	return float64(l.Burst)
}

// Admission is one request asking a Limiter for its turn.
type Admission struct {
	// Key identifies the host: scheme "://" lower-cased host ":" port,
	// e.g. "https://api.stripe.com:443".
	Key string
	// Limit is the configured limit for this host. Limits learned from the
	// host's headers (see Limiter.Learn) take precedence over it.
	Limit Limit
	// Deadline, when not zero, is the latest time the request may start:
	// the earlier of the request context's deadline and the Transport's
	// maximum wait. A limiter must not start waiting when its predicted wait
	// ends after Deadline, and must stop waiting when Deadline passes; in
	// both cases it returns a *ThrottleError.
	Deadline time.Time
	// Cost is what the request uses of the host's bucket, in the unit of
	// Limit.Rate and Limit.Burst: 0 means 1 (one request). A limiter
	// charges Cost/Rate seconds of the host's schedule for it. A Cost
	// above the bucket's size (Limit.Burst) can never be admitted, and a
	// negative, NaN or infinite Cost is invalid: both fail at once with a
	// *CostError. A weighted request still takes one slot in flight.
	Cost float64
}

// cost returns a's cost, 0 meaning 1.
func (a *Admission) cost() float64 {
	if a.Cost == 0 {
		return 1
	}
	return a.Cost
}

// Permit is a request's slot in flight, granted by a Limiter.
type Permit interface {
	// Release frees the slot. The Transport calls it exactly once: when the
	// response body is closed, or when the round trip fails.
	Release()
}

// Limiter decides when a request to a host may start. The Transport calls
// Acquire before each round trip and Learn after each response. The
// in-memory MemoryLimiter is the default; a distributed implementation
// (shared by several processes) can be plugged in with WithLimiter.
//
// Implementations must be safe for concurrent use, serve the waiters of a
// host in arrival order as far as they can, and must never let a host stall
// forever.
type Limiter interface {
	// Acquire waits until a request to a.Key may start and returns its
	// Permit. It predicts the wait first: when the request cannot start by
	// a.Deadline it returns a *ThrottleError at once, without waiting.
	// While waiting it honours ctx (returning ctx.Err() when ctx is done)
	// and a.Deadline (returning a *ThrottleError when it passes). It returns
	// a Permit or an error: the Transport fails a request given neither
	// (ErrNilPermit), and releases a Permit returned with an error.
	Acquire(ctx context.Context, a Admission) (Permit, error)
	// Learn applies what a response from host key said: a pace
	// (s.HasRPS: the new rate), a cap (s.HasMaxConcurrent: the new in-flight
	// limit) and a pause (s.PauseUntil: no request starts before it). The
	// Transport has already validated, floored, capped and jittered the
	// values; a change must apply to the very next Acquire.
	Learn(ctx context.Context, key string, s Signals)
}

// Sentinel errors of the throttle.
var (
	// ErrThrottled: a request could not get its turn in time
	// (*ThrottleError).
	ErrThrottled = errors.New("ezthrottle: throttled")
	// ErrMaxWait: the wait would exceed the Transport's maximum wait
	// (WithMaxWait). It is the Cause of such a *ThrottleError.
	ErrMaxWait = errors.New("ezthrottle: wait exceeds the maximum wait")
	// ErrCostExceedsBurst: a request costs more than its host's bucket can
	// ever hold, so it could never start (*CostError).
	ErrCostExceedsBurst = errors.New("ezthrottle: request cost exceeds the host's burst")
	// ErrInvalidCost: a request's cost is negative, NaN or infinite
	// (*CostError).
	ErrInvalidCost = errors.New("ezthrottle: invalid request cost")
)

// CostError reports a request that can never be admitted because of its
// Admission.Cost: it is invalid (errors.Is(err, ErrInvalidCost)) or larger
// than the host's burst (errors.Is(err, ErrCostExceedsBurst)). It is
// returned at once, without waiting.
type CostError struct {
	// Host is the host key.
	Host string
	// Cost is the request's cost.
	Cost float64
	// Burst is the size of the host's bucket (the limit in force).
	Burst float64
}

// Error describes the cost and the bucket.
func (e *CostError) Error() string {
	if e.invalid() {
		return fmt.Sprintf("ezthrottle: %s: invalid request cost %v (must be a finite number, not negative)", e.Host, e.Cost)
	}
	return fmt.Sprintf("ezthrottle: %s: request cost %v exceeds the host's burst %v: it can never be admitted", e.Host, e.Cost, e.Burst)
}

func (e *CostError) invalid() bool {
	return e.Cost < 0 || math.IsNaN(e.Cost) || math.IsInf(e.Cost, 0)
}

// Is makes errors.Is(err, ErrInvalidCost) or errors.Is(err,
// ErrCostExceedsBurst) true, as the case may be.
func (e *CostError) Is(target error) bool {
	if e.invalid() {
		return target == ErrInvalidCost
	}
	return target == ErrCostExceedsBurst
}

// ThrottleError reports that a request did not start because its turn
// would come (or did not come) before its deadline. errors.Is(err,
// ErrThrottled) is true, and so is errors.Is(err, context.DeadlineExceeded)
// when the request context's deadline was the limit (or ErrMaxWait when the
// Transport's maximum wait was).
type ThrottleError struct {
	// Host is the host key, e.g. "https://api.example.com:443".
	Host string
	// Wait is the predicted wait when Predicted, else how long the request
	// waited before giving up.
	Wait time.Duration
	// Predicted is true when the request did not start waiting at all
	// because the predicted wait was too long.
	Predicted bool
	// Cause is context.DeadlineExceeded or ErrMaxWait; nil when unknown.
	Cause error
}

// Error describes the host, the wait and what limited it.
func (e *ThrottleError) Error() string {
	why := "its deadline"
	if errors.Is(e.Cause, ErrMaxWait) {
		why = "the maximum wait"
	}
	if e.Predicted {
		return fmt.Sprintf("ezthrottle: throttled: %s needs a wait of %v, beyond %s", e.Host, e.Wait, why)
	}
	return fmt.Sprintf("ezthrottle: throttled: %s did not get a turn within %v (%s)", e.Host, e.Wait, why)
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottleError) Is(target error) bool { return target == ErrThrottled }

// Unwrap returns Cause.
func (e *ThrottleError) Unwrap() error { return e.Cause }

// Timeout reports whether the request's deadline was the cause (net.Error
// style; *url.Error relies on it).
func (e *ThrottleError) Timeout() bool { return errors.Is(e.Cause, context.DeadlineExceeded) }
