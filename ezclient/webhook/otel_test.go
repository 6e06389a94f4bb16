package webhook

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	originTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	originTraceID     = "0af7651916cd43dd8448eb211c80319c"
	originSpanID      = "b7ad6b7169203331"
	deliveryParent    = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)

func newTracedHandler(t *testing.T, opts ...Option) (*Handler, *tracetest.SpanRecorder) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	h, err := NewHandler(append([]Option{WithTracerProvider(tp), WithPropagators(propagation.TraceContext{})}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h, sr
}

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestHandlerSpanLinksToOriginatingTrace(t *testing.T) {
	called := make(chan trace.SpanContext, 1)
	h, sr := newTracedHandler(t, WithCallback(func(ctx context.Context, _ Result) {
		called <- trace.SpanContextFromContext(ctx)
	}))
	body := `{"job_id":"job_1","idempotent_key":"k1","status":"success",` +
		`"response":{"status_code":200,"body":"ok"},` +
		`"metadata":{"traceparent":"` + originTraceparent + `","tracestate":"vendor=1","order":"42"}}`
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(body))
	req.Header.Set("traceparent", deliveryParent)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)

	spans := sr.Ended()
	require.Len(t, spans, 1)
	s := spans[0]
	assert.Equal(t, SpanName, s.Name())
	assert.Equal(t, trace.SpanKindServer, s.SpanKind())
	// Parent: the delivery's traceparent header.
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", s.Parent().TraceID().String())
	assert.True(t, s.Parent().IsRemote())
	// Link: the trace that submitted the job, from the metadata.
	require.Len(t, s.Links(), 1)
	link := s.Links()[0].SpanContext
	assert.Equal(t, originTraceID, link.TraceID().String())
	assert.Equal(t, originSpanID, link.SpanID().String())
	assert.Equal(t, "vendor=1", link.TraceState().String())

	a := attrsOf(s)
	assert.Equal(t, "job_1", a[AttrJobID].AsString())
	assert.Equal(t, "k1", a[AttrIdempotentKey].AsString())
	assert.Equal(t, "success", a[AttrStatus].AsString())
	assert.True(t, a[AttrSucceeded].AsBool())
	assert.False(t, a[AttrDuplicate].AsBool())
	assert.Equal(t, int64(200), a[AttrTargetStatus].AsInt64())
	assert.Equal(t, int64(200), a["http.response.status_code"].AsInt64())
	assert.Equal(t, "POST", a["http.request.method"].AsString())
	assert.Equal(t, codes.Unset, s.Status().Code)

	// The callback's context carries the delivery span.
	sc := <-called
	assert.Equal(t, s.SpanContext().SpanID(), sc.SpanID())

	// A redelivery is recorded as a duplicate, still linked.
	req = httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(body))
	h.ServeHTTP(httptest.NewRecorder(), req)
	spans = sr.Ended()
	require.Len(t, spans, 2)
	assert.True(t, attrsOf(spans[1])[AttrDuplicate].AsBool())
	assert.False(t, spans[1].Parent().IsValid(), "no traceparent header: a new trace")
	require.Len(t, spans[1].Links(), 1)
}

func TestHandlerSpanUsesActiveSpanAndRecordsRejections(t *testing.T) {
	h, sr := newTracedHandler(t, WithSecret("whsec_0123456789abcdef"))
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, parent := tp.Tracer("test").Start(context.Background(), "server")
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(`{"job_id":"j","status":"success"}`)).WithContext(ctx)
	req.Header.Set(SignatureHeader, "t=1,v1=00")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	parent.End()
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	spans := sr.Ended()
	require.Len(t, spans, 1)
	s := spans[0]
	assert.Equal(t, trace.SpanKindInternal, s.SpanKind(), "inside a server span")
	assert.Equal(t, parent.SpanContext().SpanID(), s.Parent().SpanID())
	a := attrsOf(s)
	assert.Equal(t, "invalid_signature", a["error.type"].AsString())
	assert.Equal(t, int64(401), a["http.response.status_code"].AsInt64())
	assert.Empty(t, s.Links())
	_, hasJob := a[AttrJobID]
	assert.False(t, hasJob)

	// A self-hosted payload has no metadata: no link.
	h2, sr2 := newTracedHandler(t)
	h2.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/w",
		strings.NewReader(`{"job_id":"j2","status":"completed","response_status":200}`)))
	require.Len(t, sr2.Ended(), 1)
	assert.Empty(t, sr2.Ended()[0].Links())
	assert.Equal(t, "self-hosted", attrsOf(sr2.Ended()[0])[AttrForm].AsString())
}

func TestOriginSpanContext(t *testing.T) {
	p := propagation.TraceContext{}
	assert.False(t, OriginSpanContext(Result{}, p).IsValid())
	assert.False(t, OriginSpanContext(Result{Metadata: map[string]any{"traceparent": 42}}, p).IsValid())
	assert.False(t, OriginSpanContext(Result{Metadata: map[string]any{"traceparent": "garbage"}}, p).IsValid())
	sc := OriginSpanContext(Result{Metadata: map[string]any{"traceparent": originTraceparent}}, p)
	require.True(t, sc.IsValid())
	assert.Equal(t, originTraceID, sc.TraceID().String())
	assert.True(t, sc.IsRemote())
}

// TestHandlerNeverLeaksSecrets checks that neither the webhook secret nor
// a delivery's signature reaches the logs, the span or the answer, on
// every rejection path.
func TestHandlerNeverLeaksSecrets(t *testing.T) {
	const secret = "whsec_TOPSECRET_0123456789"
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(lockedWriter{w: &logs, mu: new(sync.Mutex)}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, sr := newTracedHandler(t, WithSecret(secret), WithSecondarySecret("whsec_OLDSECRET_0123456789"), WithLogger(logger))
	body := []byte(`{"job_id":"job_s","status":"success","metadata":{}}`)
	good := Sign(secret, time.Now(), body)
	wrong := Sign("whsec_WRONGSECRET_0123456", time.Now(), body)
	stale := Sign(secret, time.Now().Add(-time.Hour), body)
	var answers []string
	for _, sig := range []string{good, wrong, stale, "garbage-" + good, ""} {
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		if sig != "" {
			req.Header.Set(SignatureHeader, sig)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		answers = append(answers, rec.Body.String())
	}
	var spanText strings.Builder
	for _, s := range sr.Ended() {
		for _, kv := range s.Attributes() {
			spanText.WriteString(kv.Value.String() + "\n")
		}
		spanText.WriteString(s.Status().Description + "\n")
		for _, ev := range s.Events() {
			for _, kv := range ev.Attributes {
				spanText.WriteString(kv.Value.String() + "\n")
			}
		}
	}
	for _, leak := range []string{secret, "TOPSECRET", "OLDSECRET", "WRONGSECRET", good[strings.Index(good, "v1=")+3:]} {
		assert.NotContains(t, logs.String(), leak)
		assert.NotContains(t, spanText.String(), leak)
		assert.NotContains(t, strings.Join(answers, "\n"), leak)
	}
	assert.Len(t, sr.Ended(), 5)
	// The collection itself works (so the checks above can fail).
	assert.Contains(t, spanText.String(), "job_s")
	assert.Contains(t, logs.String(), "signature rejected")
}
