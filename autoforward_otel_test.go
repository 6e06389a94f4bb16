package ezthrottle_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// useGlobalPropagator sets the global propagators for the test (AutoForward
// has no Transport to configure and uses them), restoring them afterwards.
func useGlobalPropagator(t *testing.T, p propagation.TextMapPropagator) {
	t.Helper()
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(p)
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
}

var traceProp = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

func forwardJob(job ezclient.Job) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		return "", &ezthrottle.ForwardError{Job: job, Cause: errors.New("429")}
	}
}

func tp(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// TestAutoForwardPropagatesTraceContext: under a recording span, the
// submission is an ezthrottle.submit child span and the job carries its
// context in its headers and metadata, as the Transport's forwarded jobs do.
func TestAutoForwardPropagatesTraceContext(t *testing.T) {
	useGlobalPropagator(t, traceProp)
	k := newOtelKit(t)
	sub := &fakeSubmitter{}
	// The caller's span continues a remote trace with a trace state.
	ts, err := trace.ParseTraceState("vendor=1")
	require.NoError(t, err)
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6},
		TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	ctx, caller := k.tp.Tracer("app").Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "checkout")

	_, s, err := ezthrottle.AutoForward(ctx, sub, forwardJob(ezclient.Job{URL: "https://api.test/v1/charges", Method: "POST",
		Headers: map[string]string{"Content-Type": "application/json"}, Metadata: map[string]any{"order": "1"}}),
		ezthrottle.JobIdempotentKey("order-1"))
	require.NoError(t, err)
	caller.End()
	require.Equal(t, "job_1", s.JobID)

	span := k.span(t, ezthrottle.SpanSubmit)
	assert.Equal(t, caller.SpanContext().SpanID(), span.Parent().SpanID(), "child of the caller's span")
	assert.Equal(t, caller.SpanContext().TraceID(), span.SpanContext().TraceID())
	a := attrs(span)
	assert.Equal(t, string(ezthrottle.ReasonAutoForward), a[ezthrottle.AttrForwardReason].AsString())
	assert.Equal(t, "https://api.test:443", a[ezthrottle.AttrHost].AsString())
	assert.Equal(t, "job_1", a[ezthrottle.AttrJobID].AsString())
	assert.Equal(t, "order-1", a[ezthrottle.AttrIdempotentKey].AsString())
	assert.Equal(t, codes.Unset, span.Status().Code)

	job := sub.Jobs()[0]
	want := tp(span.SpanContext())
	assert.Equal(t, want, job.Headers["traceparent"], "the engine's call continues the trace")
	assert.Equal(t, "vendor=1", job.Headers["tracestate"])
	assert.Equal(t, "application/json", job.Headers["Content-Type"])
	assert.Equal(t, want, job.Metadata["traceparent"], "the webhook can link to the origin")
	assert.Equal(t, "vendor=1", job.Metadata["tracestate"])
	assert.Equal(t, "1", job.Metadata["order"])
}

// TestAutoForwardTraceContextCases: what the job carries in each case.
func TestAutoForwardTraceContextCases(t *testing.T) {
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x0a, 0xf7, 1}, SpanID: trace.SpanID{0xb7, 2}, TraceFlags: trace.FlagsSampled, Remote: true})
	remoteCtx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
	const own = "00-11111111111111111111111111111111-2222222222222222-01"
	tests := []struct {
		name    string
		prop    propagation.TextMapPropagator
		ctx     context.Context
		job     ezclient.Job
		opts    []ezthrottle.JobOption
		headers map[string]string
		md      map[string]any
	}{
		{name: "non-recording parent: its context, no span", prop: traceProp, ctx: remoteCtx,
			job:     ezclient.Job{URL: "https://api.test/x"},
			headers: map[string]string{"traceparent": tp(remote)}, md: map[string]any{"traceparent": tp(remote)}},
		{name: "no span context: nothing", prop: traceProp, ctx: context.Background(),
			job: ezclient.Job{URL: "https://api.test/x"}},
		{name: "default global propagator injects nothing", prop: propagation.NewCompositeTextMapPropagator(), ctx: remoteCtx,
			job: ezclient.Job{URL: "https://api.test/x"}},
		{name: "job's own traceparent header kept", prop: traceProp, ctx: remoteCtx,
			job:     ezclient.Job{URL: "https://api.test/x", Headers: map[string]string{"TraceParent": own, "tracestate": "a=b"}},
			headers: map[string]string{"TraceParent": own, "tracestate": "a=b"}},
		{name: "job's own traceparent metadata kept", prop: traceProp, ctx: remoteCtx,
			job: ezclient.Job{URL: "https://api.test/x", Metadata: map[string]any{"traceparent": own}},
			md:  map[string]any{"traceparent": own}},
		{name: "malformed traceparent kept as is", prop: traceProp, ctx: remoteCtx,
			job:     ezclient.Job{URL: "https://api.test/x", Headers: map[string]string{"traceparent": "garbage"}},
			headers: map[string]string{"traceparent": "garbage"}},
		{name: "traceparent set by an option kept", prop: traceProp, ctx: remoteCtx,
			job: ezclient.Job{URL: "https://api.test/x"}, opts: []ezthrottle.JobOption{ezthrottle.JobHeader("traceparent", own)},
			headers: map[string]string{"Traceparent": own}},
		{name: "a lone stale tracestate is replaced", prop: traceProp, ctx: remoteCtx,
			job:     ezclient.Job{URL: "https://api.test/x", Headers: map[string]string{"Tracestate": "stale=1"}},
			headers: map[string]string{"traceparent": tp(remote)}, md: map[string]any{"traceparent": tp(remote)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			useGlobalPropagator(t, tt.prop)
			sub := &fakeSubmitter{}
			orig := tt.job.Clone()
			_, s, err := ezthrottle.AutoForward(tt.ctx, sub, forwardJob(tt.job), tt.opts...)
			require.NoError(t, err)
			require.NotNil(t, s)
			job := sub.Jobs()[0]
			assert.Equal(t, tt.headers, job.Headers)
			assert.Equal(t, tt.md, job.Metadata)
			assert.Equal(t, orig, tt.job.Clone(), "the ForwardError's job is not modified")
		})
	}
}

// TestAutoForwardSelfHostedHeadersOnly: a self-hosted engine's job carries
// the trace context in its headers only (self-hosted jobs have no metadata).
func TestAutoForwardSelfHostedHeadersOnly(t *testing.T) {
	useGlobalPropagator(t, traceProp)
	var got map[string]any
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued"}`)
	}))
	defer engine.Close()
	cl, err := ezclient.New(ezclient.WithSelfHosted(engine.URL, "u1"))
	require.NoError(t, err)
	k := newOtelKit(t)
	ctx, caller := k.caller("call")
	_, s, err := ezthrottle.AutoForward(ctx, cl, forwardJob(ezclient.Job{URL: "https://api.test/x"}),
		ezthrottle.JobWebhook("https://hooks.example.com/x"))
	caller.End()
	require.NoError(t, err)
	require.NotNil(t, s)
	headers, _ := got["headers"].(map[string]any)
	assert.Equal(t, tp(k.span(t, ezthrottle.SpanSubmit).SpanContext()), headers["traceparent"])
	_, hasMeta := got["metadata"]
	assert.False(t, hasMeta)
}

// TestAutoForwardSubmitFailureSpan: a failed submission ends the span in
// error, and neither the span nor the returned error carries the job's
// secrets the engine echoed.
func TestAutoForwardSubmitFailureSpan(t *testing.T) {
	useGlobalPropagator(t, traceProp)
	k := newOtelKit(t)
	const secret = "sk_live_topsecret42"
	sub := ezthrottle.SubmitterFunc(func(_ context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
		return nil, fmt.Errorf("%w: rejected job with Authorization %q", ezclient.ErrEngine, job.Headers["Authorization"])
	})
	ctx, caller := k.caller("call")
	_, s, err := ezthrottle.AutoForward(ctx, sub, forwardJob(ezclient.Job{URL: "https://api.test/x",
		Headers: map[string]string{"Authorization": "Bearer " + secret}}))
	caller.End()
	assert.Nil(t, s)
	require.Error(t, err)
	assert.ErrorIs(t, err, ezclient.ErrEngine)
	var ffe *ezthrottle.ForwardFailedError
	require.ErrorAs(t, err, &ffe)
	assert.Equal(t, ezthrottle.ReasonAutoForward, ffe.Reason)
	assert.NotContains(t, ffe.Error(), secret)

	span := k.span(t, ezthrottle.SpanSubmit)
	assert.Equal(t, codes.Error, span.Status().Code)
	assert.Contains(t, span.Status().Description, "REDACTED")
	assert.NotContains(t, span.Status().Description, secret)
	for _, kv := range span.Attributes() {
		assert.NotContains(t, kv.Value.String(), secret)
	}
	_, hasJobID := attrs(span)[ezthrottle.AttrJobID]
	assert.False(t, hasJobID)

	// A Submitter answering without a job ID is a failure too.
	empty := ezthrottle.SubmitterFunc(func(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
		return &ezclient.Submission{}, nil
	})
	_, s, err = ezthrottle.AutoForward(context.Background(), empty, forwardJob(ezclient.Job{URL: "https://api.test/x"}))
	assert.Nil(t, s)
	assert.ErrorContains(t, err, "no job ID")
}
