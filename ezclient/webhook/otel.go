package webhook

import (
	"context"
	"github.com/ezthrottle/ezthrottle-go/internal/oteldefault"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationName is the instrumentation scope of the Handler's spans.
const InstrumentationName = "github.com/ezthrottle/ezthrottle-go/ezclient/webhook"

// SpanName is the name of the span the Handler records for each delivery.
const SpanName = "ezthrottle.webhook"

// Attributes of the Handler's span (besides http.request.method,
// http.response.status_code and error.type).
const (
	// AttrJobID is the delivered job's ID.
	AttrJobID = attribute.Key("ezthrottle.job.id")
	// AttrIdempotentKey is the job's idempotent key (Cloud payloads).
	AttrIdempotentKey = attribute.Key("ezthrottle.job.idempotent_key")
	// AttrStatus is the payload's wire status ("success", "failed",
	// "completed").
	AttrStatus = attribute.Key("ezthrottle.webhook.status")
	// AttrSucceeded is Result.Succeeded.
	AttrSucceeded = attribute.Key("ezthrottle.webhook.succeeded")
	// AttrTargetStatus is the target API's HTTP status in the result.
	AttrTargetStatus = attribute.Key("ezthrottle.webhook.target_status_code")
	// AttrDuplicate reports a repeated delivery of a job already received.
	AttrDuplicate = attribute.Key("ezthrottle.webhook.duplicate")
	// AttrForm is the payload form ("cloud", "self-hosted").
	AttrForm = attribute.Key("ezthrottle.webhook.form")
)

// tracing is the Handler's tracer and propagators.
type tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func newTracing(c *config) tracing {
	return tracing{
		tracer: oteldefault.Tracer(c.tracerProvider, InstrumentationName),
		prop:   oteldefault.Propagator(c.propagators),
	}
}

// start starts the delivery's span. Its parent is the request context's
// span when there is one (an otelhttp handler around the Handler), else the
// trace context of the delivery's headers (ezlocal sends its delivery
// span's), else none. The link to the trace that submitted the job is added
// once the payload is decoded (link).
func (t tracing) start(r *http.Request) (context.Context, trace.Span) {
	ctx := r.Context()
	kind := trace.SpanKindInternal
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
		kind = trace.SpanKindServer
	}
	return t.tracer.Start(ctx, SpanName, trace.WithSpanKind(kind),
		trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method)))
}

// result records the decoded result on the span and links the span to
// the trace context carried by the result's metadata (the Transport puts
// the submitting span's traceparent/tracestate there).
func (t tracing) result(span trace.Span, res Result, added bool) {
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{AttrJobID.String(res.JobID), AttrStatus.String(res.Status),
		AttrSucceeded.Bool(res.Succeeded), AttrDuplicate.Bool(!added), AttrForm.String(res.Form.String())}
	if res.IdempotentKey != "" {
		attrs = append(attrs, AttrIdempotentKey.String(res.IdempotentKey))
	}
	if res.StatusCode != 0 {
		attrs = append(attrs, AttrTargetStatus.Int(res.StatusCode))
	}
	span.SetAttributes(attrs...)
	if sc := OriginSpanContext(res, t.prop); sc.IsValid() {
		span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
			attribute.String("ezthrottle.link", "job_origin")}})
	}
}

// end records the answer and ends the span.
func (t tracing) end(span trace.Span, w *statusWriter) {
	if span.IsRecording() {
		status := w.status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if w.code != "" {
			span.SetAttributes(semconv.ErrorTypeKey.String(w.code))
		}
		if status >= 500 {
			span.SetStatus(codes.Error, w.code)
		}
	}
	span.End()
}

// OriginSpanContext returns the span context that submitted the result's
// job, read with p from the result's metadata (entries such as
// "traceparent" and "tracestate", as the ezthrottle Transport writes them).
// It is invalid when the metadata carries none (self-hosted payloads carry
// no metadata). A nil p means the global propagators.
func OriginSpanContext(res Result, p propagation.TextMapPropagator) trace.SpanContext {
	if len(res.Metadata) == 0 {
		return trace.SpanContext{}
	}
	p = oteldefault.Propagator(p)
	carrier := propagation.MapCarrier{}
	for _, f := range p.Fields() {
		if v, ok := res.Metadata[f].(string); ok {
			carrier[f] = v
		}
	}
	if len(carrier) == 0 {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(p.Extract(context.Background(), carrier))
}

// statusWriter records the status and error code of the Handler's answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	code   string
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}
