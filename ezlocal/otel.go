package ezlocal

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/oteldefault"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// InstrumentationName is the instrumentation scope of the engine's spans.
const InstrumentationName = "github.com/ezthrottle/ezthrottle-go/ezlocal"

// Names of the engine's spans.
const (
	// SpanJob covers a job's execution, from its start to the end of its
	// webhook deliveries. Its parent is the trace context the job carries
	// (see WithTracerProvider). A child job the engine spawns (on_success,
	// on_failure) carries its parent job's span context, unless it carries
	// one of its own, so the whole chain is one trace; fallbacks run within
	// the job's own span.
	SpanJob = "ezlocal.job"
	// SpanWebhook covers one webhook delivery attempt (a client span).
	SpanWebhook = "ezlocal.webhook"
)

// Attributes of the engine's spans (besides the HTTP client semantic
// conventions on attempts and deliveries).
const (
	// AttrJobID is the job's ID.
	AttrJobID = attribute.Key("ezthrottle.job.id")
	// AttrIdempotentKey is the job's idempotent key.
	AttrIdempotentKey = attribute.Key("ezthrottle.job.idempotent_key")
	// AttrRegion is the simulated region of an attempt or delivery.
	AttrRegion = attribute.Key("ezlocal.region")
	// AttrAttempt numbers attempts and deliveries from 1.
	AttrAttempt = attribute.Key("ezlocal.attempt")
	// AttrJobStatus is the job's final status (completed, failed).
	AttrJobStatus = attribute.Key("ezthrottle.job.status")
)

// tracing is the engine's tracer and propagators.
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

// jobContext returns ctx carrying the trace context the job was submitted
// with: its metadata's entries (traceparent, tracestate, ...) when present,
// else its request headers'.
func (t tracing) jobContext(ctx context.Context, spec *ezclient.Job) context.Context {
	fields := t.prop.Fields()
	if len(fields) == 0 {
		return ctx
	}
	md := propagation.MapCarrier{}
	for _, f := range fields {
		if v, ok := spec.Metadata[f].(string); ok {
			md[f] = v
		}
	}
	if len(md) > 0 {
		if c := t.prop.Extract(ctx, md); trace.SpanContextFromContext(c).IsValid() {
			return c
		}
	}
	h := http.Header{}
	for k, v := range spec.Headers {
		h.Set(k, v)
	}
	return t.prop.Extract(ctx, propagation.HeaderCarrier(h))
}

// inherit writes the trace context of ctx (the span of the job spawning
// child: on_success, on_failure) into child, so that the child's span is
// in the same trace: into its request headers and, when metadata is true
// (Cloud jobs), its metadata, as the ezthrottle Transport does for the
// jobs it forwards. A child that carries a trace context of its own keeps
// it. Existing entries of the same names (in any case) are replaced, and a
// stale tracestate is dropped.
func (t tracing) inherit(ctx context.Context, child *ezclient.Job, metadata bool) {
	if !trace.SpanContextFromContext(ctx).IsValid() ||
		trace.SpanContextFromContext(t.jobContext(context.Background(), child)).IsValid() {
		return
	}
	carrier := propagation.MapCarrier{}
	t.prop.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return
	}
	if child.Headers == nil {
		child.Headers = make(map[string]string, len(carrier))
	}
	if metadata && child.Metadata == nil {
		child.Metadata = make(map[string]any, len(carrier))
	}
	if _, ok := carrier["traceparent"]; ok {
		// A tracestate belongs to its traceparent: a stale one goes (and is
		// replaced below when the context has one).
		for hk := range child.Headers {
			if strings.EqualFold(hk, "tracestate") {
				delete(child.Headers, hk)
			}
		}
		for mk := range child.Metadata {
			if strings.EqualFold(mk, "tracestate") {
				delete(child.Metadata, mk)
			}
		}
	}
	for k, v := range carrier {
		for hk := range child.Headers {
			if strings.EqualFold(hk, k) {
				delete(child.Headers, hk)
			}
		}
		child.Headers[k] = v
		if metadata {
			child.Metadata[k] = v
		}
	}
}

// startJob starts the job's span; its parent is the trace context the job
// was submitted with.
func (t tracing) startJob(ctx context.Context, j *job) (context.Context, trace.Span) {
	ctx = t.jobContext(ctx, j.spec)
	return t.tracer.Start(ctx, SpanJob, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(AttrJobID.String(j.id), AttrIdempotentKey.String(j.key),
			attribute.String("ezthrottle.job.dialect", j.dialect.String())))
}

// endJob records the job's final status and ends its span.
func (t tracing) endJob(span trace.Span, j *job, ok bool, reason string) {
	if span.IsRecording() {
		status := "completed"
		if !ok {
			status = "failed"
			span.SetStatus(codes.Error, redact.Text(reason))
		}
		span.SetAttributes(AttrJobStatus.String(status))
	}
	span.End()
}

// startClient starts a client span for an outgoing request of the engine
// (an attempt, or a webhook delivery when name is SpanWebhook) and injects
// its context into req's headers.
func (t tracing) startClient(req *http.Request, name string, j *job, region string, attempt int) (*http.Request, trace.Span) {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(req.Method), semconv.URLFull(safeURL(req.URL)),
		AttrJobID.String(j.id), AttrRegion.String(region), AttrAttempt.Int(attempt),
	}
	host, port := req.URL.Hostname(), req.URL.Port()
	attrs = append(attrs, semconv.ServerAddress(host))
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	if name == "" {
		name = req.Method
	}
	ctx, span := t.tracer.Start(req.Context(), name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	req = req.WithContext(ctx)
	t.prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
	return req, span
}

// endClient records an outgoing request's outcome and ends its span.
func endClient(span trace.Span, status int, err error) {
	if span.IsRecording() {
		switch {
		case err != nil:
			span.SetAttributes(semconv.ErrorTypeKey.String(semconv.ErrorType(err).Value.AsString()))
			span.SetStatus(codes.Error, "request failed")
		default:
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if status >= 400 {
				span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
				span.SetStatus(codes.Error, "")
			}
		}
	}
	span.End()
}

// safeURL renders a URL for url.full without user info, fragment or query
// values (a job's URL may carry credentials).
func safeURL(u *url.URL) string {
	cp := *u
	cp.User, cp.Fragment, cp.RawFragment = nil, "", ""
	if cp.RawQuery != "" {
		parts := strings.Split(cp.RawQuery, "&")
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok {
				parts[i] = k + "=REDACTED"
			}
		}
		cp.RawQuery = strings.Join(parts, "&")
	}
	return cp.String()
}
