// Package webhook receives EZThrottle job results: it verifies webhook
// signatures, normalises both payload forms (EZThrottle Cloud and self-hosted
// engines) into one Result type, de-duplicates repeated deliveries, and lets
// the code that submitted a job wait for its outcome.
//
// The pieces:
//
//   - Sign, Verify, Verifier and ParseSignature implement the
//     X-EZThrottle-Signature scheme (HMAC-SHA256 over "<t>.<raw body>").
//   - Decode turns either payload form into a Result; CloudPayload and
//     SelfHostedPayload are the wire forms, for engines that send them.
//   - Store keeps recent results (TTL, bounded in number) and lets callers
//     Wait for one by job ID or idempotent key, or Subscribe to all of them.
//     Apart from the results, it remembers the job ID of every result it
//     accepted for the de-duplication window (15 min by default), in a
//     bounded set: duplicates and replays are recognised for the whole
//     window whatever the TTL and the result bound.
//   - Handler is an http.Handler to mount on any router: POST only, body
//     size limit, signatures required when a secret is configured,
//     de-duplication and replay protection by job ID, an optional callback
//     fed with back-pressure (a result is acknowledged only once the
//     callback is sure to get it), and a Store behind it.
//
// A forwarded request's keys come from the ezclient.Submission returned by
// Client.Submit (KeyOf) or from the headers of the Transport's synthetic 202
// (KeyFromHeader).
package webhook
