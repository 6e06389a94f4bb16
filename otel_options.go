package ezthrottle

import (
	"context"
	"math"
	"runtime"
	"weak"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// WithTracerProvider sets the tracer provider of the Transport's spans
// (default: the global one, otel.GetTracerProvider()).
//
// The Transport records on the request's span, the active span of its
// context (typically otelhttp's client span when otelhttp wraps the
// Transport, see WithRequestSpan otherwise): the host key, the throttle
// wait, whether and why the request was forwarded, the job ID and
// idempotent key, and its Outcome. The throttle wait (SpanThrottle) and the
// engine submission (SpanSubmit) are child spans with their durations.
// Without a recording span the Transport starts no span.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) {
		if tp == nil {
			c.fail("ezthrottle: WithTracerProvider(nil)")
			return
		}
		c.tel.tp = tp
	}
}

// WithMeterProvider sets the meter provider of the Transport's metrics
// (default: the global one, otel.GetMeterProvider()): MetricRequests,
// MetricThrottleWait, MetricHostRate and MetricHostMaxInFlight.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) {
		if mp == nil {
			c.fail("ezthrottle: WithMeterProvider(nil)")
			return
		}
		c.tel.mp = mp
	}
}

// WithPropagators sets the propagators that write the trace context into
// forwarded jobs and, with WithRequestSpan, into upstream requests
// (default: the global ones, otel.GetTextMapPropagator(), which inject
// nothing until set: use otel.SetTextMapPropagator(propagation.TraceContext{})
// or pass propagation.TraceContext{} here). A forwarded job carries the
// fields (W3C traceparent and tracestate) in its request headers, so the
// engine's call to the API continues the trace, and in its metadata, so
// the webhook can link to it (not on self-hosted engines, whose jobs have
// no metadata).
func WithPropagators(p propagation.TextMapPropagator) Option {
	return func(c *config) {
		if p == nil {
			c.fail("ezthrottle: WithPropagators(nil)")
			return
		}
		c.tel.prop = p
	}
}

// WithRequestSpan makes the Transport start a client span of its own for
// every request, following the OpenTelemetry HTTP client semantic
// conventions (name = method; http.request.method, server.address,
// server.port, url.full with credentials and sensitive query values
// redacted, http.response.status_code of the response returned — 202 for a
// forwarded request — and error.type), and inject its context into the
// upstream request. Use it when the Transport is not wrapped by otelhttp.
func WithRequestSpan() Option {
	return func(c *config) { c.tel.requestSpan = true }
}

// WithHostMetrics sets whether the per-host gauges (MetricHostRate,
// MetricHostMaxInFlight) carry the AttrHost attribute (default true). Off,
// they report the sums over all hosts instead (total pace, total cap), for
// a bounded number of series whatever the number of hosts. The request
// counter and the wait histogram never carry the host.
func WithHostMetrics(on bool) Option {
	return func(c *config) { c.tel.noHostAttr = !on }
}

// WithSensitiveHeaders adds request headers whose values must never appear
// in the Transport's error strings, log lines or span attributes (besides
// DefaultSensitiveHeaders). The Transport never records header values; this
// scrubs them from messages that echo them, such as an engine's error
// reply quoting the job.
func WithSensitiveHeaders(names ...string) Option {
	return func(c *config) { c.tel.sensitiveHeaders = append(c.tel.sensitiveHeaders, names...) }
}

// WithSensitiveQueryParams adds query parameters whose values are redacted
// from url.full and scrubbed from error strings (besides
// DefaultSensitiveQueryParams).
func WithSensitiveQueryParams(names ...string) Option {
	return func(c *config) { c.tel.sensitiveParams = append(c.tel.sensitiveParams, names...) }
}

// registerGauges registers the per-host gauges' callback for t. The
// callback holds t weakly, and is unregistered once t is garbage, so a
// Transport never outlives its use because of its meter provider.
func (tm *telemetry) registerGauges(t *Transport) {
	wp := weak.Make(t)
	reg, err := tm.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if tt := wp.Value(); tt != nil {
			tt.tel.observeHosts(o, tt)
		}
		return nil
	}, tm.rateGauge, tm.slotsGauge)
	if err != nil || reg == nil {
		return
	}
	runtime.AddCleanup(t, func(r metric.Registration) { _ = r.Unregister() }, reg)
}

// statser is implemented by limiters that can report a host's state
// (*MemoryLimiter does).
type statser interface {
	Stats(key string) (HostStats, bool)
}

// observeHosts reports the limits in force of every host: those the
// MemoryLimiter tracks, or those this Transport has called (asking the
// limiter's Stats method when it has one, else the configured limit).
func (tm *telemetry) observeHosts(o metric.Observer, t *Transport) {
	var sumRate float64
	var sumSlots int64
	var anyRate, anySlots bool
	emit := func(key string, s HostStats) {
		paced := s.Rate > 0 && !math.IsInf(s.Rate, 1) && !math.IsNaN(s.Rate)
		if !tm.hostAttr {
			if paced {
				sumRate, anyRate = sumRate+s.Rate, true
			}
			if s.MaxInFlight > 0 {
				sumSlots, anySlots = sumSlots+int64(s.MaxInFlight), true
			}
			return
		}
		opt := metric.WithAttributeSet(attribute.NewSet(AttrHost.String(key)))
		if paced {
			o.ObserveFloat64(tm.rateGauge, s.Rate, opt)
		}
		if s.MaxInFlight > 0 {
			o.ObserveInt64(tm.slotsGauge, int64(s.MaxInFlight), opt)
		}
	}
	if t.mem != nil {
		for _, k := range t.mem.keys() {
			if s, ok := t.mem.Stats(k); ok {
				emit(k, s)
			}
		}
	} else {
		st, _ := t.limiter.(statser)
		for _, hi := range t.cachedHosts() {
			if st != nil {
				if s, ok := st.Stats(hi.key); ok {
					emit(hi.key, s)
				}
				continue
			}
			emit(hi.key, HostStats{Rate: hi.limit.Rate, Burst: int(hi.limit.burst()), MaxInFlight: hi.limit.MaxInFlight})
		}
	}
	if anyRate {
		o.ObserveFloat64(tm.rateGauge, sumRate)
	}
	if anySlots {
		o.ObserveInt64(tm.slotsGauge, sumSlots)
	}
}

// keys returns the keys of the hosts the limiter tracks.
func (m *MemoryLimiter) keys() []string {
	var out []string
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		for k := range s.hosts {
			out = append(out, k)
		}
		s.mu.RUnlock()
	}
	return out
}

// cachedHosts returns the hosts in the Transport's host cache.
func (t *Transport) cachedHosts() []*hostInfo {
	var out []*hostInfo
	t.forEachCached(func(hi *hostInfo) { out = append(out, hi) })
	return out
}
