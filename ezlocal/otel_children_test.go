package ezlocal

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// jobSpanOf returns the SpanJob span of a job ID.
func jobSpanOf(t *testing.T, spans []sdktrace.ReadOnlySpan, id string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range spansNamed(spans, SpanJob) {
		if spanAttrs(s)[AttrJobID].AsString() == id {
			return s
		}
	}
	require.Failf(t, "no job span", "job %s", id)
	return nil
}

func traceparentOf(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
}

// TestTracingChildrenContinueTheParentsTrace: on_success / on_failure
// children (nested, and those of the fallback that produced the result)
// run under job spans whose parent is the spawning job's span, and carry
// its context in their headers and (Cloud) metadata; the fallback's
// attempts are children of the job's span. A child with a trace context of
// its own keeps it.
func TestTracingChildrenContinueTheParentsTrace(t *testing.T) {
	for _, origin := range []string{"submitted with a trace context", "new trace"} {
		t.Run(origin, func(t *testing.T) {
			e, sr := tracedEngine(t)
			primary, _ := scripted(t, 500)
			ok, _ := scripted(t, 200)
			c1, _ := scripted(t, 200)
			c2, _ := scripted(t, 200)
			fbChild, _ := scripted(t, 200)
			own, _ := scripted(t, 200)
			const ownTrace = "11111111111111111111111111111111"
			ownParent := "00-" + ownTrace + "-2222222222222222-01"
			job := &ezclient.Job{
				URL: primary, RetryPolicy: &ezclient.RetryPolicy{},
				Fallback: &ezclient.Fallback{Trigger: ezclient.OnError(500), Job: &ezclient.Job{
					URL: ok, Method: "PUT",
					// A stale traceparent on the fallback is replaced by the attempt span's.
					Headers:   map[string]string{"traceparent": ownParent},
					OnSuccess: &ezclient.Job{URL: fbChild},
				}},
				OnSuccess: &ezclient.Job{URL: c1, OnSuccess: &ezclient.Job{URL: c2},
					OnFailure: &ezclient.Job{URL: own}}, // never runs: c1 succeeds
			}
			if origin == "submitted with a trace context" {
				job.Metadata = map[string]any{"traceparent": testParent}
			}
			info := submitWait(t, e, job)
			require.Equal(t, ezclient.StatusCompleted, info.Status)
			require.Len(t, info.Children, 2)
			require.NoError(t, e.WaitIdle(context.Background()))

			// A child carrying its own trace context keeps it.
			ownJob := submitWait(t, e, &ezclient.Job{URL: ok, OnSuccess: &ezclient.Job{URL: own,
				Headers: map[string]string{"Traceparent": ownParent}}})
			require.Len(t, ownJob.Children, 1)
			require.NoError(t, e.WaitIdle(context.Background()))

			spans := sr.Ended()
			root := jobSpanOf(t, spans, info.ID)
			tid := root.SpanContext().TraceID()
			if origin == "submitted with a trace context" {
				assert.Equal(t, testTraceID, tid.String())
			} else {
				assert.False(t, root.Parent().IsValid())
			}

			// The fallback's attempt is a child of the job's span.
			puts := spansNamed(spans, "PUT")
			require.Len(t, puts, 1)
			assert.Equal(t, tid, puts[0].SpanContext().TraceID())
			assert.Equal(t, root.SpanContext().SpanID(), puts[0].Parent().SpanID())

			byURL := map[string]JobInfo{}
			for _, id := range info.Children {
				ci, found := e.Job(id)
				require.True(t, found)
				byURL[ci.Spec.URL] = ci
			}
			require.Contains(t, byURL, c1)
			require.Contains(t, byURL, fbChild)
			for _, u := range []string{c1, fbChild} {
				ci := byURL[u]
				cs := jobSpanOf(t, spans, ci.ID)
				assert.Equal(t, tid, cs.SpanContext().TraceID(), "%s in the parent's trace", ci.Role)
				assert.Equal(t, root.SpanContext().SpanID(), cs.Parent().SpanID(), "%s is a child of the parent's job span", ci.Role)
				want := traceparentOf(root.SpanContext())
				assert.Equal(t, want, ci.Spec.Headers["traceparent"])
				assert.Equal(t, want, ci.Spec.Metadata["traceparent"], "Cloud: in the metadata, for the webhook's link")
			}

			// The grandchild continues its own parent's span.
			c1Info := byURL[c1]
			require.Len(t, c1Info.Children, 1)
			gc, found := e.Job(c1Info.Children[0])
			require.True(t, found)
			gs := jobSpanOf(t, spans, gc.ID)
			c1Span := jobSpanOf(t, spans, c1Info.ID)
			assert.Equal(t, tid, gs.SpanContext().TraceID())
			assert.Equal(t, c1Span.SpanContext().SpanID(), gs.Parent().SpanID())

			oc, found := e.Job(ownJob.Children[0])
			require.True(t, found)
			os := jobSpanOf(t, spans, oc.ID)
			assert.Equal(t, ownTrace, os.SpanContext().TraceID().String(), "its own trace context is kept")
			assert.Equal(t, ownParent, oc.Spec.Headers["Traceparent"])
			assert.NotContains(t, oc.Spec.Metadata, "traceparent")
		})
	}
}

// TestTracingInherit covers the injection into a spawned child.
func TestTracingInherit(t *testing.T) {
	tid, _ := trace.TraceIDFromHex(testTraceID)
	sid, _ := trace.SpanIDFromHex(testSpanID)
	parent := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
		TraceState: func() trace.TraceState { ts, _ := trace.ParseTraceState("v=1"); return ts }(),
	}))
	noState := trace.ContextWithSpanContext(context.Background(), trace.SpanContextFromContext(parent).WithTraceState(trace.TraceState{}))
	const other = "00-11111111111111111111111111111111-2222222222222222-01"
	tc := tracing{tracer: tracenoop.NewTracerProvider().Tracer(""), prop: propagation.TraceContext{}}
	tests := []struct {
		name     string
		ctx      context.Context
		tr       tracing
		child    ezclient.Job
		metadata bool
		headers  map[string]string
		md       map[string]any
	}{
		{name: "cloud", ctx: parent, tr: tc, metadata: true,
			headers: map[string]string{"traceparent": testParent, "tracestate": "v=1"},
			md:      map[string]any{"traceparent": testParent, "tracestate": "v=1"}},
		{name: "self-hosted: headers only", ctx: parent, tr: tc,
			headers: map[string]string{"traceparent": testParent, "tracestate": "v=1"}},
		{name: "invalid tracestate header replaced", ctx: parent, tr: tc, metadata: true,
			child:   ezclient.Job{Headers: map[string]string{"TraceState": "stale", "X-A": "1"}, Metadata: map[string]any{"k": "v"}},
			headers: map[string]string{"traceparent": testParent, "tracestate": "v=1", "X-A": "1"},
			md:      map[string]any{"traceparent": testParent, "tracestate": "v=1", "k": "v"}},
		{name: "stale tracestate dropped when the parent has none", ctx: noState, tr: tc, metadata: true,
			child:   ezclient.Job{Headers: map[string]string{"Tracestate": "stale"}, Metadata: map[string]any{"tracestate": "stale"}},
			headers: map[string]string{"traceparent": testParent}, md: map[string]any{"traceparent": testParent}},
		{name: "own context in headers kept", ctx: parent, tr: tc, metadata: true,
			child:   ezclient.Job{Headers: map[string]string{"Traceparent": other}},
			headers: map[string]string{"Traceparent": other}},
		{name: "own context in metadata kept", ctx: parent, tr: tc, metadata: true,
			child: ezclient.Job{Metadata: map[string]any{"traceparent": other}},
			md:    map[string]any{"traceparent": other}},
		{name: "no parent span context", ctx: context.Background(), tr: tc, metadata: true},
		{name: "propagators inject nothing", ctx: parent, metadata: true,
			tr: tracing{tracer: tc.tracer, prop: propagation.NewCompositeTextMapPropagator()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			child := tt.child.Clone()
			tt.tr.inherit(tt.ctx, child, tt.metadata)
			assert.Equal(t, tt.headers, child.Headers)
			assert.Equal(t, tt.md, child.Metadata)
		})
	}
}
