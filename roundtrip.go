package ezthrottle

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// RoundTrip implements http.RoundTripper. It waits for the host's turn,
// performs the request with the base RoundTripper, learns from the
// response's rate-limit headers and, when forwarding is configured and the
// outcome calls for it, turns the request into an EZThrottle job.
//
// The request is passed to the base unchanged, except that a body without
// GetBody is wrapped (in a shallow copy of the request) to capture it for
// forwarding. When forwarding is impossible or fails the caller receives the
// upstream's response, body unread, or its error.
//
// With OpenTelemetry (see WithTracerProvider, WithMeterProvider and
// WithRequestSpan) the request passed on carries the request's telemetry
// state in its context, and a traceparent header with WithRequestSpan; it
// is then a shallow copy (with a copied header).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req == nil || req.URL == nil {
		closeRequestBody(req)
		return nil, errors.New("ezthrottle: RoundTrip: nil request or URL")
	}
	r, st := t.tel.begin(req)
	if st == nil {
		return t.roundTrip(req, false)
	}
	finished := false
	defer func() {
		if !finished { // a panic (base, Limiter, Submitter): record it, let it go on
			t.tel.finish(r, st, nil, errRoundTripPanic)
		}
	}()
	resp, err := t.roundTrip(r, true)
	finished = true
	t.tel.finish(r, st, resp, err)
	return resp, err
}

// errRoundTripPanic is what the request's telemetry records when the round
// trip panics.
var errRoundTripPanic = errors.New("ezthrottle: the round trip panicked")

// roundTrip is RoundTrip without the telemetry bracket; observed is true
// when the request carries telemetry state (the throttle wait is then
// measured and reported to the observer).
func (t *Transport) roundTrip(req *http.Request, observed bool) (*http.Response, error) {
	ctx := req.Context()
	hi := t.hostFor(req.URL)
	fwd := t.cfg.submitter != nil && !ezclient.ForwardingSuppressed(ctx)

	adm := Admission{Key: hi.key, Limit: hi.limit}
	var cause error
	if dl, ok := ctx.Deadline(); ok {
		adm.Deadline, cause = dl, context.DeadlineExceeded
	}
	if t.cfg.maxWait > 0 {
		if mw := t.clock.Now().Add(t.cfg.maxWait); adm.Deadline.IsZero() || mw.Before(adm.Deadline) {
			adm.Deadline, cause = mw, ErrMaxWait
		}
	}
	var (
		permit Permit
		err    error
		bu     *budgetUse
	)
	if t.llm.on.Load() || len(t.cfg.budgetRules) > 0 {
		// An LLM host: wait for its token budgets first (llm_budget.go).
		if req, bu, err = t.chargeBudgets(ctx, req, hi, &adm); err != nil {
			return t.notAdmitted(req, hi, fwd, err, cause)
		}
	}
	lv := t.live.Load()
	if t.mem != nil && !observed && lv == nil {
		permit, err = t.mem.acquire(ctx, &adm, &hi.state, &hi.own) // the common case, without a call level
	} else {
		permit, err = t.acquire(ctx, hi, &adm, observed, lv)
	}
	if err != nil {
		bu.settle()
		return t.notAdmitted(req, hi, fwd, err, cause)
	}
	if bu == nil && t.llm.on.Load() {
		// The host may have announced budgets while this request waited
		// for its turn (the first requests to an LLM host wait on the
		// Transport's default limit, none of them charged): it is charged
		// now, before it is sent, so that every request the API counts is
		// counted by the budgets too, in every process sharing them.
		if req, bu, err = t.chargeBudgets(ctx, req, hi, &adm); err != nil {
			permit.Release()
			return t.notAdmitted(req, hi, fwd, err, cause)
		}
	}
	// From here on the slot is freed on every path, panics included.
	g := slotGuard{permit: permit}
	defer g.onPanic()

	out, capture := req, (*captureBody)(nil)
	if fwd && hasBody(req) && req.GetBody == nil && req.ContentLength <= t.cfg.maxBody {
		out, capture = t.newCaptured(req)
		defer capture.done()
	}
	resp, err := t.base.RoundTrip(out)
	if resp == nil && err == nil {
		// A broken base: fail as http.Client does, without panicking. It
		// may not have closed the body either.
		closeRequestBody(req)
		err = fmt.Errorf("%w (%T)", ErrNilResponse, t.base)
	}
	if err != nil {
		bu.settle()
		g.release()
		if resp != nil {
			t.drainClose(ctx, resp.Body)
		}
		g.done = true // roundTripFailed owns nothing of the slot any more
		return t.roundTripFailed(req, hi, fwd, capture, err)
	}
	g.resp = resp
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	if t.learn(ctx, hi.key, resp) || bu != nil {
		t.learnBudgets(ctx, hi, bu, resp.Header, t.clock.Now())
	}
	bu.settle()
	if fwd && t.cfg.forwardStatuses.has(resp.StatusCode) {
		// The upstream has answered. A small answer is read into memory so
		// that the slot is not held while the engine is called, and is
		// still returned intact if forwarding fails. The read is bounded in
		// time: an answer that trickles is returned as it is, unforwarded,
		// rather than holding the caller.
		var ok bool
		var fr *http.Response
		var ferr error
		switch t.bufferAnswer(ctx, resp, maxBufferedAnswer) {
		case answerBuffered:
			g.release()
			fr, ferr, ok = t.forwardStatus(req, hi, capture, resp)
		case answerLarge:
			// The answer stays on the connection, readable only until the
			// caller's deadline: the engine gets a share of what is left,
			// the rest is kept for the caller to read the answer should
			// forwarding fail.
			sreq, cancel := t.keepBack(req)
			fr, ferr, ok = t.forwardStatus(sreq, hi, capture, resp)
			cancel()
			if ok && fr != nil && fr.Request == sreq {
				fr.Request = req
			}
		}
		if ok {
			t.drainClose(ctx, resp.Body)
			g.release()
			g.done = true
			return fr, ferr
		}
	}
	if resp.StatusCode == http.StatusAccepted {
		// Only a 202 made by this Transport may say it was forwarded.
		stripForwardHeaders(resp.Header)
	}
	g.done = true
	if g.released || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols {
		g.release()
		return resp, nil
	}
	resp.Body = wrapBody(resp.Body, permit)
	return resp, nil
}

// ErrNilResponse is returned (wrapped, naming the RoundTripper's type) when
// the base RoundTripper returns neither a response nor an error, as
// http.Client does. The request body is closed and the slot freed.
var ErrNilResponse = errors.New("ezthrottle: base RoundTripper returned a nil *http.Response with a nil error")

// ErrNilPermit is returned (wrapped, naming the Limiter's type) when a
// Limiter's Acquire returns neither a Permit nor an error.
var ErrNilPermit = errors.New("ezthrottle: Limiter returned a nil Permit with a nil error")

// maxBufferedAnswer bounds the upstream answer read into memory before a
// forward (see bufferAnswer).
const maxBufferedAnswer = 64 << 10

// keptBack is the share of the time left before the request's deadline
// that a submission made while the upstream answer is still on the
// connection leaves to the caller (1/keptBack): should the engine hang,
// the submission ends early enough for the caller to read the answer.
const keptBack = 4

// keepBack returns req with a context whose deadline keeps 1/keptBack of
// the time left before req's deadline back for the caller (req itself when
// it has no deadline), and the context's cancel function.
func (t *Transport) keepBack(req *http.Request) (*http.Request, context.CancelFunc) {
	dl, ok := req.Context().Deadline()
	if !ok {
		return req, func() {}
	}
	now := t.clock.Now()
	left := dl.Sub(now)
	if left <= 0 {
		return req, func() {}
	}
	ctx, cancel := context.WithDeadline(req.Context(), now.Add(left-left/keptBack))
	return req.WithContext(ctx), cancel
}

// slotGuard frees a request's slot, and closes the upstream response not
// yet handed to the caller, when the round trip panics (in the base
// RoundTripper, a Limiter or a Submitter), so that a recovered panic cannot
// stall a host for good. The panic itself goes on.
type slotGuard struct {
	permit   Permit
	resp     *http.Response
	released bool
	done     bool // the round trip ended normally: nothing to do
}

func (g *slotGuard) release() {
	if !g.released {
		g.released = true
		g.permit.Release()
	}
}

func (g *slotGuard) onPanic() {
	if g.done {
		return
	}
	g.release()
	if g.resp != nil && g.resp.Body != nil {
		_ = g.resp.Body.Close()
	}
}

// deliver returns the forwarded outcome: the synthetic 202, or a
// *ForwardedError with WithForwardedError.
func (t *Transport) deliver(req *http.Request, info *ForwardInfo) (*http.Response, error) {
	if t.cfg.forwardedError {
		return nil, &ForwardedError{ForwardInfo: *info}
	}
	return newAccepted(req, info), nil
}

// notAdmitted handles a limiter refusal: an overflow is forwarded when
// possible, anything else (and a failed forward) returns the error. The
// request body is closed in every case.
func (t *Transport) notAdmitted(req *http.Request, hi *hostInfo, fwd bool, err, cause error) (*http.Response, error) {
	ctx := req.Context()
	var te *ThrottleError
	if errors.As(err, &te) && te.Cause == nil {
		// Never modify the limiter's error (it may be shared): set the
		// cause on a copy.
		cp := *te
		cp.Cause = cause
		if err == error(te) {
			err = &cp
		}
		te = &cp
	}
	if te == nil || !fwd || !t.cfg.forwardOverflow || ctx.Err() != nil {
		closeRequestBody(req)
		return nil, err
	}
	body, berr := t.unsentBody(req)
	var ferr error
	if berr != nil {
		ferr = &ForwardFailedError{Reason: ReasonOverflow, Host: hi.key, Err: berr}
	} else {
		info, serr := t.submit(req, hi, body, ReasonOverflow, 0)
		if serr == nil {
			return t.deliver(req, info)
		}
		ferr = serr
	}
	t.observeForwardFailed(ctx, ferr)
	return nil, errors.Join(err, ferr)
}

// roundTripFailed handles an error of the base RoundTripper (which has
// closed the request body): a network error is forwarded when possible.
func (t *Transport) roundTripFailed(req *http.Request, hi *hostInfo, fwd bool, capture *captureBody, err error) (*http.Response, error) {
	ctx := req.Context()
	if !fwd || !t.cfg.forwardNetwork || ctx.Err() != nil || !isNetworkError(err) {
		return nil, err
	}
	var ferr error
	if !t.safeToReplay(req, 0, nil, err) {
		ferr = &ForwardFailedError{Reason: ReasonNetworkError, Host: hi.key, Err: ErrUnsafeReplay}
	} else if body, berr := t.sentBody(req, capture); berr != nil {
		ferr = &ForwardFailedError{Reason: ReasonNetworkError, Host: hi.key, Err: berr}
	} else {
		info, serr := t.submit(req, hi, body, ReasonNetworkError, 0)
		if serr == nil {
			return t.deliver(req, info)
		}
		ferr = serr
	}
	t.observeForwardFailed(ctx, ferr)
	return nil, errors.Join(err, ferr)
}

// forwardStatus tries to forward a request answered with a forwarding
// status; ok is false when it was not forwarded (resp is then untouched).
func (t *Transport) forwardStatus(req *http.Request, hi *hostInfo, capture *captureBody, resp *http.Response) (*http.Response, error, bool) {
	ctx := req.Context()
	if ctx.Err() != nil {
		return nil, nil, false
	}
	var ferr error
	if !t.safeToReplay(req, resp.StatusCode, resp.Header, nil) {
		ferr = &ForwardFailedError{Reason: ReasonStatus, Host: hi.key, Err: ErrUnsafeReplay}
	} else if body, berr := t.sentBody(req, capture); berr != nil {
		ferr = &ForwardFailedError{Reason: ReasonStatus, Host: hi.key, Err: berr}
	} else {
		info, serr := t.submit(req, hi, body, ReasonStatus, resp.StatusCode)
		if serr == nil {
			r, e := t.deliver(req, info)
			return r, e, true
		}
		ferr = serr
	}
	t.observeForwardFailed(ctx, ferr)
	return nil, nil, false
}

// sentBody reproduces the body of a request that went to the base.
func (t *Transport) sentBody(req *http.Request, capture *captureBody) ([]byte, error) {
	switch {
	case !hasBody(req):
		return nil, nil
	case req.GetBody != nil:
		rc, err := req.GetBody()
		if err != nil {
			return nil, errors.Join(ErrBodyNotReplayable, err)
		}
		defer rc.Close()
		return readLimited(rc, t.cfg.maxBody)
	case capture != nil:
		return capture.bytes()
	}
	return nil, ErrBodyTooLarge // not captured: declared larger than the limit
}

// unsentBody reads the body of a request that was never sent, and closes
// it.
func (t *Transport) unsentBody(req *http.Request) ([]byte, error) {
	if !hasBody(req) {
		closeRequestBody(req)
		return nil, nil
	}
	defer req.Body.Close()
	if req.ContentLength > t.cfg.maxBody {
		return nil, ErrBodyTooLarge
	}
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return nil, errors.Join(ErrBodyNotReplayable, err)
		}
		defer rc.Close()
		return readLimited(rc, t.cfg.maxBody)
	}
	return readLimited(req.Body, t.cfg.maxBody)
}

// learn parses the response's rate-limit signals and hands them, floored,
// capped and jittered, to the limiter before the response is returned, so
// they apply to the very next request.
func (t *Transport) learn(ctx context.Context, key string, resp *http.Response) (budgets bool) {
	if !hasSignals(resp.Header) {
		return false
	}
	v, _ := scanSignals(resp.Header)
	budgets = v[hBudget] != nil || v[hOLimit] != nil || v[hORemaining] != nil
	now := t.clock.Now()
	s := signalsFrom(&v, resp.StatusCode, now)
	if s.IsZero() {
		return budgets
	}
	if s.HasRPS {
		if s.RPS < t.cfg.minRate {
			s.RPS = t.cfg.minRate
		}
		if t.cfg.capRate > 0 && s.RPS > t.cfg.capRate {
			s.RPS = t.cfg.capRate
		}
	}
	if s.HasMaxConcurrent {
		if s.MaxConcurrent < 1 {
			s.MaxConcurrent = 1
		}
		if t.cfg.capInFlight > 0 && s.MaxConcurrent > t.cfg.capInFlight {
			s.MaxConcurrent = t.cfg.capInFlight
		}
	}
	if !s.PauseUntil.IsZero() {
		d := s.PauseUntil.Sub(now)
		if d > t.cfg.maxPause {
			d = t.cfg.maxPause
		}
		if d > 0 {
			s.PauseUntil = now.Add(d + t.jitter(d))
		} else {
			s.PauseUntil = time.Time{}
		}
	}
	t.observeLearned(ctx, key, s)
	if lv := t.live.Load(); lv != nil {
		lv.learned(key, &v, s, resp.StatusCode)
	}
	t.limiter.Learn(ctx, key, s)
	return budgets
}

// jitter returns a small positive delay for a pause of d: at most a tenth
// of d (at least 10 ms) and at most the configured pause jitter.
func (t *Transport) jitter(d time.Duration) time.Duration {
	max := d / 10
	if max < 10*time.Millisecond {
		max = 10 * time.Millisecond
	}
	if max > t.cfg.pauseJitter {
		max = t.cfg.pauseJitter
	}
	if max <= 0 {
		return 0
	}
	return 1 + rand.N(max)
}
