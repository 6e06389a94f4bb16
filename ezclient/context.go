package ezclient

import "context"

type suppressKey struct{}

// SuppressForwarding returns a context telling this library's Transport not
// to forward the request made with it to EZThrottle, whatever its outcome.
// The request is still throttled; a failing response or error reaches the
// caller unchanged.
//
// Steps use it for their FRUGAL local attempts, so that a failed attempt is
// forwarded once, by the Step (with the step's fallbacks, webhooks and
// children), and never a second time by a Transport wrapping the local
// *http.Client.
func SuppressForwarding(ctx context.Context) context.Context {
	return context.WithValue(ctx, suppressKey{}, true)
}

// ForwardingSuppressed reports whether ctx carries SuppressForwarding.
func ForwardingSuppressed(ctx context.Context) bool {
	v, _ := ctx.Value(suppressKey{}).(bool)
	return v
}
