package ezlocal

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

const (
	testTraceID = "0af7651916cd43dd8448eb211c80319c"
	testSpanID  = "b7ad6b7169203331"
	testParent  = "00-" + testTraceID + "-" + testSpanID + "-01"
)

func tracedEngine(t *testing.T, opts ...Option) (*Engine, *tracetest.SpanRecorder) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e, _ := startEngine(t, append([]Option{WithTracerProvider(tp), WithPropagators(propagation.TraceContext{})}, opts...)...)
	return e, sr
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func spansNamed(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// TestTracingContinuesTheJobsTrace: a job carrying a traceparent (in its
// metadata, as the Transport writes it) is executed under a job span of
// that trace; the destination and the webhook receive the traceparent of
// their own client spans.
func TestTracingContinuesTheJobsTrace(t *testing.T) {
	for _, where := range []string{"metadata", "headers"} {
		t.Run(where, func(t *testing.T) {
			e, sr := tracedEngine(t)
			dest := newReceiver(t, func(n int) int {
				if n == 1 {
					return http.StatusServiceUnavailable // retried once
				}
				return http.StatusOK
			})
			hook := newReceiver(t, nil)
			job := &ezclient.Job{URL: dest.URL + "/v1/charges?api_key=sk_secret_value", Method: "POST", Body: "x=1",
				Webhooks: []ezclient.Webhook{{URL: hook.URL}}}
			if where == "metadata" {
				job.Metadata = map[string]any{"traceparent": testParent, "tracestate": "v=1"}
				job.Headers = map[string]string{"Traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
			} else {
				job.Headers = map[string]string{"traceparent": testParent, "tracestate": "v=1"}
			}
			info := submitWait(t, e, job)
			require.Equal(t, ezclient.StatusCompleted, info.Status)

			spans := sr.Ended()
			jobs := spansNamed(spans, SpanJob)
			require.Len(t, jobs, 1)
			js := jobs[0]
			assert.Equal(t, testTraceID, js.SpanContext().TraceID().String(), "metadata wins over headers")
			assert.Equal(t, testSpanID, js.Parent().SpanID().String())
			assert.Equal(t, trace.SpanKindConsumer, js.SpanKind())
			assert.Equal(t, info.ID, spanAttrs(js)[AttrJobID].AsString())
			assert.Equal(t, "completed", spanAttrs(js)[AttrJobStatus].AsString())

			attempts := spansNamed(spans, "POST")
			require.Len(t, attempts, 2)
			for i, a := range attempts {
				assert.Equal(t, js.SpanContext().SpanID(), a.Parent().SpanID())
				assert.Equal(t, trace.SpanKindClient, a.SpanKind())
				at := spanAttrs(a)
				assert.Equal(t, int64(i+1), at[AttrAttempt].AsInt64())
				assert.Equal(t, "iad", at[AttrRegion].AsString())
				assert.Contains(t, at["url.full"].AsString(), "api_key=REDACTED")
				assert.NotContains(t, at["url.full"].AsString(), "sk_secret_value")
				// The destination got the attempt span's context.
				got := dest.deliveries()[i].Header.Get("traceparent")
				assert.Equal(t, "00-"+testTraceID+"-"+a.SpanContext().SpanID().String()+"-01", got)
				assert.Equal(t, "v=1", dest.deliveries()[i].Header.Get("tracestate"))
			}
			assert.Equal(t, int64(503), spanAttrs(attempts[0])["http.response.status_code"].AsInt64())
			assert.Equal(t, codes.Error, attempts[0].Status().Code)
			assert.Equal(t, int64(200), spanAttrs(attempts[1])["http.response.status_code"].AsInt64())

			hooks := spansNamed(spans, SpanWebhook)
			require.Len(t, hooks, 1)
			assert.Equal(t, js.SpanContext().SpanID(), hooks[0].Parent().SpanID())
			require.Len(t, hook.deliveries(), 1)
			assert.Equal(t, "00-"+testTraceID+"-"+hooks[0].SpanContext().SpanID().String()+"-01",
				hook.deliveries()[0].Header.Get("traceparent"))
		})
	}
}

func TestTracingWithoutTraceContextStartsNewTraces(t *testing.T) {
	e, sr := tracedEngine(t, WithWebhookRetries())
	dest := okServer(t)
	info := submitWait(t, e, &ezclient.Job{URL: dest.URL})
	require.Equal(t, ezclient.StatusCompleted, info.Status)
	jobs := spansNamed(sr.Ended(), SpanJob)
	require.Len(t, jobs, 1)
	assert.False(t, jobs[0].Parent().IsValid())

	// A failed job's span is an error.
	e2, sr2 := tracedEngine(t, WithDefaultRetryPolicy(ezclient.RetryPolicy{}))
	bad := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) })
	info = submitWait(t, e2, &ezclient.Job{URL: bad.URL})
	require.Equal(t, ezclient.StatusFailed, info.Status)
	jobs = spansNamed(sr2.Ended(), SpanJob)
	require.Len(t, jobs, 1)
	assert.Equal(t, codes.Error, jobs[0].Status().Code)
	assert.Equal(t, "failed", spanAttrs(jobs[0])[AttrJobStatus].AsString())
}
