package ezthrottle_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// otelKit is an SDK tracer provider with an in-memory span recorder and a
// meter provider with a manual reader.
type otelKit struct {
	sr     *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newOtelKit(t *testing.T) *otelKit {
	t.Helper()
	k := &otelKit{sr: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	k.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(k.sr))
	k.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(k.reader))
	t.Cleanup(func() {
		_ = k.tp.Shutdown(context.Background())
		_ = k.mp.Shutdown(context.Background())
	})
	return k
}

func (k *otelKit) opts() []ezthrottle.Option {
	return []ezthrottle.Option{ezthrottle.WithTracerProvider(k.tp), ezthrottle.WithMeterProvider(k.mp),
		ezthrottle.WithPropagators(propagation.TraceContext{})}
}

// caller starts the application's span.
func (k *otelKit) caller(name string) (context.Context, trace.Span) {
	return k.tp.Tracer("app").Start(context.Background(), name)
}

func (k *otelKit) spans(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range k.sr.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (k *otelKit) span(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	ss := k.spans(name)
	require.Len(t, ss, 1, "spans named %q", name)
	return ss[0]
}

func (k *otelKit) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, k.reader.Collect(context.Background(), &rm))
	return rm
}

func findMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// outcomes returns the request counter by "outcome[/reason]".
func (k *otelKit) outcomes(t *testing.T) map[string]int64 {
	t.Helper()
	m, ok := findMetric(k.collect(t), ezthrottle.MetricRequests)
	out := map[string]int64{}
	if !ok {
		return out
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%T", m.Data)
	assert.True(t, sum.IsMonotonic)
	for _, dp := range sum.DataPoints {
		o, _ := dp.Attributes.Value(ezthrottle.AttrOutcome)
		name := o.AsString()
		if r, ok := dp.Attributes.Value(ezthrottle.AttrForwardReason); ok {
			name += "/" + r.AsString()
		}
		out[name] += dp.Value
	}
	return out
}

// waits returns the throttle wait histogram points by admitted.
func (k *otelKit) waits(t *testing.T) map[bool]metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, ok := findMetric(k.collect(t), ezthrottle.MetricThrottleWait)
	require.True(t, ok)
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok)
	out := map[bool]metricdata.HistogramDataPoint[float64]{}
	for _, dp := range h.DataPoints {
		v, _ := dp.Attributes.Value(ezthrottle.AttrThrottleAdmitted)
		out[v.AsBool()] = dp
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func events(s sdktrace.ReadOnlySpan, name string) []sdktrace.Event {
	var out []sdktrace.Event
	for _, e := range s.Events() {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func get(t *testing.T, rt http.RoundTripper, ctx context.Context, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	return rt.RoundTrip(req)
}

func TestTelemetryPassThroughWithRequestSpan(t *testing.T) {
	k := newOtelKit(t)
	var upstream *http.Request
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		upstream = r
		return respond(r, 200, "ok"), nil
	})
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithRequestSpan(),
		ezthrottle.WithClock(newFakeClock()))...)
	ctx, parent := k.caller("checkout")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"https://user:pw_secret@api.example.com/v1/items?limit=10&api_key=qs_secret&sig=abc", nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	readAll(t, resp.Body)
	require.NoError(t, resp.Body.Close())
	parent.End()

	own := k.span(t, "GET")
	assert.Equal(t, trace.SpanKindClient, own.SpanKind())
	assert.Equal(t, parent.SpanContext().SpanID(), own.Parent().SpanID())
	a := attrs(own)
	assert.Equal(t, "GET", a["http.request.method"].AsString())
	assert.Equal(t, "https://REDACTED:REDACTED@api.example.com/v1/items?limit=10&api_key=REDACTED&sig=REDACTED", a["url.full"].AsString())
	assert.Equal(t, "api.example.com", a["server.address"].AsString())
	assert.Equal(t, int64(443), a["server.port"].AsInt64())
	assert.Equal(t, int64(200), a["http.response.status_code"].AsInt64())
	assert.Equal(t, "https://api.example.com:443", a[ezthrottle.AttrHost].AsString())
	assert.Equal(t, 0.0, a[ezthrottle.AttrThrottleWait].AsFloat64())
	assert.Equal(t, string(ezthrottle.OutcomePassed), a[ezthrottle.AttrOutcome].AsString())
	_, forwarded := a[ezthrottle.AttrForwarded]
	assert.False(t, forwarded)
	assert.Equal(t, codes.Unset, own.Status().Code)

	th := k.span(t, ezthrottle.SpanThrottle)
	assert.Equal(t, own.SpanContext().SpanID(), th.Parent().SpanID())
	assert.True(t, attrs(th)[ezthrottle.AttrThrottleAdmitted].AsBool())
	assert.Empty(t, k.spans(ezthrottle.SpanSubmit))

	// The upstream request carries the own span's context; the caller's
	// request is untouched.
	require.NotNil(t, upstream)
	assert.Equal(t, "00-"+own.SpanContext().TraceID().String()+"-"+own.SpanContext().SpanID().String()+"-01",
		upstream.Header.Get("traceparent"))
	assert.Empty(t, req.Header.Get("traceparent"))

	assert.Equal(t, map[string]int64{"passed": 1}, k.outcomes(t))
	w := k.waits(t)[true]
	assert.Equal(t, uint64(1), w.Count)
	assert.Equal(t, 0.0, w.Sum)
}

func TestTelemetryThrottledWait(t *testing.T) {
	k := newOtelKit(t)
	clk := newFakeClock()
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "ok"), nil })
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithClock(clk),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1, Burst: 1}))...)

	ctx1, s1 := k.caller("first")
	resp, err := get(t, tr, ctx1, "https://api.example.com/a")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	s1.End()

	ctx2, s2 := k.caller("second")
	done := make(chan error, 1)
	go func() {
		resp, err := get(t, tr, ctx2, "https://api.example.com/b")
		if err == nil {
			err = resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, "the second request to wait", func() bool { return clk.Timers() > 0 })
	clk.Advance(time.Second)
	require.NoError(t, <-done)
	s2.End()

	throttles := k.spans(ezthrottle.SpanThrottle)
	require.Len(t, throttles, 2)
	var waited sdktrace.ReadOnlySpan
	for _, s := range throttles {
		if s.Parent().SpanID() == s2.SpanContext().SpanID() {
			waited = s
		}
	}
	require.NotNil(t, waited, "the second caller's throttle span")
	assert.Equal(t, time.Second, waited.EndTime().Sub(waited.StartTime()))
	assert.Equal(t, 1.0, attrs(waited)[ezthrottle.AttrThrottleWait].AsFloat64())
	assert.True(t, attrs(waited)[ezthrottle.AttrThrottleAdmitted].AsBool())
	caller2 := k.span(t, "second")
	assert.Equal(t, 1.0, attrs(caller2)[ezthrottle.AttrThrottleWait].AsFloat64())
	assert.Equal(t, "https://api.example.com:443", attrs(caller2)[ezthrottle.AttrHost].AsString())
	assert.Equal(t, "passed", attrs(caller2)[ezthrottle.AttrOutcome].AsString())

	assert.Equal(t, map[string]int64{"passed": 2}, k.outcomes(t))
	w := k.waits(t)[true]
	assert.Equal(t, uint64(2), w.Count)
	assert.Equal(t, 1.0, w.Sum)
}

// tracingLimiter is a Limiter that records its own span, as a distributed
// limiter instrumented with OpenTelemetry would.
type tracingLimiter struct {
	ezthrottle.Limiter
	tracer trace.Tracer
}

func (l tracingLimiter) Acquire(ctx context.Context, a ezthrottle.Admission) (ezthrottle.Permit, error) {
	ctx, span := l.tracer.Start(ctx, "limiter.acquire")
	defer span.End()
	return l.Limiter.Acquire(ctx, a)
}

// TestTelemetryLimiterSpanNestsUnderThrottle checks that the Limiter runs
// with the throttle span in its context: its own spans are children of
// SpanThrottle, which covers them.
func TestTelemetryLimiterSpanNestsUnderThrottle(t *testing.T) {
	k := newOtelKit(t)
	lim := tracingLimiter{Limiter: ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{}), tracer: k.tp.Tracer("test")}
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "ok"), nil })
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithLimiter(lim))...)
	ctx, caller := k.caller("call")
	resp, err := get(t, tr, ctx, "https://api.example.com/a")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	caller.End()

	th := k.span(t, ezthrottle.SpanThrottle)
	inner := k.span(t, "limiter.acquire")
	assert.Equal(t, caller.SpanContext().SpanID(), th.Parent().SpanID())
	assert.Equal(t, th.SpanContext().SpanID(), inner.Parent().SpanID(), "the Limiter's span is a child of the throttle span")
	assert.False(t, inner.StartTime().Before(th.StartTime()))
	assert.False(t, inner.EndTime().After(th.EndTime()))
	assert.True(t, attrs(th)[ezthrottle.AttrThrottleAdmitted].AsBool())
}

type panicLimiter struct{ ezthrottle.Limiter }

func (panicLimiter) Acquire(context.Context, ezthrottle.Admission) (ezthrottle.Permit, error) {
	panic("limiter exploded")
}

// TestTelemetryLimiterPanicEndsThrottleSpan checks that a Limiter's panic
// still ends the throttle span (with an error status) and goes on to the
// caller.
func TestTelemetryLimiterPanicEndsThrottleSpan(t *testing.T) {
	k := newOtelKit(t)
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "ok"), nil })
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithLimiter(panicLimiter{}))...)
	ctx, caller := k.caller("call")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example.com/a", nil)
	require.NoError(t, err)
	assert.PanicsWithValue(t, "limiter exploded", func() { _, _ = tr.RoundTrip(req) })
	caller.End()

	th := k.span(t, ezthrottle.SpanThrottle)
	assert.Equal(t, codes.Error, th.Status().Code)
	assert.Contains(t, th.Status().Description, "panicked")
	assert.False(t, attrs(th)[ezthrottle.AttrThrottleAdmitted].AsBool())
	assert.Equal(t, map[string]int64{"rejected": 1}, k.outcomes(t), "the request is counted")
}

// TestTelemetryBasePanicEndsRequestSpan checks that a panic in the base
// RoundTripper still ends the Transport's own request span (with an error
// status) and counts the request, and goes on to the caller.
func TestTelemetryBasePanicEndsRequestSpan(t *testing.T) {
	k := newOtelKit(t)
	base := rtFunc(func(*http.Request) (*http.Response, error) { panic("base exploded") })
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithRequestSpan())...)
	req, err := http.NewRequest(http.MethodGet, "https://api.example.com/a", nil)
	require.NoError(t, err)
	assert.PanicsWithValue(t, "base exploded", func() { _, _ = tr.RoundTrip(req) })

	own := k.span(t, "GET")
	assert.Equal(t, codes.Error, own.Status().Code)
	assert.Contains(t, own.Status().Description, "panicked")
	assert.Equal(t, map[string]int64{"error": 1}, k.outcomes(t))
}

func TestTelemetryForwarded429(t *testing.T) {
	k := newOtelKit(t)
	sub := &fakeSubmitter{}
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		return respond(r, 429, "slow down", "Retry-After", "2"), nil
	})
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithClock(newFakeClock()),
		ezthrottle.WithForwarding(sub), ezthrottle.WithPauseJitter(0))...)
	ctx, caller := k.caller("charge")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example.com/v1/charges/ch_1", nil)
	require.NoError(t, err)
	req.Header.Set("Idempotency-Key", "order-7")
	req.Header.Set("Traceparent", "00-11111111111111111111111111111111-2222222222222222-01") // replaced
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	caller.End()
	require.True(t, ezthrottle.IsForwarded(resp))

	c := k.span(t, "charge")
	a := attrs(c)
	assert.True(t, a[ezthrottle.AttrForwarded].AsBool())
	assert.Equal(t, "status", a[ezthrottle.AttrForwardReason].AsString())
	assert.Equal(t, "job_1", a[ezthrottle.AttrJobID].AsString())
	assert.Equal(t, "order-7", a[ezthrottle.AttrIdempotentKey].AsString())
	assert.Equal(t, int64(429), a[ezthrottle.AttrUpstreamStatus].AsInt64())
	assert.Equal(t, "forwarded", a[ezthrottle.AttrOutcome].AsString())
	learned := events(c, "ezthrottle.learned")
	require.Len(t, learned, 1)

	s := k.span(t, ezthrottle.SpanSubmit)
	assert.Equal(t, c.SpanContext().SpanID(), s.Parent().SpanID())
	assert.Equal(t, "job_1", attrs(s)[ezthrottle.AttrJobID].AsString())
	assert.Equal(t, int64(429), attrs(s)[ezthrottle.AttrUpstreamStatus].AsInt64())
	assert.Equal(t, codes.Unset, s.Status().Code)

	// The job continues the trace from the submit span, in its headers and
	// in its metadata.
	jobs := sub.Jobs()
	require.Len(t, jobs, 1)
	want := "00-" + c.SpanContext().TraceID().String() + "-" + s.SpanContext().SpanID().String() + "-01"
	assert.Equal(t, want, jobs[0].Headers["traceparent"])
	_, stale := jobs[0].Headers["Traceparent"]
	assert.False(t, stale, "the request's own traceparent is replaced")
	assert.Equal(t, want, jobs[0].Metadata["traceparent"])

	assert.Equal(t, map[string]int64{"forwarded/status": 1}, k.outcomes(t))
}

func TestTelemetryForwardFailure(t *testing.T) {
	k := newOtelKit(t)
	sub := &fakeSubmitter{err: &ezclient.EngineError{StatusCode: 500, Message: `bad job {"headers":{"Authorization":"Bearer sk_live_SECRET"}}`}}
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 503, "down"), nil })
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub))...)
	ctx, caller := k.caller("call")
	ctx, receipt := ezthrottle.WithReceipt(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example.com/x", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk_live_SECRET")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	caller.End()
	assert.Equal(t, 503, resp.StatusCode, "the original outcome")

	c := k.span(t, "call")
	a := attrs(c)
	assert.False(t, a[ezthrottle.AttrForwarded].AsBool())
	assert.Equal(t, "status", a[ezthrottle.AttrForwardReason].AsString())
	assert.Equal(t, "forward_failed", a[ezthrottle.AttrOutcome].AsString())
	failed := events(c, "ezthrottle.forward_failed")
	require.Len(t, failed, 1)
	s := k.span(t, ezthrottle.SpanSubmit)
	assert.Equal(t, codes.Error, s.Status().Code)
	assert.NotContains(t, s.Status().Description, "sk_live_SECRET")
	assert.Contains(t, s.Status().Description, "REDACTED")
	for _, kv := range failed[0].Attributes {
		assert.NotContains(t, kv.Value.String(), "sk_live_SECRET")
	}
	require.Error(t, receipt.Err())
	assert.NotContains(t, receipt.Err().Error(), "sk_live_SECRET")
	var ee *ezclient.EngineError
	assert.True(t, errors.As(receipt.Err(), &ee), "typed errors still reachable")

	assert.Equal(t, map[string]int64{"forward_failed/status": 1}, k.outcomes(t))
}

func TestTelemetryRejectedAndOverflow(t *testing.T) {
	k := newOtelKit(t)
	clk := newFakeClock()
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "ok"), nil })
	limit := ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1, Burst: 1})
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithClock(clk), limit,
		ezthrottle.WithMaxWait(10*time.Millisecond))...)
	ctx, caller := k.caller("burst")
	resp, err := get(t, tr, ctx, "https://api.example.com/1")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	_, err = get(t, tr, ctx, "https://api.example.com/2")
	require.ErrorIs(t, err, ezthrottle.ErrThrottled)
	caller.End()
	var rejected sdktrace.ReadOnlySpan
	for _, s := range k.spans(ezthrottle.SpanThrottle) {
		if !attrs(s)[ezthrottle.AttrThrottleAdmitted].AsBool() {
			rejected = s
		}
	}
	require.NotNil(t, rejected)
	assert.Equal(t, codes.Error, rejected.Status().Code)
	assert.Equal(t, "throttled", attrs(rejected)["error.type"].AsString())
	assert.Equal(t, map[string]int64{"passed": 1, "rejected": 1}, k.outcomes(t))
	assert.Equal(t, uint64(1), k.waits(t)[false].Count)

	// With forwarding, the overflow becomes a job.
	k2 := newOtelKit(t)
	sub := &fakeSubmitter{}
	tr2 := mustNew(t, append(k2.opts(), ezthrottle.WithBase(base), ezthrottle.WithClock(clk), limit,
		ezthrottle.WithMaxWait(10*time.Millisecond), ezthrottle.WithForwarding(sub))...)
	for i := 0; i < 2; i++ {
		resp, err := get(t, tr2, context.Background(), "https://api.example.com/x")
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
	}
	assert.Equal(t, map[string]int64{"passed": 1, "forwarded/throttle_overflow": 1}, k2.outcomes(t))
	assert.Empty(t, k2.sr.Ended(), "no recording span: the Transport starts none")
}

func TestTelemetryHostGauges(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "b.example.com" {
			return respond(r, 200, "ok", "X-EZTHROTTLE-RPS", "0.5", "X-EZTHROTTLE-MAX-CONCURRENT", "3"), nil
		}
		return respond(r, 200, "ok"), nil
	})
	for _, hostAttr := range []bool{true, false} {
		k := newOtelKit(t)
		tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithClock(newFakeClock()),
			ezthrottle.WithHostMetrics(hostAttr), ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 10, Burst: 10, MaxInFlight: 2}))...)
		for _, u := range []string{"https://a.example.com/", "https://b.example.com/"} {
			resp, err := get(t, tr, context.Background(), u)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
		}
		rm := k.collect(t)
		rate, ok := findMetric(rm, ezthrottle.MetricHostRate)
		require.True(t, ok)
		slots, ok := findMetric(rm, ezthrottle.MetricHostMaxInFlight)
		require.True(t, ok)
		rates := map[string]float64{}
		for _, dp := range rate.Data.(metricdata.Gauge[float64]).DataPoints {
			v, _ := dp.Attributes.Value(ezthrottle.AttrHost)
			rates[v.AsString()] = dp.Value
		}
		caps := map[string]int64{}
		for _, dp := range slots.Data.(metricdata.Gauge[int64]).DataPoints {
			v, _ := dp.Attributes.Value(ezthrottle.AttrHost)
			caps[v.AsString()] = dp.Value
		}
		if hostAttr {
			assert.Equal(t, map[string]float64{"https://a.example.com:443": 10, "https://b.example.com:443": 0.5}, rates)
			assert.Equal(t, map[string]int64{"https://a.example.com:443": 2, "https://b.example.com:443": 3}, caps)
		} else {
			assert.Equal(t, map[string]float64{"": 10.5}, rates)
			assert.Equal(t, map[string]int64{"": 5}, caps)
		}
	}
}

// TestTelemetryWithOtelhttp: otelhttp outside the Transport gives one span
// per logical call (the forwarded ones answered 202, the Transport's
// attributes on it); inside, one span per attempt actually sent upstream.
func TestTelemetryWithOtelhttp(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == "/busy" {
			return respond(r, 429, "busy"), nil
		}
		return respond(r, 200, "ok"), nil
	})
	for _, outside := range []bool{true, false} {
		name := "inside"
		if outside {
			name = "outside"
		}
		t.Run(name, func(t *testing.T) {
			k := newOtelKit(t)
			clk := newFakeClock()
			sub := &fakeSubmitter{}
			oh := []otelhttp.Option{otelhttp.WithTracerProvider(k.tp), otelhttp.WithMeterProvider(k.mp),
				otelhttp.WithPropagators(propagation.TraceContext{})}
			opts := append(k.opts(), ezthrottle.WithClock(clk), ezthrottle.WithForwarding(sub),
				ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1, Burst: 1}), ezthrottle.WithMaxWait(time.Millisecond))
			var rt http.RoundTripper
			if outside {
				rt = otelhttp.NewTransport(mustNew(t, append(opts, ezthrottle.WithBase(base))...), oh...)
			} else {
				rt = mustNew(t, append(opts, ezthrottle.WithBase(otelhttp.NewTransport(base, oh...)))...)
			}
			hc := &http.Client{Transport: rt}
			ctx, caller := k.caller("app")
			var codes []int
			for i, path := range []string{"/ok", "/ok", "/busy"} {
				if i == 2 {
					clk.Advance(time.Second) // the host's next turn
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example.com"+path, nil)
				require.NoError(t, err)
				resp, err := hc.Do(req)
				require.NoError(t, err)
				require.NoError(t, resp.Body.Close())
				codes = append(codes, resp.StatusCode)
			}
			caller.End()
			assert.Equal(t, []int{200, 202, 202}, codes, "pass, throttle overflow forwarded, 429 forwarded")
			require.Len(t, sub.Jobs(), 2)

			client := k.spans("HTTP GET")
			if len(client) == 0 {
				client = k.spans("GET")
			}
			var statuses []int64
			for _, s := range client {
				statuses = append(statuses, attrs(s)["http.response.status_code"].AsInt64())
			}
			if outside {
				require.Len(t, client, 3, "one span per logical call")
				assert.Equal(t, []int64{200, 202, 202}, statuses)
				var outcomes []string
				for _, s := range client {
					outcomes = append(outcomes, attrs(s)[ezthrottle.AttrOutcome].AsString())
				}
				assert.Equal(t, []string{"passed", "forwarded", "forwarded"}, outcomes)
				for _, th := range k.spans(ezthrottle.SpanThrottle) {
					assert.NotEqual(t, caller.SpanContext().SpanID(), th.Parent().SpanID(), "children of otelhttp's spans")
				}
				// The job continues otelhttp's trace.
				assert.Contains(t, sub.Jobs()[1].Headers["traceparent"], caller.SpanContext().TraceID().String())
			} else {
				require.Len(t, client, 2, "one span per attempt sent upstream")
				assert.Equal(t, []int64{200, 429}, statuses)
				for _, s := range client {
					assert.Equal(t, caller.SpanContext().SpanID(), s.Parent().SpanID())
				}
				assert.Equal(t, "forwarded", attrs(k.span(t, "app"))[ezthrottle.AttrOutcome].AsString())
			}
			assert.Len(t, k.spans(ezthrottle.SpanSubmit), 2)
		})
	}
}

// ExampleWithTracerProvider records the Transport's spans for a request
// answered 429 and forwarded: the throttle wait and the engine submission
// are children of the Transport's own client span (WithRequestSpan; with
// otelhttp around the Transport they are children of otelhttp's span).
func ExampleWithTracerProvider() {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	api := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, "slow down"), nil })
	tr, err := ezthrottle.New(ezthrottle.WithBase(api), ezthrottle.WithForwarding(&fakeSubmitter{}),
		ezthrottle.WithTracerProvider(tp), ezthrottle.WithPropagators(propagation.TraceContext{}),
		ezthrottle.WithRequestSpan())
	if err != nil {
		panic(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get("https://api.example.com/v1/items")
	if err != nil {
		panic(err)
	}
	_ = resp.Body.Close()
	for _, s := range sr.Ended() {
		a := attrs(s)
		fmt.Println(strings.TrimSpace(strings.Join([]string{s.Name(), a[ezthrottle.AttrOutcome].String(),
			a[ezthrottle.AttrJobID].String(), a["http.response.status_code"].String()}, " ")))
	}
	// Output:
	// ezthrottle.throttle
	// ezthrottle.submit  job_1
	// GET forwarded job_1 202
}

// A job for a self-hosted engine carries the trace context in its headers
// only: self-hosted jobs have no metadata (and would be rejected with it).
func TestTelemetrySelfHostedJobHasNoMetadata(t *testing.T) {
	k := newOtelKit(t)
	var got map[string]any
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued"}`)
	}))
	defer engine.Close()
	cl, err := ezclient.New(ezclient.WithSelfHosted(engine.URL, "u1"))
	require.NoError(t, err)
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, "busy"), nil })
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base),
		ezthrottle.WithClient(cl, ezthrottle.JobWebhook("https://hooks.example.com/x")))...)
	ctx, caller := k.caller("call")
	resp, err := get(t, tr, ctx, "https://api.example.com/x")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	caller.End()
	require.True(t, ezthrottle.IsForwarded(resp))
	headers, _ := got["headers"].(map[string]any)
	assert.Contains(t, headers["traceparent"], caller.SpanContext().TraceID().String())
	_, hasMeta := got["metadata"]
	assert.False(t, hasMeta)
}
