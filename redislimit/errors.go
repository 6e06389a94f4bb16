package redislimit

import (
	"errors"
	"fmt"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// Sentinel errors of the Limiter.
var (
	// ErrUnavailable: Redis could not be used and the Limiter fails closed
	// (*UnavailableError).
	ErrUnavailable = errors.New("redislimit: redis unavailable")
	// ErrClosed: the Limiter was closed.
	ErrClosed = errors.New("redislimit: limiter closed")
)

// UnavailableError is returned by Acquire, with WithFailClosed, when Redis
// cannot be reached (or answered with an error). errors.Is(err,
// ErrUnavailable) is true and errors.Unwrap gives the Redis error.
type UnavailableError struct {
	// Host is the host key of the refused request.
	Host string
	// Err is the Redis error that started (or continues) the outage.
	Err error
}

// Error describes the refusal and the Redis error.
func (e *UnavailableError) Error() string {
	return fmt.Sprintf("redislimit: redis unavailable, %s not admitted: %v", e.Host, e.Err)
}

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unwrap returns Err.
func (e *UnavailableError) Unwrap() error { return e.Err }

// ErrCostTooHigh: a request costs more than the host's bucket can ever
// hold (*CostError), so it could never be admitted.
var ErrCostTooHigh = errors.New("redislimit: request cost exceeds the burst")

// CostError is returned by Acquire, at once, for a request whose cost
// exceeds the burst of its host's limit: the bucket never holds that many
// tokens, so waiting could not help. errors.Is(err, ErrCostTooHigh) is true.
type CostError struct {
	// Host is the host key of the refused request.
	Host string
	// Cost is the request's cost.
	Cost int64
	// Burst is the most the host's bucket holds.
	Burst int64
}

// Error describes the refusal.
func (e *CostError) Error() string {
	return fmt.Sprintf("redislimit: %s: request cost %d exceeds the burst of %d: it can never be admitted", e.Host, e.Cost, e.Burst)
}

// Is makes errors.Is(err, ErrCostTooHigh) and errors.Is(err,
// ezthrottle.ErrCostExceedsBurst) true.
func (e *CostError) Is(target error) bool {
	return target == ErrCostTooHigh || target == ezthrottle.ErrCostExceedsBurst
}
