// Package oteldefault holds the OpenTelemetry defaults shared by this
// module's packages: the global provider or propagator when none is given,
// and instruments named and versioned the same way everywhere.
package oteldefault

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// Tracer returns the tracer called name of tp, or of the global provider
// when tp is nil, with this library's version and schema URL.
func Tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(name, trace.WithInstrumentationVersion(ezclient.Version), trace.WithSchemaURL(semconv.SchemaURL))
}

// Meter returns the meter called name of mp, or of the global provider
// when mp is nil, with this library's version and schema URL.
func Meter(mp metric.MeterProvider, name string) metric.Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(name, metric.WithInstrumentationVersion(ezclient.Version), metric.WithSchemaURL(semconv.SchemaURL))
}

// Propagator returns p, or the global propagator when p is nil.
func Propagator(p propagation.TextMapPropagator) propagation.TextMapPropagator {
	if p == nil {
		return otel.GetTextMapPropagator()
	}
	return p
}
