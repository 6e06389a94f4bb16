package ezclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Outcome says what happened to a step executed by this library.
type Outcome int

const (
	// OutcomeIncomplete (the zero value): the step reached no outcome
	// because execution stopped with an error (the caller's context ended,
	// or forwarding to the engine failed).
	OutcomeIncomplete Outcome = iota
	// OutcomeSubmitted: the step was submitted to the engine at once
	// (PERFORMANCE); StepResult.Submission is set and the engine runs the
	// fallbacks, OnSuccess and OnFailure.
	OutcomeSubmitted
	// OutcomeSucceeded: the request, or one of its fallbacks, ran locally
	// and answered 2xx.
	OutcomeSucceeded
	// OutcomeFailed: the request ran locally and failed with a status not in
	// FallbackOnError; it was not forwarded and OnFailure ran. For a
	// fallback's result: that fallback's local attempt failed.
	OutcomeFailed
	// OutcomeForwarded: the request failed locally (a FallbackOnError status,
	// a network error or a timeout), the fallbacks that could run locally
	// failed too, and the job was handed to the engine with the fallbacks not
	// yet tried; StepResult.Submission is set.
	OutcomeForwarded
	// OutcomeFellBack: ForwardOrFallback found the engine unreachable and
	// ran the caller's fallback; StepResult.Err holds the submission error.
	OutcomeFellBack
)

// String returns a lower-case name such as "forwarded".
func (o Outcome) String() string {
	switch o {
	case OutcomeIncomplete:
		return "incomplete"
	case OutcomeSubmitted:
		return "submitted"
	case OutcomeSucceeded:
		return "succeeded"
	case OutcomeFailed:
		return "failed"
	case OutcomeForwarded:
		return "forwarded"
	case OutcomeFellBack:
		return "fell back"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// StepResult reports what Execute did with a step and with what ran after it.
type StepResult struct {
	// Step is the step this result is about (the root, a fallback, OnSuccess
	// or OnFailure).
	Step *Step
	// Outcome says what happened.
	Outcome Outcome
	// Local is true when the step's request ran in this process; then
	// StatusCode, Header, Body, Truncated, Err and TimedOut describe it.
	Local bool
	// Method and URL of the step's request.
	Method, URL string
	// StatusCode of the local response (0 when there was none: Err is set).
	StatusCode int
	// Header of the local response.
	Header http.Header
	// Body of the local response, at most MaxResponseBody bytes.
	Body []byte
	// Truncated is true when the local response body was longer than Body.
	Truncated bool
	// Err is the network error or timeout of the local request (or the
	// error reading a response body, which does not change the outcome: the
	// status decides), or for OutcomeFellBack the submission error.
	Err error
	// TimedOut is true when the local request hit the step's Timeout (or
	// the on-timeout trigger of the fallback after it).
	TimedOut bool
	// Submission is the engine's acknowledgement for OutcomeSubmitted and
	// OutcomeForwarded.
	Submission *Submission
	// Fallbacks are the fallbacks tried locally, in order, each with
	// OutcomeSucceeded or OutcomeFailed. Fallbacks not tried locally travel
	// in the forwarded job and are not listed.
	Fallbacks []*StepResult
	// OnSuccess is the result of the OnSuccess step when this library
	// executed it (after a local success); nil when it did not run or was
	// carried to the engine inside the Submission.
	OnSuccess *StepResult
	// OnFailure is the result of the OnFailure step when this library
	// executed it (after a local failure); nil otherwise.
	OnFailure *StepResult
}

// JobID returns the submitted job's ID, or "" when nothing was submitted.
func (r *StepResult) JobID() string {
	if r == nil || r.Submission == nil {
		return ""
	}
	return r.Submission.JobID
}

// SuccessfulAttempt returns the local result that answered 2xx: r itself or
// the fallback that succeeded; nil when no local request succeeded.
func (r *StepResult) SuccessfulAttempt() *StepResult {
	if r == nil {
		return nil
	}
	if r.Local && r.ok() {
		return r
	}
	for _, f := range r.Fallbacks {
		if f.ok() {
			return f
		}
	}
	return nil
}

func (r *StepResult) ok() bool { return r.StatusCode >= 200 && r.StatusCode <= 299 }

// forwardable reports whether a failed local attempt may be handed on
// (fallbacks, then the engine): a network error or timeout, or a status in
// codes.
func (r *StepResult) forwardable(codes []int) bool {
	return r.StatusCode == 0 || slices.Contains(codes, r.StatusCode)
}

// stepError wraps an error from a step that ran after another one, naming
// it by its field path ("on_success", "fallback_job.on_success", ...).
type stepError struct {
	path string
	err  error
}

func (e *stepError) Error() string {
	return redact.Text("ezthrottle: " + e.path + " step: " + e.err.Error())
}
func (e *stepError) Unwrap() error { return e.err }

// Execute runs the step and returns what happened.
//
// The whole workflow is validated first; an invalid field, a builder error
// or a feature the client's dialect cannot carry returns a *ValidationError
// naming the field, and nothing is sent.
//
// A PERFORMANCE step is submitted once, carrying its whole tree (fallback
// chain, OnSuccess, OnFailure), and the engine runs the children.
//
// A FRUGAL step follows protocol §6. Its request runs locally with the
// client's LocalHTTPClient, bounded by Timeout and ctx, under
// SuppressForwarding(ctx): a Transport of this library wrapping that client
// throttles the request but never forwards it, so a failed attempt is
// forwarded at most once, by the step, with the step's webhooks, fallbacks
// and children. Then:
//
//   - 2xx: the step succeeded; OnSuccess is executed (locally if FRUGAL,
//     submitted if PERFORMANCE) and its result reported.
//   - a status in FallbackOnError, a network error or a timeout: the
//     fallbacks are tried locally in chain order, each one only if it is
//     FRUGAL and its trigger matches the latest failure (OnError: the
//     status is one of its codes; OnTimeout: the latest attempt timed out,
//     the attempt being cut at the trigger's timeout; nil: the latest
//     failure is a network error, a timeout or one of the failed step's
//     FallbackOnError codes). The first 2xx wins: that fallback's own
//     OnSuccess and then the step's OnSuccess run. When none succeeds the
//     step is forwarded to the engine as ONE job carrying the fallbacks not
//     tried locally, OnSuccess and OnFailure. A fallback that failed locally
//     does not run its own OnFailure, and its OnFailure is not forwarded: on
//     the engine a fallback's OnFailure means "this fallback and every path
//     after it failed", and those paths are still pending in the forwarded
//     job, whose OnFailure (the step's) runs when they all fail. Put failure
//     handling that must run in that case on the step itself.
//   - any other status: the step failed; OnFailure is executed and its
//     result reported. Nothing is forwarded.
//
// No path submits the same job twice or runs a fallback twice. A local
// attempt that timed out may still have reached the server; forwarding it
// then repeats it, as FRUGAL implies.
//
// When the caller's ctx ends, Execute returns its error (errors.Is(err,
// context.Canceled) or context.DeadlineExceeded), never treated as a
// network error. When an error occurs after the step's own request ran
// (forwarding failed, or a step after it could not run), Execute returns
// the result so far together with the error, so that the caller can see
// what already happened before trying again.
func (s *Step) Execute(ctx context.Context) (*StepResult, error) {
	root, job, err := s.prepare()
	if err != nil {
		return nil, err
	}
	if root.typ == StepPerformance {
		return root.submit(ctx, job)
	}
	return root.runFrugal(ctx)
}

// ForwardOrFallback submits the step's job (whole tree, whatever the step's
// type) and, only when the engine is unreachable (IsUnreachable: connection
// refused, DNS failure, timeout, proxy 502, after Submit's retries), runs
// fallback instead and returns a result with OutcomeFellBack whose Err is the
// submission error, together with fallback's own error. Any other failure
// (4xx, rate limiting, the caller's ctx ending) is returned as it is and
// fallback does not run.
//
// A connection that fails after the job was sent can leave the job accepted
// by the engine although fallback runs; give the step an idempotent key if
// a later resubmission must de-duplicate against it.
func (s *Step) ForwardOrFallback(ctx context.Context, fallback func(ctx context.Context) error) (*StepResult, error) {
	if fallback == nil {
		return nil, invalid("fallback", "nil fallback function")
	}
	root, job, err := s.prepare()
	if err != nil {
		return nil, err
	}
	res, err := root.submit(ctx, job)
	if err == nil {
		return res, nil
	}
	if !IsUnreachable(err) || ctx.Err() != nil {
		return nil, err
	}
	root.client.Logger().LogAttrs(ctx, slog.LevelWarn, "ezthrottle: engine unreachable, running the caller's fallback",
		slog.String("url", safeURL(s.url)), slog.String("error", err.Error()))
	res = root.newResult()
	res.Outcome = OutcomeFellBack
	res.Err = err
	if ferr := fallback(ctx); ferr != nil {
		return res, ferr
	}
	return res, nil
}

func (n *node) newResult() *StepResult {
	return &StepResult{Step: n.s, Method: normalizeMethod(n.s.method), URL: n.s.url}
}

// execute runs a child step according to its type.
func (n *node) execute(ctx context.Context) (*StepResult, error) {
	if n.typ == StepPerformance {
		return n.submit(ctx, n.job(n.chain))
	}
	return n.runFrugal(ctx)
}

func (n *node) submit(ctx context.Context, job *Job) (*StepResult, error) {
	sub, err := n.client.Submit(ctx, job)
	if err != nil {
		return nil, err
	}
	res := n.newResult()
	res.Outcome = OutcomeSubmitted
	res.Submission = sub
	return res, nil
}

func (n *node) codes() []int {
	if n.s.codesSet {
		return n.s.codes
	}
	return DefaultFallbackOnError()
}

// attemptTimeout is the local timeout of an attempt of n followed in the
// chain by next (nil: none): n's Timeout, cut to next's on-timeout trigger
// when next will run locally.
func (n *node) attemptTimeout(next *chainEntry) time.Duration {
	d := DefaultLocalTimeout
	if n.s.timeoutSet {
		d = n.s.timeout
	}
	if next != nil && next.n.typ == StepFrugal && next.trigger != nil && next.trigger.Type == TriggerOnTimeout {
		if t := next.trigger.Timeout; t > 0 && (d == 0 || t < d) {
			d = t
		}
	}
	return d
}

func entryAt(chain []chainEntry, i int) *chainEntry {
	if i < len(chain) {
		return &chain[i]
	}
	return nil
}

// matches reports whether e's trigger fires for the latest failed attempt
// last, whose step has the FallbackOnError codes lastCodes.
func (e *chainEntry) matches(last *StepResult, lastCodes []int) bool {
	t := e.trigger
	if t == nil {
		return last.forwardable(lastCodes)
	}
	switch t.Type {
	case TriggerOnError:
		return last.StatusCode != 0 && slices.Contains(t.Codes, last.StatusCode)
	case TriggerOnTimeout:
		return last.TimedOut
	}
	return false
}

// runFrugal executes n as a FRUGAL step (see Execute).
func (n *node) runFrugal(ctx context.Context) (*StepResult, error) {
	res, err := n.attempt(ctx, n.attemptTimeout(entryAt(n.chain, 0)))
	if err != nil {
		return nil, err
	}
	if res.ok() {
		res.Outcome = OutcomeSucceeded
		return res, runChild(ctx, n.onSuccess, &res.OnSuccess)
	}
	if !res.forwardable(n.codes()) {
		res.Outcome = OutcomeFailed
		return res, runChild(ctx, n.onFailure, &res.OnFailure)
	}
	last, lastCodes := res, n.codes()
	var untried []chainEntry
	for i := range n.chain {
		e := &n.chain[i]
		if e.n.typ != StepFrugal || !e.matches(last, lastCodes) {
			untried = append(untried, *e)
			continue
		}
		fr, err := e.n.attempt(ctx, e.n.attemptTimeout(entryAt(n.chain, i+1)))
		if err != nil {
			return res, err
		}
		res.Fallbacks = append(res.Fallbacks, fr)
		if fr.ok() {
			fr.Outcome = OutcomeSucceeded
			res.Outcome = OutcomeSucceeded
			if err := runChild(ctx, e.n.onSuccess, &fr.OnSuccess); err != nil {
				return res, err
			}
			return res, runChild(ctx, n.onSuccess, &res.OnSuccess)
		}
		fr.Outcome = OutcomeFailed
		last, lastCodes = fr, e.n.codes()
	}
	job := n.job(untried)
	sub, err := n.client.Submit(ctx, job)
	if err != nil {
		n.client.Logger().LogAttrs(ctx, slog.LevelWarn, "ezthrottle: forwarding a failed FRUGAL step failed",
			slog.String("url", safeURL(n.s.url)), slog.String("error", err.Error()))
		return res, fmt.Errorf("ezthrottle: forwarding the failed local request: %w", err)
	}
	n.client.Logger().LogAttrs(ctx, slog.LevelDebug, "ezthrottle: FRUGAL step forwarded",
		slog.String("url", safeURL(n.s.url)), slog.String("job_id", sub.JobID), slog.Int("fallbacks_tried", len(res.Fallbacks)))
	res.Outcome = OutcomeForwarded
	res.Submission = sub
	return res, nil
}

// runChild executes child (if any), stores its result in *dst and names it
// in the error.
func runChild(ctx context.Context, child *node, dst **StepResult) error {
	if child == nil {
		return nil
	}
	cr, err := child.execute(ctx)
	*dst = cr
	if err == nil {
		return nil
	}
	if se := (*stepError)(nil); errors.As(err, &se) {
		return err // already names the innermost step
	}
	return &stepError{path: child.path, err: err}
}

// attempt runs n's request once, locally. It returns an error only when the
// caller's ctx ended (or the request cannot be built); network errors and
// timeouts are reported in the result.
func (n *node) attempt(ctx context.Context, timeout time.Duration) (*StepResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	actx := SuppressForwarding(ctx)
	if timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(actx, timeout)
		defer cancel()
	}
	var body io.Reader
	if n.s.body != "" {
		body = strings.NewReader(n.s.body) // a fresh reader per attempt
	}
	method := normalizeMethod(n.s.method)
	req, err := http.NewRequestWithContext(actx, method, n.s.url, body)
	if err != nil {
		return nil, invalid(fieldPath(n.path, "url"), "cannot build the local request: %v", err)
	}
	for k, v := range n.s.headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res := n.newResult()
	res.Local = true
	resp, err := n.client.LocalHTTPClient().Do(req)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("ezthrottle: local %s %s: %w", method, safeURL(n.s.url), cerr)
		}
		res.Err = scrubErr(err) // a *url.Error quotes the URL: its credentials redacted
		res.TimedOut = isTimeout(actx, err)
		n.logAttempt(ctx, res)
		return res, nil
	}
	defer resp.Body.Close()
	res.StatusCode = resp.StatusCode
	res.Header = resp.Header
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, n.maxBody+1))
	if int64(len(b)) > n.maxBody {
		b = b[:n.maxBody]
		res.Truncated = true
		n.client.drainClose(actx, resp.Body) // bounded in size and time, for connection reuse
	}
	res.Body = b
	if rerr != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("ezthrottle: local %s %s: reading the response: %w", method, safeURL(n.s.url), cerr)
		}
		res.Err = scrubErr(rerr)
		res.TimedOut = isTimeout(actx, rerr)
	}
	n.logAttempt(ctx, res)
	return res, nil
}

func (n *node) logAttempt(ctx context.Context, res *StepResult) {
	attrs := []slog.Attr{slog.String("method", res.Method), slog.String("url", safeURL(res.URL)), slog.Int("status", res.StatusCode)}
	if res.Err != nil {
		msg := res.Err.Error()
		if ue := (*url.Error)(nil); errors.As(res.Err, &ue) {
			msg = ue.Err.Error() // without the URL, whose query may carry credentials
		}
		attrs = append(attrs, slog.String("error", msg), slog.Bool("timed_out", res.TimedOut))
	}
	n.client.Logger().LogAttrs(ctx, slog.LevelDebug, "ezthrottle: local attempt", attrs...)
}

// isTimeout reports whether err is a timeout: the attempt's own deadline,
// or a timeout of the HTTP client or the network.
func isTimeout(actx context.Context, err error) bool {
	if errors.Is(actx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// safeURL returns scheme://host/path of raw: no user info, no query (which
// may carry credentials).
func safeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid URL>"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
