package ezthrottle

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/oteldefault"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// InstrumentationName is the name of the OpenTelemetry tracer and meter of
// the Transport (the instrumentation scope of its spans and metrics).
const InstrumentationName = "github.com/ezthrottle/ezthrottle-go"

// Names of the spans the Transport starts. Both are children of the
// request's span: the active span of the request context, or the
// Transport's own span with WithRequestSpan.
const (
	// SpanThrottle covers the wait for the host's turn (the Limiter's
	// Acquire). Its duration is the throttle wait. The Limiter runs with
	// it in its context, so a Limiter's own spans (a Redis client's, say)
	// are its children.
	SpanThrottle = "ezthrottle.throttle"
	// SpanSubmit covers the submission of a forwarded request to the
	// engine (the Submitter's Submit). The forwarded job carries its span
	// context (see WithPropagators).
	SpanSubmit = "ezthrottle.submit"
)

// Names of the Transport's metrics.
const (
	// MetricRequests counts the requests the Transport handled, by
	// AttrOutcome (and AttrForwardReason for forwarded and forward_failed).
	// Unit {request}.
	MetricRequests = "ezthrottle.requests"
	// MetricThrottleWait is a histogram of the throttle wait in seconds, by
	// AttrThrottleAdmitted (true: the request got its turn).
	MetricThrottleWait = "ezthrottle.throttle.wait"
	// MetricHostRate is an observable gauge of the pace in force per host
	// (learned from headers or configured), in requests per second. Unpaced
	// hosts are not reported.
	MetricHostRate = "ezthrottle.host.rate"
	// MetricHostMaxInFlight is an observable gauge of the cap on requests in
	// flight per host. Uncapped hosts are not reported.
	MetricHostMaxInFlight = "ezthrottle.host.max_in_flight"
)

// Attribute keys set by the Transport on spans and metrics (besides the
// OpenTelemetry HTTP client semantic conventions on its own span).
const (
	// AttrHost is the host key, e.g. "https://api.stripe.com:443".
	AttrHost = attribute.Key("ezthrottle.host")
	// AttrOutcome is the request's Outcome.
	AttrOutcome = attribute.Key("ezthrottle.outcome")
	// AttrThrottleWait is the throttle wait, in seconds.
	AttrThrottleWait = attribute.Key("ezthrottle.throttle.wait")
	// AttrThrottleAdmitted reports whether the request got its turn.
	AttrThrottleAdmitted = attribute.Key("ezthrottle.throttle.admitted")
	// AttrLimitRate and AttrLimitMaxInFlight are the host's configured
	// limit (learned values may override it in the limiter).
	AttrLimitRate        = attribute.Key("ezthrottle.limit.rate")
	AttrLimitMaxInFlight = attribute.Key("ezthrottle.limit.max_in_flight")
	// AttrForwarded reports whether the request became a job (false: the
	// forwarding was attempted and failed).
	AttrForwarded = attribute.Key("ezthrottle.forwarded")
	// AttrForwardReason is the ForwardReason.
	AttrForwardReason = attribute.Key("ezthrottle.forward.reason")
	// AttrUpstreamStatus is the upstream status that caused the
	// forwarding (ReasonStatus).
	AttrUpstreamStatus = attribute.Key("ezthrottle.forward.upstream_status_code")
	// AttrJobID is the forwarded job's ID.
	AttrJobID = attribute.Key("ezthrottle.job.id")
	// AttrIdempotentKey is the forwarded job's idempotent key.
	AttrIdempotentKey = attribute.Key("ezthrottle.job.idempotent_key")
)

// Outcome is what happened to a request, as counted by MetricRequests.
type Outcome string

// Outcomes of a request.
const (
	// OutcomePassed: the request was sent upstream and its response was
	// returned as is.
	OutcomePassed Outcome = "passed"
	// OutcomeForwarded: the request became an EZThrottle job.
	OutcomeForwarded Outcome = "forwarded"
	// OutcomeRejected: the request did not get its turn (a *ThrottleError,
	// or its context ended while it waited) and was not forwarded.
	OutcomeRejected Outcome = "rejected"
	// OutcomeForwardFailed: forwarding was attempted and failed; the caller
	// received the original outcome.
	OutcomeForwardFailed Outcome = "forward_failed"
	// OutcomeError: the upstream round trip failed and was not forwarded.
	OutcomeError Outcome = "error"
)

// DefaultSensitiveHeaders are the request headers whose values the
// Transport scrubs from every error string, log line and span attribute
// it produces (it never records header values to begin with). Add more
// with WithSensitiveHeaders.
func DefaultSensitiveHeaders() []string {
	return []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key", "Api-Key",
		"X-Auth-Token", "X-Access-Token", "X-Ezthrottle-Signature"}
}

// DefaultSensitiveQueryParams are the query parameters whose values are
// replaced by "REDACTED" in url.full (the semantic conventions' list, plus
// common API-key parameters), and scrubbed from error strings. Matching is
// case-insensitive. Add more with WithSensitiveQueryParams.
func DefaultSensitiveQueryParams() []string {
	return []string{"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature", "X-Amz-Signature",
		"X-Amz-Credential", "X-Amz-Security-Token", "api_key", "apikey", "api-key", "key", "token",
		"access_token", "secret", "client_secret", "password"}
}

// redacted replaces sensitive values.
const redacted = "REDACTED"

// telemetryConfig is the observability part of a Transport's configuration.
type telemetryConfig struct {
	tp               trace.TracerProvider
	mp               metric.MeterProvider
	prop             propagation.TextMapPropagator
	requestSpan      bool
	noHostAttr       bool
	sensitiveHeaders []string
	sensitiveParams  []string
}

// outcome slots of the precomputed counter attribute sets: passed,
// rejected, error, then forwarded and forward_failed by reason (the four
// reasons and "unknown").
const (
	slotForwarded     = 3
	slotForwardFailed = slotForwarded + len(forwardReasons) + 1
	outcomeSlots      = slotForwardFailed + len(forwardReasons) + 1
)

var forwardReasons = [...]ForwardReason{ReasonStatus, ReasonNetworkError, ReasonOverflow, ReasonAutoForward}

func outcomeSlot(o Outcome, r ForwardReason) int {
	switch o {
	case OutcomePassed:
		return 0
	case OutcomeRejected:
		return 1
	case OutcomeError:
		return 2
	}
	i := slices.Index(forwardReasons[:], r)
	if i < 0 {
		i = len(forwardReasons)
	}
	if o == OutcomeForwarded {
		return slotForwarded + i
	}
	return slotForwardFailed + i
}

// telemetry holds a Transport's tracer, instruments and redaction rules.
// Attribute sets are precomputed so that counting costs no allocation.
type telemetry struct {
	tracer      trace.Tracer
	meter       metric.Meter
	prop        propagation.TextMapPropagator
	clock       Clock
	requestSpan bool
	hostAttr    bool

	requests   metric.Int64Counter
	wait       metric.Float64Histogram
	rateGauge  metric.Float64ObservableGauge
	slotsGauge metric.Int64ObservableGauge

	outcomes             [outcomeSlots]metric.AddOption
	waitOK, waitRejected metric.RecordOption

	sensHeaders []string        // canonical names
	sensParams  map[string]bool // lower-cased names
}

func newTelemetry(c telemetryConfig, clock Clock) *telemetry {
	tm := &telemetry{
		tracer:      oteldefault.Tracer(c.tp, InstrumentationName),
		meter:       oteldefault.Meter(c.mp, InstrumentationName),
		prop:        oteldefault.Propagator(c.prop),
		clock:       clock,
		requestSpan: c.requestSpan,
		hostAttr:    !c.noHostAttr,
		sensParams:  map[string]bool{},
	}
	noop := metricnoop.Meter{}
	var err error
	if tm.requests, err = tm.meter.Int64Counter(MetricRequests, metric.WithUnit("{request}"),
		metric.WithDescription("Requests handled by the ezthrottle Transport, by outcome.")); err != nil || tm.requests == nil {
		tm.requests, _ = noop.Int64Counter(MetricRequests)
	}
	if tm.wait, err = tm.meter.Float64Histogram(MetricThrottleWait, metric.WithUnit("s"),
		metric.WithDescription("Time requests waited for their host's turn."),
		metric.WithExplicitBucketBoundaries(0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)); err != nil || tm.wait == nil {
		tm.wait, _ = noop.Float64Histogram(MetricThrottleWait)
	}
	if tm.rateGauge, err = tm.meter.Float64ObservableGauge(MetricHostRate, metric.WithUnit("{request}/s"),
		metric.WithDescription("Pace in force per destination host.")); err != nil || tm.rateGauge == nil {
		tm.rateGauge, _ = noop.Float64ObservableGauge(MetricHostRate)
	}
	if tm.slotsGauge, err = tm.meter.Int64ObservableGauge(MetricHostMaxInFlight, metric.WithUnit("{request}"),
		metric.WithDescription("Cap on requests in flight per destination host.")); err != nil || tm.slotsGauge == nil {
		tm.slotsGauge, _ = noop.Int64ObservableGauge(MetricHostMaxInFlight)
	}
	for i := range tm.outcomes {
		var kv []attribute.KeyValue
		switch {
		case i == 0:
			kv = []attribute.KeyValue{AttrOutcome.String(string(OutcomePassed))}
		case i == 1:
			kv = []attribute.KeyValue{AttrOutcome.String(string(OutcomeRejected))}
		case i == 2:
			kv = []attribute.KeyValue{AttrOutcome.String(string(OutcomeError))}
		default:
			o, j := OutcomeForwarded, i-slotForwarded
			if i >= slotForwardFailed {
				o, j = OutcomeForwardFailed, i-slotForwardFailed
			}
			kv = []attribute.KeyValue{AttrOutcome.String(string(o))}
			if j < len(forwardReasons) {
				kv = append(kv, AttrForwardReason.String(string(forwardReasons[j])))
			}
		}
		tm.outcomes[i] = metric.WithAttributeSet(attribute.NewSet(kv...))
	}
	tm.waitOK = metric.WithAttributeSet(attribute.NewSet(AttrThrottleAdmitted.Bool(true)))
	tm.waitRejected = metric.WithAttributeSet(attribute.NewSet(AttrThrottleAdmitted.Bool(false)))
	for _, h := range append(DefaultSensitiveHeaders(), c.sensitiveHeaders...) {
		if ch := http.CanonicalHeaderKey(strings.TrimSpace(h)); ch != "" && !slices.Contains(tm.sensHeaders, ch) {
			tm.sensHeaders = append(tm.sensHeaders, ch)
		}
	}
	for _, p := range append(DefaultSensitiveQueryParams(), c.sensitiveParams...) {
		if p = strings.TrimSpace(p); p != "" {
			tm.sensParams[strings.ToLower(p)] = true
		}
	}
	return tm
}

// reqState is the telemetry state of one request. It travels in the
// request's context, and exists only when something records: a recording
// span, the Transport's own span (WithRequestSpan), or an enabled metric.
// Without it the Transport's observation points cost nothing.
type reqState struct {
	span     trace.Span // the span annotated: the Transport's own, or the active one
	rec      bool       // span is recording
	own      bool       // span was started by the Transport
	admitted bool
	outcome  Outcome
	reason   ForwardReason
}

type reqStateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	st, _ := ctx.Value(reqStateKey{}).(*reqState)
	return st
}

// begin returns the request to pass on (a shallow copy carrying the
// request's telemetry state in its context) and the state; it returns req
// itself and nil when nothing records.
func (tm *telemetry) begin(req *http.Request) (*http.Request, *reqState) {
	ctx := req.Context()
	sp := trace.SpanFromContext(ctx)
	rec := sp.IsRecording()
	if !rec && !tm.requestSpan && !tm.requests.Enabled(ctx) && !tm.wait.Enabled(ctx) {
		return req, nil
	}
	st := &reqState{span: sp, rec: rec}
	var hdr http.Header
	if tm.requestSpan {
		ctx, hdr = tm.startRequest(ctx, req, st)
	}
	out := req.WithContext(context.WithValue(ctx, reqStateKey{}, st))
	if hdr != nil {
		out.Header = hdr
	}
	return out, st
}

// startRequest starts the Transport's own client span for req
// (WithRequestSpan), with the HTTP client semantic conventions' request
// attributes. It returns a copy of req's header with the span context
// injected when the propagators inject anything (else nil).
func (tm *telemetry) startRequest(ctx context.Context, req *http.Request, st *reqState) (context.Context, http.Header) {
	name, method, orig := methodAttrs(req.Method)
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, method)
	if orig.Valid() {
		attrs = append(attrs, orig)
	}
	host, port := serverHostPort(req.URL)
	attrs = append(attrs, semconv.URLFull(tm.redactURL(req.URL)), semconv.ServerAddress(host))
	if port > 0 {
		attrs = append(attrs, semconv.ServerPort(port))
	}
	ctx, span := tm.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(tm.clock.Now()), trace.WithAttributes(attrs...))
	st.span, st.rec, st.own = span, span.IsRecording(), true
	if !span.SpanContext().IsValid() || len(tm.prop.Fields()) == 0 {
		return ctx, nil
	}
	h := req.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	tm.prop.Inject(ctx, propagation.HeaderCarrier(h))
	return ctx, h
}

// throttleStart starts the SpanThrottle child span when the request's
// span records, and returns the context to run the Limiter with (carrying
// that span, so that a Limiter's own spans are its children) and the
// function that ends the wait: it records the histogram, ends the span and
// sets the request span's attributes (err is the Limiter's).
func (tm *telemetry) throttleStart(ctx context.Context, host string, start time.Time) (context.Context, func(time.Duration, error)) {
	st := stateFrom(ctx)
	if st == nil {
		return ctx, func(time.Duration, error) {}
	}
	lctx, span := ctx, trace.Span(nil)
	if st.rec {
		lctx, span = tm.tracer.Start(ctx, SpanThrottle, trace.WithTimestamp(start),
			trace.WithAttributes(AttrHost.String(host)))
	}
	return lctx, func(wait time.Duration, err error) {
		st.admitted = err == nil
		wait = max(wait, 0)
		secs := wait.Seconds()
		opt := tm.waitOK
		if err != nil {
			opt = tm.waitRejected
		}
		tm.wait.Record(ctx, secs, opt)
		if span == nil {
			return
		}
		span.SetAttributes(AttrThrottleWait.Float64(secs), AttrThrottleAdmitted.Bool(err == nil))
		if err != nil {
			span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
			span.SetStatus(codes.Error, redact.Text(err.Error())) // host key and durations only
		}
		span.End(trace.WithTimestamp(start.Add(wait)))
		st.span.SetAttributes(AttrHost.String(host), AttrThrottleWait.Float64(secs))
	}
}

// learned records the rate-limit signals of a response as an event of the
// request's span.
func (tm *telemetry) learned(ctx context.Context, host string, s Signals) {
	st := stateFrom(ctx)
	if st == nil || !st.rec {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, AttrHost.String(host))
	if s.HasRPS {
		attrs = append(attrs, attribute.Float64("ezthrottle.learned.rate", s.RPS))
	}
	if s.HasMaxConcurrent {
		attrs = append(attrs, attribute.Int("ezthrottle.learned.max_in_flight", s.MaxConcurrent))
	}
	if !s.PauseUntil.IsZero() {
		attrs = append(attrs, attribute.Float64("ezthrottle.learned.pause", max(s.PauseUntil.Sub(tm.clock.Now()), 0).Seconds()))
	}
	st.span.AddEvent("ezthrottle.learned", trace.WithAttributes(attrs...))
}

// submitBegin starts the SpanSubmit child span when the request's span
// records. The returned context is the one to submit (and propagate) with.
func (tm *telemetry) submitBegin(ctx context.Context, host string, reason ForwardReason, status int) (context.Context, trace.Span) {
	st := stateFrom(ctx)
	if st == nil || !st.rec {
		return ctx, nil
	}
	attrs := make([]attribute.KeyValue, 0, 3)
	attrs = append(attrs, AttrHost.String(host), AttrForwardReason.String(string(reason)))
	if status != 0 {
		attrs = append(attrs, AttrUpstreamStatus.Int(status))
	}
	return tm.tracer.Start(ctx, SpanSubmit, trace.WithTimestamp(tm.clock.Now()), trace.WithAttributes(attrs...))
}

// submitEnd ends the SpanSubmit span. err must already be redacted.
func (tm *telemetry) submitEnd(span trace.Span, sub *ezclient.Submission, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
		span.SetStatus(codes.Error, redact.Text(err.Error()))
	} else if sub != nil {
		span.SetAttributes(AttrJobID.String(sub.JobID))
		if sub.IdempotentKey != "" {
			span.SetAttributes(AttrIdempotentKey.String(sub.IdempotentKey))
		}
	}
	span.End(trace.WithTimestamp(tm.clock.Now()))
}

// inject writes the span context of ctx (as the propagators encode it:
// W3C traceparent and tracestate with propagation.TraceContext) into the
// job's headers, so the engine's call continues the trace, and, when
// metadata is true, into its metadata, so the webhook can link to it.
// Existing entries of the same names (in any case) are replaced. It
// returns the names written into the metadata.
func (tm *telemetry) inject(ctx context.Context, job *ezclient.Job, metadata bool) (meta []string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	tm.prop.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	if job.Headers == nil {
		job.Headers = make(map[string]string, len(carrier))
	}
	for k, v := range carrier {
		for hk := range job.Headers {
			if strings.EqualFold(hk, k) {
				delete(job.Headers, hk)
			}
		}
		job.Headers[k] = v
		if metadata {
			if job.Metadata == nil {
				job.Metadata = make(map[string]any, len(carrier))
			}
			job.Metadata[k] = v
			meta = append(meta, k)
		}
	}
	return meta
}

// forwarded records a successful forward on the request's span.
func (tm *telemetry) forwarded(ctx context.Context, info *ForwardInfo) {
	st := stateFrom(ctx)
	if st == nil {
		return
	}
	st.outcome, st.reason = OutcomeForwarded, info.Reason
	if !st.rec {
		return
	}
	st.span.SetAttributes(AttrForwarded.Bool(true), AttrForwardReason.String(string(info.Reason)),
		AttrJobID.String(info.Submission.JobID))
	if info.Submission.IdempotentKey != "" {
		st.span.SetAttributes(AttrIdempotentKey.String(info.Submission.IdempotentKey))
	}
	if info.UpstreamStatus != 0 {
		st.span.SetAttributes(AttrUpstreamStatus.Int(info.UpstreamStatus))
	}
}

// forwardFailed records a failed forward on the request's span. err must
// already be redacted.
func (tm *telemetry) forwardFailed(ctx context.Context, err error) {
	st := stateFrom(ctx)
	if st == nil {
		return
	}
	var reason ForwardReason
	var ffe *ForwardFailedError
	if errors.As(err, &ffe) {
		reason = ffe.Reason
	}
	st.outcome, st.reason = OutcomeForwardFailed, reason
	if !st.rec {
		return
	}
	st.span.SetAttributes(AttrForwarded.Bool(false), AttrForwardReason.String(string(reason)))
	st.span.AddEvent("ezthrottle.forward_failed", trace.WithAttributes(
		semconv.ErrorTypeKey.String(errorType(err)), semconv.ExceptionMessage(redact.Text(err.Error()))))
}

// finish counts the request's outcome and ends the Transport's own span.
func (tm *telemetry) finish(req *http.Request, st *reqState, resp *http.Response, err error) {
	ctx := req.Context()
	o := st.outcome
	if o == "" {
		switch {
		case !st.admitted:
			o = OutcomeRejected
		case err != nil:
			o = OutcomeError
		default:
			o = OutcomePassed
		}
	}
	tm.requests.Add(ctx, 1, tm.outcomes[outcomeSlot(o, st.reason)])
	if !st.rec {
		if st.own {
			st.span.End()
		}
		return
	}
	st.span.SetAttributes(AttrOutcome.String(string(o)))
	if !st.own {
		return
	}
	var fe *ForwardedError
	switch {
	case err != nil && !errors.As(err, &fe):
		st.span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
		st.span.SetStatus(codes.Error, scrub(err.Error(), tm.secretsOf(req)))
	case resp != nil:
		st.span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
		if resp.StatusCode >= 400 {
			st.span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(resp.StatusCode)))
			st.span.SetStatus(codes.Error, "")
		}
	}
	st.span.End(trace.WithTimestamp(tm.clock.Now()))
}

// redact returns err, wrapped so that its message carries none of req's
// sensitive values, and nothing redact.Text finds, when it would.
func (tm *telemetry) redact(req *http.Request, err error) error {
	if err == nil {
		return nil
	}
	secrets := tm.secretsOf(req)
	if msg := err.Error(); scrub(msg, secrets) != msg {
		return &redactedError{err: err, secrets: secrets}
	}
	return err
}

// redactedError hides sensitive values from the message of the error it
// wraps; errors.Is and errors.As see the wrapped error.
type redactedError struct {
	err     error
	secrets []string
}

func (e *redactedError) Error() string { return scrub(e.err.Error(), e.secrets) }

func (e *redactedError) Unwrap() error { return e.err }

// GoString renders the error for %#v, redacted like Error.
func (e *redactedError) GoString() string {
	return "&ezthrottle.redactedError{" + strconv.Quote(e.Error()) + "}"
}

// secretsOf returns the sensitive values of a request: its sensitive
// headers (also the credentials after an auth scheme, as in "Bearer
// <token>"), the URL's user info and its sensitive query values.
func (tm *telemetry) secretsOf(req *http.Request) []string {
	if req == nil {
		return nil
	}
	var out []string
	for _, name := range tm.sensHeaders {
		for _, v := range req.Header.Values(name) {
			out = appendSecret(out, v)
		}
	}
	if u := req.URL; u != nil {
		if u.User != nil {
			out = appendSecret(out, u.User.Username())
			if p, ok := u.User.Password(); ok {
				out = appendSecret(out, p)
			}
		}
		if u.RawQuery != "" {
			for k, vs := range u.Query() {
				if tm.sensParams[strings.ToLower(k)] {
					for _, v := range vs {
						out = appendSecret(out, v)
					}
				}
			}
		}
	}
	// Longest first, so a value is not half-replaced by one of its parts.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// appendSecret adds v (values shorter than redact.MinSecretLen are not
// scrubbed: they would match ordinary text) in each of its encodings.
func appendSecret(out []string, v string) []string {
	for _, f := range redact.NewSecrets("", v).Values() {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// scrub replaces every secret in s (in each of its encodings), then what
// redact.Text finds by pattern: URL user info, sensitive query values,
// credential headers and bearer tokens.
func scrub(s string, secrets []string) string {
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, redacted)
		}
	}
	return redact.Text(s)
}

// redactURL renders u for url.full as the semantic conventions ask: user
// info replaced by REDACTED:REDACTED, the values of sensitive query
// parameters by REDACTED (their names kept), no fragment.
func (tm *telemetry) redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	cp := *u
	cp.Fragment, cp.RawFragment = "", ""
	if cp.User != nil {
		cp.User = url.UserPassword(redacted, redacted)
	}
	if cp.RawQuery != "" {
		parts := strings.Split(cp.RawQuery, "&")
		changed := false
		for i, p := range parts {
			name, _, hasValue := strings.Cut(p, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if hasValue && tm.sensParams[strings.ToLower(name)] {
				parts[i] = p[:strings.IndexByte(p, '=')+1] + redacted
				changed = true
			}
		}
		if changed {
			cp.RawQuery = strings.Join(parts, "&")
		}
	}
	return cp.String()
}

// methodAttrs returns the span name and the http.request.method (and
// http.request.method_original) attributes of a method.
func methodAttrs(m string) (name string, method, orig attribute.KeyValue) {
	if m == "" {
		m = http.MethodGet
	}
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m, semconv.HTTPRequestMethodKey.String(m), attribute.KeyValue{}
	}
	if u := strings.ToUpper(m); u != m {
		switch u {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
			http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
			return u, semconv.HTTPRequestMethodKey.String(u), semconv.HTTPRequestMethodOriginal(m)
		}
	}
	return "HTTP", semconv.HTTPRequestMethodOther, semconv.HTTPRequestMethodOriginal(m)
}

// serverHostPort returns server.address and server.port of a URL (the
// scheme's default port when it has none).
func serverHostPort(u *url.URL) (string, int) {
	if u == nil {
		return "", 0
	}
	host, port := splitHostPort(u.Host)
	if p, err := strconv.Atoi(port); err == nil && p > 0 {
		return host, p
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return host, 443
	case "http":
		return host, 80
	}
	return host, 0
}

// errorType is the error.type of a Transport error: "throttled" for a
// *ThrottleError, "timeout" and "canceled" for context errors, else the
// semantic conventions' type name of the (first joined) error.
func errorType(err error) string {
	var te *ThrottleError
	switch {
	case errors.As(err, &te):
		return "throttled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ffe *ForwardFailedError
	if errors.As(err, &ffe) {
		if errors.Is(ffe.Err, ErrUnsafeReplay) || errors.Is(ffe.Err, ErrBodyTooLarge) ||
			errors.Is(ffe.Err, ErrBodyNotUTF8) || errors.Is(ffe.Err, ErrBodyNotReplayable) {
			return "forward_not_possible"
		}
		return "forward_failed"
	}
	for {
		j, ok := err.(interface{ Unwrap() []error })
		if !ok {
			break
		}
		errs := j.Unwrap()
		if len(errs) == 0 {
			break
		}
		err = errs[0]
	}
	if re, ok := err.(*redactedError); ok {
		err = re.err
	}
	return semconv.ErrorType(err).Value.AsString()
}
