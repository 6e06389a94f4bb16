package ezthrottle_test

import (
	"context"
	"net/http"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// BenchmarkTelemetry measures what the OpenTelemetry integration adds to a
// GET through the Transport (compare with BenchmarkGET/transport, and with
// the same benchmark before the integration, see the README):
//
//   - global: the default, global providers that nobody set (no-op);
//   - noop: explicit no-op tracer and meter providers;
//   - sdk-metrics: an SDK meter provider (manual reader), no span;
//   - sdk-traced: SDK tracing of a sampled caller span plus SDK metrics.
func BenchmarkTelemetry(b *testing.B) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tp := sdktrace.NewTracerProvider()
	b.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	for _, bc := range []struct {
		name   string
		opts   []ezthrottle.Option
		traced bool
	}{
		{"global", nil, false},
		{"noop", []ezthrottle.Option{ezthrottle.WithTracerProvider(tracenoop.NewTracerProvider()),
			ezthrottle.WithMeterProvider(metricnoop.NewMeterProvider())}, false},
		{"sdk-metrics", []ezthrottle.Option{ezthrottle.WithMeterProvider(mp)}, false},
		{"sdk-traced", []ezthrottle.Option{ezthrottle.WithTracerProvider(tp), ezthrottle.WithMeterProvider(mp)}, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := benchTransport(b, bc.opts...)
			ctx := context.Background()
			if bc.traced {
				c, s := tp.Tracer("bench").Start(ctx, "caller")
				defer s.End()
				ctx = c
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://api.example.com/v1/items?limit=10", nil)
			req.Header.Set("Authorization", "Bearer k")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}
