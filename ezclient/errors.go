package ezclient

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Sentinel errors. Every error returned by this package that belongs to one of
// these classes satisfies errors.Is with the sentinel; use errors.As with the
// typed errors below for the details.
var (
	// ErrRateLimited: the proxy or engine asked the caller to slow down
	// (*RateLimitError).
	ErrRateLimited = errors.New("ezthrottle: rate limited")
	// ErrUnauthorized: the API key is missing or invalid (*AuthError, 401).
	ErrUnauthorized = errors.New("ezthrottle: unauthorized")
	// ErrDenied: the key is valid but not allowed to do this (*AuthError with
	// 403, or a proxy verdict other than "allowed").
	ErrDenied = errors.New("ezthrottle: denied")
	// ErrValidation: the job or a call argument is invalid. Client-side
	// checks return *ValidationError (nothing was sent); engine rejections
	// (400, 413, 422) return *EngineError.
	ErrValidation = errors.New("ezthrottle: invalid input")
	// ErrUnsupported: the client's dialect cannot carry a field or operation
	// (*ValidationError). Nothing was sent.
	ErrUnsupported = errors.New("ezthrottle: not supported by this dialect")
	// ErrEngine: the proxy or engine answered with an error (*EngineError).
	ErrEngine = errors.New("ezthrottle: engine error")
	// ErrNotFound: the job or resource does not exist (*EngineError, 404).
	ErrNotFound = errors.New("ezthrottle: not found")
	// ErrMissingAPIKey: the Cloud dialect needs an API key and none was given
	// by option or by the EZTHROTTLE_API_KEY environment variable.
	ErrMissingAPIKey = errors.New("ezthrottle: missing API key (set EZTHROTTLE_API_KEY or use WithAPIKey)")
	// ErrStreamEnded: a job's event stream kept ending before the job's
	// terminal event, and the status lookup did not report a final state
	// either, after the client's retry budget (see WithRetry).
	ErrStreamEnded = errors.New("ezthrottle: job stream ended before a terminal event")
	// ErrTooLarge: the request the client would send (the Cloud proxy
	// envelope, or a self-hosted engine's request body) is over the size
	// limit (*TooLargeError, which also satisfies ErrValidation). Nothing
	// was sent.
	ErrTooLarge = errors.New("ezthrottle: request too large")
)

// TooLargeError reports a request refused before sending because its
// encoded size, measured on the exact bytes that would be sent, is over the
// client's limit (WithMaxRequestBytes; the Cloud proxy answers 413 above
// 1 MiB). The job travels JSON-encoded inside the envelope, so every quote,
// backslash or control character of a body counts several times (see
// WireBodySize).
type TooLargeError struct {
	// Size is the encoded request's size in bytes.
	Size int
	// Limit is the largest size allowed.
	Limit int
}

// Error gives the size, the limit and why a body grows on the wire.
func (e *TooLargeError) Error() string {
	return fmt.Sprintf("ezthrottle: request of %d bytes is over the %d-byte limit, not sent (the body travels JSON-escaped, twice on Cloud: quotes, backslashes and control characters count several times)", e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) and errors.Is(err, ErrValidation)
// true.
func (e *TooLargeError) Is(target error) bool {
	return target == ErrTooLarge || target == ErrValidation
}

// ValidationError reports an invalid field, or a field the client's dialect
// cannot carry. It is returned before any network call.
type ValidationError struct {
	// Field names the offending field in the engine's snake_case form
	// (e.g. "webhook_quorum", "fallback_job.url"), or an argument name.
	Field string
	// Reason says what is wrong with it.
	Reason string
	// Unsupported is true when the field is valid but the dialect cannot
	// carry it (errors.Is(err, ErrUnsupported)).
	Unsupported bool
}

// Error names the field and the reason. Credentials the reason may quote
// (URL user info, sensitive query values, header values) are redacted.
func (e *ValidationError) Error() string { return redact.Text(e.message()) }

// GoString renders the error for %#v, redacted like Error.
func (e *ValidationError) GoString() string {
	return fmt.Sprintf("&ezclient.ValidationError{Field:%q, Reason:%q, Unsupported:%t}", redact.Text(e.Field), redact.Text(e.Reason), e.Unsupported)
}

func (e *ValidationError) message() string {
	if e.Field == "" {
		return "ezthrottle: invalid input: " + e.Reason
	}
	if e.Unsupported {
		return fmt.Sprintf("ezthrottle: field %q not supported: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("ezthrottle: invalid field %q: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrValidation) true, and ErrUnsupported for
// dialect limitations.
func (e *ValidationError) Is(target error) bool {
	return target == ErrValidation || (e.Unsupported && target == ErrUnsupported)
}

// RateLimitError reports that the proxy or engine refused the call for now.
type RateLimitError struct {
	// StatusCode is the HTTP status (normally 429).
	StatusCode int
	// RetryAfter is how long to wait, when known (0 otherwise).
	RetryAfter time.Duration
	// RetryAt is when to try again, when known (zero otherwise).
	RetryAt time.Time
	// Message is the server's explanation, e.g. "Plan limit exceeded".
	Message string
}

// GoString renders the error for %#v, redacted like Error.
func (e *RateLimitError) GoString() string {
	return fmt.Sprintf("&ezclient.RateLimitError{StatusCode:%d, RetryAfter:%d, RetryAt:%s, Message:%q}", e.StatusCode, e.RetryAfter, e.RetryAt.Format(time.RFC3339Nano), redact.Text(e.Message))
}

// Error includes the server's message and the wait, when known. What the
// message may echo of a credential is redacted.
func (e *RateLimitError) Error() string { return redact.Text(e.message()) }

func (e *RateLimitError) message() string {
	var b strings.Builder
	b.WriteString("ezthrottle: rate limited")
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	return b.String()
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// AuthError reports a 401 (ErrUnauthorized) or a 403 / refused verdict
// (ErrDenied). It never contains the API key.
type AuthError struct {
	// StatusCode is 401 or 403 (403 also stands for a proxy verdict other
	// than "allowed").
	StatusCode int
	// Message is the server's explanation, e.g. "Invalid API key".
	Message string
}

// GoString renders the error for %#v, redacted like Error.
func (e *AuthError) GoString() string {
	return fmt.Sprintf("&ezclient.AuthError{StatusCode:%d, Message:%q}", e.StatusCode, redact.Text(e.Message))
}

// Error says unauthorized (401) or denied, with the server's message
// (what it may echo of a credential redacted).
func (e *AuthError) Error() string { return redact.Text(e.message()) }

func (e *AuthError) message() string {
	kind := "denied"
	if e.StatusCode == http.StatusUnauthorized {
		kind = "unauthorized"
	}
	if e.Message == "" {
		return fmt.Sprintf("ezthrottle: %s (HTTP %d)", kind, e.StatusCode)
	}
	return fmt.Sprintf("ezthrottle: %s (HTTP %d): %s", kind, e.StatusCode, e.Message)
}

// Is makes errors.Is work with ErrUnauthorized and ErrDenied.
func (e *AuthError) Is(target error) bool {
	if e.StatusCode == http.StatusUnauthorized {
		return target == ErrUnauthorized
	}
	return target == ErrDenied
}

// EngineError reports any other failed reply from the proxy or the engine.
type EngineError struct {
	// StatusCode is the engine's status when the proxy forwarded the call,
	// otherwise the proxy's or self-hosted engine's HTTP status.
	StatusCode int
	// Message is the error text extracted from the reply.
	Message string
	// Body is the raw reply body (truncated to 64 KiB).
	Body []byte
	// Proxy is true when the error came from the Cloud proxy itself rather
	// than from the engine behind it.
	Proxy bool
}

// GoString renders the error for %#v, redacted like Error.
func (e *EngineError) GoString() string {
	return fmt.Sprintf("&ezclient.EngineError{StatusCode:%d, Message:%q, Body:%q, Proxy:%t}", e.StatusCode, redact.Text(e.Message), redact.Text(string(e.Body)), e.Proxy)
}

// Error says whether the proxy or the engine failed, with the status and
// message (what the message may echo of a credential redacted).
func (e *EngineError) Error() string { return redact.Text(e.message()) }

func (e *EngineError) message() string {
	who := "engine"
	if e.Proxy {
		who = "proxy"
	}
	if e.Message == "" {
		return fmt.Sprintf("ezthrottle: %s error (HTTP %d)", who, e.StatusCode)
	}
	return fmt.Sprintf("ezthrottle: %s error (HTTP %d): %s", who, e.StatusCode, e.Message)
}

// Is makes errors.Is work with ErrEngine, with ErrNotFound for 404, and
// with ErrValidation when the engine rejected the input (400, 413, 422).
func (e *EngineError) Is(target error) bool {
	switch target {
	case ErrEngine:
		return true
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrValidation:
		return e.StatusCode == http.StatusBadRequest || e.StatusCode == http.StatusRequestEntityTooLarge || e.StatusCode == http.StatusUnprocessableEntity
	}
	return false
}

// Temporary reports whether the failure is transient (5xx).
func (e *EngineError) Temporary() bool { return e.StatusCode >= 500 }

// parseRetryAfter parses a Retry-After value: delta seconds or an HTTP-date
// (RFC 1123, also with a "UTC" zone). It returns ok=false for garbage,
// negative values and values beyond maxRetryAfter.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || secs != secs || secs > maxRetryAfter.Seconds() {
			return 0, false
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	for _, layout := range []string{http.TimeFormat, time.RFC1123, time.RFC1123Z, time.RFC850, time.ANSIC} {
		if t, err := time.Parse(layout, v); err == nil {
			// Go reads a zone abbreviation it does not know ("EST") as a
			// zero offset: only GMT and UTC, what HTTP dates use, are trusted.
			if layout == time.RFC1123 || layout == time.RFC850 {
				if name, _ := t.Zone(); name != "GMT" && name != "UTC" {
					return 0, false
				}
			}
			d := t.Sub(now)
			if d < 0 {
				d = 0
			}
			if d > maxRetryAfter {
				return 0, false
			}
			return d, true
		}
	}
	return 0, false
}

// maxRetryAfter bounds a server-requested wait; larger values are treated
// as garbage.
const maxRetryAfter = 7 * 24 * time.Hour
