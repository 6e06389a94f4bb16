package ezthrottle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Headers of the synthetic 202 Accepted returned for a forwarded request.
const (
	// HeaderJobID carries the job ID.
	HeaderJobID = "X-EZThrottle-Job-ID"
	// HeaderIdempotentKey carries the job's idempotent key.
	HeaderIdempotentKey = "X-EZThrottle-Idempotent-Key"
	// HeaderForwardedReason carries the ForwardReason.
	HeaderForwardedReason = "X-EZThrottle-Forwarded-Reason"
	// HeaderUpstreamStatus carries the upstream status that caused the
	// forwarding (ReasonStatus only).
	HeaderUpstreamStatus = "X-EZThrottle-Upstream-Status"
	// HeaderJobStatus carries the job's status as the engine reported it
	// (ezclient.StatusQueued, or StatusRacing for a multi-region race).
	HeaderJobStatus = "X-EZThrottle-Job-Status"
)

// ForwardInfo describes a request that became an EZThrottle job.
type ForwardInfo struct {
	// Submission is the engine's acknowledgement. When read back from a
	// response's headers (JobFromResponse) only JobID, IdempotentKey and
	// Status are known. Its values have passed Submission.Validate.
	Submission ezclient.Submission
	// Reason says why the request was forwarded.
	Reason ForwardReason
	// UpstreamStatus is the upstream's status for ReasonStatus, else 0.
	UpstreamStatus int
	// Host is the throttling key of the request's host.
	Host string
}

// JobID returns the job's ID.
func (f *ForwardInfo) JobID() string { return f.Submission.JobID }

// Receipt records what happened to the requests made with a context from
// WithReceipt: whether one was forwarded, and why forwarding failed. Read it
// after the call returns; it is safe for concurrent use. When several
// requests share the context (SDK retries), the last forwarding wins.
type Receipt struct {
	mu   sync.Mutex
	info *ForwardInfo
	err  error
}

type receiptKey struct{}

// WithReceipt returns a context carrying a new Receipt. Pass the context to
// an SDK call made through the Transport and read the receipt afterwards:
// this tells a forwarded call apart even when the SDK turns the 202 into an
// empty result.
func WithReceipt(ctx context.Context) (context.Context, *Receipt) {
	r := &Receipt{}
	return context.WithValue(ctx, receiptKey{}, r), r
}

func receiptFrom(ctx context.Context) *Receipt {
	r, _ := ctx.Value(receiptKey{}).(*Receipt)
	return r
}

// Forwarded reports whether a request was forwarded.
func (r *Receipt) Forwarded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info != nil
}

// Info returns the forwarding details; false when nothing was forwarded.
func (r *Receipt) Info() (ForwardInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.info == nil {
		return ForwardInfo{}, false
	}
	return *r.info, true
}

// JobID returns the forwarded job's ID, or "".
func (r *Receipt) JobID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.info == nil {
		return ""
	}
	return r.info.Submission.JobID
}

// Err returns why the last forwarding attempt failed (a
// *ForwardFailedError), or nil.
func (r *Receipt) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *Receipt) record(info *ForwardInfo, err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if info != nil {
		cp := *info
		r.info, r.err = &cp, nil
		return
	}
	r.err = err
}

// ErrForwarded is matched by *ForwardedError.
var ErrForwarded = errors.New("ezthrottle: request forwarded to EZThrottle")

// ForwardedError is returned by RoundTrip instead of the synthetic 202 when
// the Transport has WithForwardedError. It is not a failure: the request
// is now a durable job.
type ForwardedError struct {
	ForwardInfo
}

// Error describes the forwarding (job ID and reason).
func (e *ForwardedError) Error() string {
	s := fmt.Sprintf("ezthrottle: request forwarded to EZThrottle as job %s (%s", e.Submission.JobID, e.Reason)
	if e.UpstreamStatus != 0 {
		s += " " + strconv.Itoa(e.UpstreamStatus)
	}
	return s + ")"
}

// Is makes errors.Is(err, ErrForwarded) true.
func (e *ForwardedError) Is(target error) bool { return target == ErrForwarded }

// ForwardFailedError reports that a request should have been forwarded but
// could not be. Err is the cause: ErrBodyTooLarge, ErrBodyNotUTF8,
// ErrBodyNotReplayable, ErrUnsafeReplay, or the Submitter's error (with
// ezclient's typed errors: errors.Is(err, ezclient.ErrRateLimited), ...).
type ForwardFailedError struct {
	Reason ForwardReason
	Host   string
	Err    error
}

// Error describes why forwarding failed. Credentials the cause may quote
// (URL user info, sensitive query values, credential headers, bearer
// tokens) are redacted.
func (e *ForwardFailedError) Error() string {
	return redact.Text(fmt.Sprintf("ezthrottle: forwarding (%s) failed: %v", e.Reason, e.Err))
}

// GoString renders the error for %#v, redacted like Error.
func (e *ForwardFailedError) GoString() string {
	return fmt.Sprintf("&ezthrottle.ForwardFailedError{Reason:%q, Host:%q, Err:%q}", e.Reason, e.Host, e.errText())
}

func (e *ForwardFailedError) errText() string {
	if e.Err == nil {
		return ""
	}
	return redact.Text(e.Err.Error())
}

// Unwrap returns Err.
func (e *ForwardFailedError) Unwrap() error { return e.Err }

type acceptedBody struct {
	JobID         string `json:"job_id"`
	IdempotentKey string `json:"idempotent_key"`
	Status        string `json:"status"`
}

// newAccepted builds the synthetic 202 Accepted for a forwarded request.
func newAccepted(req *http.Request, info *ForwardInfo) *http.Response {
	status := info.Submission.Status
	if status == "" {
		status = ezclient.StatusQueued
	}
	b, _ := json.Marshal(acceptedBody{JobID: info.Submission.JobID, IdempotentKey: info.Submission.IdempotentKey, Status: string(status)})
	h := make(http.Header, 8)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set(HeaderJobID, info.Submission.JobID)
	if info.Submission.IdempotentKey != "" {
		h.Set(HeaderIdempotentKey, info.Submission.IdempotentKey)
	}
	h.Set(HeaderJobStatus, string(status))
	h.Set(HeaderForwardedReason, string(info.Reason))
	if info.UpstreamStatus != 0 {
		h.Set(HeaderUpstreamStatus, strconv.Itoa(info.UpstreamStatus))
	}
	var body io.ReadCloser = io.NopCloser(bytes.NewReader(b))
	if req.Method == http.MethodHead {
		body = http.NoBody
	}
	return &http.Response{
		Status:        "202 Accepted",
		StatusCode:    http.StatusAccepted,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          body,
		ContentLength: int64(len(b)),
		Request:       req,
	}
}

// stripForwardHeaders removes the headers of a synthetic 202 from an
// upstream response, so that an upstream (or anything between it and the
// Transport) cannot make IsForwarded or JobFromResponse report a job that
// was never submitted.
func stripForwardHeaders(h http.Header) {
	for _, k := range [...]string{HeaderJobID, HeaderIdempotentKey, HeaderForwardedReason, HeaderUpstreamStatus, HeaderJobStatus} {
		h.Del(k)
	}
}

// IsForwarded reports whether resp is the Transport's synthetic 202 for a
// forwarded request. The Transport strips these headers from any 202 an
// upstream sends, so an upstream cannot pose as a forwarded response; a
// layer wrapping the Transport from outside could still add them, and the
// Receipt (WithReceipt) is the signal no response can fake.
func IsForwarded(resp *http.Response) bool {
	return resp != nil && resp.StatusCode == http.StatusAccepted &&
		resp.Header.Get(HeaderJobID) != "" && resp.Header.Get(HeaderForwardedReason) != ""
}

// JobFromResponse reads the forwarded job from the synthetic 202 (its
// headers only, so the body may already have been consumed); false when
// resp is not one.
func JobFromResponse(resp *http.Response) (ForwardInfo, bool) {
	if !IsForwarded(resp) {
		return ForwardInfo{}, false
	}
	info := ForwardInfo{
		Submission: ezclient.Submission{
			JobID:         resp.Header.Get(HeaderJobID),
			IdempotentKey: resp.Header.Get(HeaderIdempotentKey),
			Status:        ezclient.JobStatus(resp.Header.Get(HeaderJobStatus)),
		},
		Reason: ForwardReason(resp.Header.Get(HeaderForwardedReason)),
	}
	if info.Submission.Status == "" {
		info.Submission.Status = ezclient.StatusQueued
	}
	info.UpstreamStatus, _ = strconv.Atoi(resp.Header.Get(HeaderUpstreamStatus))
	if resp.Request != nil && resp.Request.URL != nil {
		info.Host = HostKey(resp.Request.URL)
	}
	return info, true
}

// hopByHop are never copied into a job (RFC 9110 §7.6.1), nor are Host and
// Content-Length, which the engine sets itself.
var hopByHop = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"}

func isHopByHop(k string) bool {
	for _, h := range hopByHop {
		if k == h {
			return true
		}
	}
	return false
}

// jobHeaders copies the request headers the job may carry.
func (t *Transport) jobHeaders(h http.Header) map[string]string {
	var conn map[string]bool
	for _, v := range h.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				if conn == nil {
					conn = map[string]bool{}
				}
				conn[http.CanonicalHeaderKey(tok)] = true
			}
		}
	}
	out := make(map[string]string, len(h))
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if len(vs) == 0 || isHopByHop(ck) || conn[ck] || t.cfg.headerDeny[ck] ||
			(t.cfg.headerAllow != nil && !t.cfg.headerAllow[ck]) {
			continue
		}
		sep := ", "
		if ck == "Cookie" {
			sep = "; "
		}
		out[k] = strings.Join(vs, sep)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// buildJob turns a request (and its body bytes) into a job.
func (t *Transport) buildJob(req *http.Request, body []byte) *ezclient.Job {
	u := *req.URL
	u.Fragment, u.RawFragment = "", ""
	job := &ezclient.Job{
		URL:     u.String(),
		Method:  strings.ToUpper(req.Method),
		Headers: t.jobHeaders(req.Header),
		Body:    string(body),
	}
	if job.Method == "" {
		job.Method = http.MethodGet
	}
	spec := &jobSpec{job: job}
	spec.apply(t.cfg.jobDefaults, JobOptionsFrom(req.Context()))
	job.IdempotentKey = chooseKey(requestKey(req.Header), spec, t.cfg.keyStrategy, func() KeyInput {
		return KeyInput{Method: job.Method, URL: job.URL, Header: req.Header, Body: body}
	})
	return job
}

// submit forwards the request to the engine. body is the complete request
// body (nil for none).
func (t *Transport) submit(req *http.Request, hi *hostInfo, body []byte, reason ForwardReason, status int) (*ForwardInfo, error) {
	ctx := req.Context()
	if !utf8.Valid(body) {
		return nil, &ForwardFailedError{Reason: reason, Host: hi.key, Err: ErrBodyNotUTF8}
	}
	job := t.buildJob(req, body)
	if int64(ezclient.WireBodySize(job.Body)) > t.cfg.maxBody {
		// The limit is measured on the wire (the body JSON-escaped twice
		// in the envelope): a body of quotes can never fit, so it is not
		// attempted and the caller keeps the original outcome.
		return nil, &ForwardFailedError{Reason: reason, Host: hi.key, Err: ErrBodyTooLarge}
	}
	// The submission is a child span; the job carries its trace context.
	sctx, span := t.tel.submitBegin(ctx, hi.key, reason, status)
	injected := t.tel.inject(sctx, job, t.jobMeta)
	// The request's secrets, including headers named only by
	// WithSensitiveHeaders, travel with the context: ezclient scrubs them
	// from the errors it makes and the lines it logs (retries included).
	if secrets := t.tel.secretsOf(req); len(secrets) > 0 {
		sctx = redact.ContextWithSecrets(sctx, redact.NewSecrets("", secrets...))
	}
	sub, err := submitJob(sctx, t.cfg.submitter, job, injected)
	sub, err = acceptedSubmission(job, sub, err)
	if err != nil {
		err = t.tel.redact(req, err) // the engine may echo the request's secrets
		t.tel.submitEnd(span, nil, err)
		return nil, &ForwardFailedError{Reason: reason, Host: hi.key, Err: err}
	}
	t.tel.submitEnd(span, sub, nil)
	info := &ForwardInfo{Submission: *sub, Reason: reason, UpstreamStatus: status, Host: hi.key}
	t.observeForwarded(ctx, info)
	return info, nil
}

// acceptedSubmission checks a Submitter's outcome for job: a submission
// without a job ID, or with a value that is not safe in a header, a log or
// a span attribute (see ezclient.Submission.Validate; the Submitter may be
// any code, not only *ezclient.Client), is a failed submission, so that the
// caller gets its original outcome. The returned copy has the job's own
// key when the engine echoed none, and StatusQueued when it reported no
// status.
func acceptedSubmission(job *ezclient.Job, sub *ezclient.Submission, err error) (*ezclient.Submission, error) {
	if err != nil {
		return nil, err
	}
	if sub == nil || sub.JobID == "" {
		return nil, errors.New("ezthrottle: submitter returned no job ID")
	}
	cp := *sub
	if cp.IdempotentKey == "" {
		cp.IdempotentKey = job.IdempotentKey
	}
	if cp.Status == "" {
		cp.Status = ezclient.StatusQueued
	}
	if err := cp.Validate(); err != nil {
		return nil, err
	}
	return &cp, nil
}

// ForwardError is returned by user code to ask for a job to be forwarded
// to EZThrottle: the Go form of the Python SDK's ForwardToEZThrottle. Job
// carries the request (URL, method, headers, body) and its options
// (idempotent key, metadata, webhooks, regions, ...). AutoForward submits it.
//
//	return nil, &ezthrottle.ForwardError{Job: ezclient.Job{
//		URL: "https://api.stripe.com/v1/charges", Method: "POST", Body: form,
//		IdempotentKey: "order-" + id,
//	}, Cause: err}
type ForwardError struct {
	// Job is submitted as is (after AutoForward's options). Job.URL is required.
	Job ezclient.Job
	// Cause is the failure that prompted forwarding (optional).
	Cause error
}

// Error describes the request to forward and its cause. The URL's user
// info and sensitive query values are redacted, as is what the cause may
// quote of a credential.
func (e *ForwardError) Error() string {
	s := "ezthrottle: forward " + strings.ToUpper(e.Job.Method) + " " + redact.URL(e.Job.URL) + " to EZThrottle"
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return redact.Text(s)
}

// GoString renders the error for %#v without the job's credentials: the
// job's header values are not shown, its URL is redacted.
func (e *ForwardError) GoString() string {
	cause := ""
	if e.Cause != nil {
		cause = redact.Text(e.Cause.Error())
	}
	return fmt.Sprintf("&ezthrottle.ForwardError{Job:{Method:%q, URL:%q, %d header(s), %d body byte(s)}, Cause:%q}",
		e.Job.Method, redact.URL(e.Job.URL), len(e.Job.Headers), len(e.Job.Body), cause)
}

// Unwrap returns Cause.
func (e *ForwardError) Unwrap() error { return e.Cause }

// AutoForward runs fn and, when fn returns a *ForwardError (possibly
// wrapped), submits its job to s directly and returns the Submission with a
// nil error: the failed call is never re-run locally. opts are applied to
// the job (after the job's own fields; a key already set in the job is
// kept), then the options carried by ctx (WithJobOptions).
//
// fn's value is returned in every case. Any other outcome of fn is returned
// unchanged with a nil Submission. When
// ctx carries ezclient.SuppressForwarding, the *ForwardError is returned as
// is. When the submission fails, the error joins the *ForwardError and a
// *ForwardFailedError carrying the Submitter's error (with the values of
// the job's sensitive headers and query parameters scrubbed from its
// message, see DefaultSensitiveHeaders).
//
// Tracing: like the Transport's forwarded jobs, the job carries the trace
// context of ctx (W3C traceparent and tracestate with
// propagation.TraceContext) in its request headers and, except for a
// self-hosted engine (see SubmitterDialect: an *ezclient.Client, or a
// decorator made with DecorateSubmitter), in its metadata. AutoForward has no
// Transport to configure, so it uses the global propagators
// (otel.SetTextMapPropagator; the default injects nothing). A job that
// already carries a trace context (a traceparent, or whatever the
// propagators read, in its headers or metadata, from the job itself or
// from opts) is left as is; otherwise a tracestate it carries without a
// traceparent is replaced or dropped. When the span of ctx is recording, the
// submission is a child span, SpanSubmit, of that span's tracer provider.
func AutoForward[T any](ctx context.Context, s Submitter, fn func(context.Context) (T, error), opts ...JobOption) (T, *ezclient.Submission, error) {
	v, err := fn(ctx)
	var fe *ForwardError
	if err == nil || !errors.As(err, &fe) {
		return v, nil, err
	}
	if s == nil || ezclient.ForwardingSuppressed(ctx) {
		return v, nil, err
	}
	job := fe.Job.Clone()
	// The ForwardError's own key, then its Idempotency-Key header, stand
	// where the Transport puts the request's header (see KeyStrategy).
	ownKey := job.IdempotentKey
	if ownKey == "" {
		ownKey = ezclient.HeaderKey(job.Headers)
	}
	job.IdempotentKey = ""
	spec := &jobSpec{job: job}
	spec.apply(opts, JobOptionsFrom(ctx))
	job.IdempotentKey = chooseKey(ownKey, spec, nil, func() KeyInput {
		h := http.Header{}
		for k, v := range job.Headers {
			h.Set(k, v)
		}
		return KeyInput{Method: strings.ToUpper(job.Method), URL: job.URL, Header: h, Body: []byte(job.Body)}
	})
	sub, serr := submitAutoForward(ctx, s, job)
	if serr != nil {
		// fn's error may quote the URL in its own words (fmt.Errorf("%s:
		// %w", url, fe)): its message is redacted too; errors.Is/As still
		// reach the *ForwardError.
		if msg := err.Error(); scrub(msg, nil) != msg {
			err = &redactedError{err: err}
		}
		return v, nil, errors.Join(err, &ForwardFailedError{Reason: ReasonAutoForward, Err: serr})
	}
	return v, sub, nil
}

// submitAutoForward submits an AutoForward job with the trace context of
// ctx, under a SpanSubmit span when the span of ctx records. The error is
// the Submitter's, redacted.
func submitAutoForward(ctx context.Context, s Submitter, job *ezclient.Job) (*ezclient.Submission, error) {
	parent := trace.SpanFromContext(ctx)
	// The telemetry of the Transport, reused for its span, injection and
	// redaction helpers: the tracer provider of the parent span (as
	// otelhttp does without a configured one), the global propagators, and
	// no metrics.
	tm := newTelemetry(telemetryConfig{tp: parent.TracerProvider(), mp: metricnoop.NewMeterProvider(),
		prop: otel.GetTextMapPropagator()}, SystemClock())
	u, _ := url.Parse(job.URL)
	var span trace.Span
	sctx := ctx
	if parent.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 2)
		attrs = append(attrs, AttrForwardReason.String(string(ReasonAutoForward)))
		if u != nil && u.Host != "" {
			attrs = append(attrs, AttrHost.String(HostKey(u)))
		}
		sctx, span = tm.tracer.Start(ctx, SpanSubmit, trace.WithTimestamp(tm.clock.Now()), trace.WithAttributes(attrs...))
	}
	var injected []string
	if !carriesTrace(tm.prop, job) {
		meta := SubmitterDialect(s) != ezclient.DialectSelfHosted // self-hosted jobs have no metadata
		injected = tm.inject(sctx, job, meta)
		if _, injected := job.Headers["traceparent"]; injected {
			if _, ok := job.Headers["tracestate"]; !ok {
				// A tracestate belongs to its traceparent: drop a stale one.
				for k := range job.Headers {
					if strings.EqualFold(k, "tracestate") {
						delete(job.Headers, k)
					}
				}
				for k := range job.Metadata {
					if strings.EqualFold(k, "tracestate") {
						delete(job.Metadata, k)
					}
				}
			}
		}
	}
	h := make(http.Header, len(job.Headers))
	for k, v := range job.Headers {
		h.Set(k, v)
	}
	jobReq := &http.Request{URL: u, Header: h}
	if secrets := tm.secretsOf(jobReq); len(secrets) > 0 {
		sctx = redact.ContextWithSecrets(sctx, redact.NewSecrets("", secrets...))
	}
	sub, err := submitJob(sctx, s, job, injected)
	sub, err = acceptedSubmission(job, sub, err)
	if err != nil {
		// The engine may echo the job's secrets.
		err = tm.redact(jobReq, err)
		tm.submitEnd(span, nil, err)
		return nil, err
	}
	tm.submitEnd(span, sub, nil)
	return sub, nil
}

// carriesTrace reports whether a job already carries a trace context: a
// traceparent entry (in any case) or one that p reads, in its request
// headers or its metadata.
func carriesTrace(p propagation.TextMapPropagator, job *ezclient.Job) bool {
	for k := range job.Headers {
		if strings.EqualFold(k, "traceparent") {
			return true
		}
	}
	for k := range job.Metadata {
		if strings.EqualFold(k, "traceparent") {
			return true
		}
	}
	fields := p.Fields()
	if len(fields) == 0 {
		return false
	}
	if len(job.Headers) > 0 {
		h := make(http.Header, len(job.Headers))
		for k, v := range job.Headers {
			h.Set(k, v)
		}
		if trace.SpanContextFromContext(p.Extract(context.Background(), propagation.HeaderCarrier(h))).IsValid() {
			return true
		}
	}
	if len(job.Metadata) > 0 {
		md := propagation.MapCarrier{}
		for _, f := range fields {
			if v, ok := job.Metadata[f].(string); ok {
				md[f] = v
			}
		}
		if len(md) > 0 && trace.SpanContextFromContext(p.Extract(context.Background(), md)).IsValid() {
			return true
		}
	}
	return false
}
