package ezthrottle

import (
	"net/http"
	"strings"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// KeyInput is what a KeyStrategy sees of a forwarded request. It must not
// be modified.
type KeyInput struct {
	Method string
	URL    string
	Header http.Header
	Body   []byte
}

// KeyStrategy chooses the idempotent key of a forwarded job (protocol §3).
// Returning "" leaves the key to the engine (Cloud) or to the client
// (self-hosted), which is the HASH strategy.
//
// The Transport chooses the key in this order:
//
//  1. the request's own Idempotency-Key header (stripe-go sets one on every
//     write), always;
//  2. a key set for the request with JobIdempotentKey;
//  3. a key set on the job by a JobEdit function;
//  4. an Idempotency-Key header added to the job by a job option
//     (JobHeader);
//  5. the strategy: the request's JobKeyStrategy, else the Transport's
//     WithKeyStrategy, else HashKeys().
//
// AutoForward uses the same order, with the ForwardError's own
// Job.IdempotentKey first and then its Job.Headers' Idempotency-Key in
// place of the request's header.
type KeyStrategy func(in KeyInput) string

// HashKeys is the HASH strategy (the default): identical requests share a
// key, so the engine de-duplicates them. The Transport leaves the job's key
// empty. On EZThrottle Cloud the engine derives a deterministic key from
// the URL, method, body and customer; on a self-hosted engine
// *ezclient.Client computes ezclient.HashKey(userID, method, url, body): the
// hex SHA-256 of the user ID, the upper-cased method, the full URL exactly
// as sent and the body bytes, separated by newlines. Headers are not part
// of the hash. The Submission's IdempotentKey reports the key used.
func HashKeys() KeyStrategy { return func(KeyInput) string { return "" } }

// UniqueKeys is the UNIQUE strategy: every forwarded request gets a fresh
// random key (ezclient.UniqueKey), so repeated identical requests (polling,
// scheduled calls) are all executed.
func UniqueKeys() KeyStrategy { return func(KeyInput) string { return ezclient.UniqueKey() } }

// chooseKey applies the documented precedence. reqKey is the request's own
// Idempotency-Key ("" for none); fallback may be nil (no key: HASH). A
// header's key (reqKey and the job's Idempotency-Key header) is trimmed of
// surrounding white space, and a blank one is no key, as ezclient treats a
// job's header (ezclient.HeaderKey).
func chooseKey(reqKey string, spec *jobSpec, fallback KeyStrategy, in func() KeyInput) string {
	if k := strings.TrimSpace(reqKey); k != "" {
		return k
	}
	switch {
	case spec.keySet:
		return spec.key
	case spec.job.IdempotentKey != "":
		return spec.job.IdempotentKey
	}
	if k := ezclient.HeaderKey(spec.job.Headers); k != "" {
		return k
	}
	if spec.strategy != nil {
		return spec.strategy(in())
	}
	if fallback != nil {
		return fallback(in())
	}
	return ""
}

// requestKey is the key of a request's own Idempotency-Key header: its
// first non-blank value, trimmed, or "".
func requestKey(h http.Header) string {
	for _, v := range h[ezclient.IdempotencyKeyHeader] {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
