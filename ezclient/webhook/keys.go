package webhook

import (
	"net/http"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// Response headers of the Transport's synthetic 202 Accepted, returned when
// a request was forwarded to EZThrottle. They carry the keys to wait on.
const (
	// JobIDHeader carries the forwarded job's ID.
	JobIDHeader = "X-EZThrottle-Job-ID"
	// IdempotentKeyHeader carries the forwarded job's idempotent key.
	IdempotentKeyHeader = "X-EZThrottle-Idempotent-Key"
)

// Key identifies the result to wait for. A result matches when its JobID
// equals JobID or its IdempotentKey equals IdempotentKey (empty fields never
// match). Set both when both are known: self-hosted payloads carry no
// idempotent key, and a Cloud key identifies the job even before its ID is
// known. An idempotent key is only as unique as the strategy that made it:
// a HASH key recurs for identical requests, so a result still stored for an
// earlier identical job matches it too (within the Store's TTL).
type Key struct {
	// JobID is the engine's job ID.
	JobID string
	// IdempotentKey is the job's idempotent key.
	IdempotentKey string
}

// IsZero reports whether k has neither a job ID nor an idempotent key.
func (k Key) IsZero() bool { return k.JobID == "" && k.IdempotentKey == "" }

// String returns a short description for logs and errors.
func (k Key) String() string {
	switch {
	case k.JobID != "" && k.IdempotentKey != "":
		return "job " + k.JobID + " (key " + k.IdempotentKey + ")"
	case k.JobID != "":
		return "job " + k.JobID
	case k.IdempotentKey != "":
		return "key " + k.IdempotentKey
	}
	return "empty key"
}

// KeyOf returns the Key to wait on for a submission returned by
// ezclient.Client.Submit (or a Step). A nil submission gives the zero Key.
func KeyOf(sub *ezclient.Submission) Key {
	if sub == nil {
		return Key{}
	}
	return Key{JobID: sub.JobID, IdempotentKey: sub.IdempotentKey}
}

// KeyFromHeader returns the Key carried by the Transport's synthetic 202
// (JobIDHeader, IdempotentKeyHeader). It is the zero Key when the headers
// are absent, i.e. the response was not a forwarded request's 202.
func KeyFromHeader(h http.Header) Key {
	return Key{JobID: h.Get(JobIDHeader), IdempotentKey: h.Get(IdempotentKeyHeader)}
}
