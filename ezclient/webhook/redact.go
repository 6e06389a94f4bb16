package webhook

import (
	"fmt"
	"io"
	"time"
)

// String describes the verifier without its secrets.
func (v Verifier) String() string {
	return fmt.Sprintf("webhook.Verifier{Primary: %s, Secondary: %s, Tolerance: %v}", maskSecret(v.Primary), maskSecret(v.Secondary), v.tolerance())
}

// GoString is String: %#v never shows the secrets.
func (v Verifier) GoString() string { return v.String() }

// Format makes every verb (%v, %+v, %#v, %s) print String, so that no
// formatting of a Verifier, or of a struct holding one by value, shows the
// secrets.
func (v Verifier) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, v.String()) }

func (v Verifier) tolerance() time.Duration {
	if v.Tolerance <= 0 {
		return DefaultTolerance
	}
	return v.Tolerance
}

// GoString describes the handler without its secrets or stored results.
func (h *Handler) GoString() string {
	if h == nil {
		return "(*webhook.Handler)(nil)"
	}
	return fmt.Sprintf("&webhook.Handler{verifying: %t, maxBody: %d}", h.verifier != nil, h.maxBody)
}

// String is GoString.
func (h *Handler) String() string { return h.GoString() }

func maskSecret(s string) string {
	if s == "" {
		return `""`
	}
	return "REDACTED"
}
