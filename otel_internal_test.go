package ezthrottle

import (
	"net/http"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkTelemetryInactive isolates the work the OpenTelemetry
// integration adds to a request when nothing records (global or no-op
// providers): the one check in RoundTrip (the throttle wait is then not
// observed at all).
func BenchmarkTelemetryInactive(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  telemetryConfig
	}{
		{"global", telemetryConfig{}},
		{"noop", telemetryConfig{tp: tracenoop.NewTracerProvider(), mp: metricnoop.NewMeterProvider()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tm := newTelemetry(bc.cfg, SystemClock())
			req, _ := http.NewRequest("GET", "https://api.example.com/", nil)
			b.ReportAllocs()
			for b.Loop() {
				r, st := tm.begin(req)
				if st != nil || r != req {
					b.Fatal("active")
				}
			}
		})
	}
}
