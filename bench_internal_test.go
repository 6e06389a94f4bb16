package ezthrottle

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

var (
	partBool  bool
	partInt64 int64
)

// BenchmarkHotPathParts measures, in isolation, the parts of a
// pass-through request that the Transport cannot skip (the README's
// breakdown of BenchmarkGET's overhead; BenchmarkTelemetryInactive covers
// the telemetry check). Inside a round trip they cost somewhat more (cache
// and branch effects).
func BenchmarkHotPathParts(b *testing.B) {
	b.Run("header-scan", func(b *testing.B) {
		// The response header of BenchmarkGET: no rate-limit signal, so
		// every name is looked at.
		h := http.Header{"Content-Type": {"application/json"}}
		for b.Loop() {
			partBool = hasSignals(h)
		}
	})
	b.Run("clock", func(b *testing.B) {
		m := NewMemoryLimiter(MemoryLimiterConfig{})
		for b.Loop() {
			partInt64 = m.nanos()
		}
	})
	b.Run("body-wrapper", func(b *testing.B) {
		// Wrapping the response body and closing it, which frees the slot.
		m := NewMemoryLimiter(MemoryLimiterConfig{})
		h := m.host("https://api.example.com:443", Unlimited())
		rc := io.NopCloser(strings.NewReader(""))
		b.ReportAllocs()
		for b.Loop() {
			h.inflight.Add(1)
			_ = wrapBody(rc, h).Close()
		}
	})
}
