package ezthrottle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// observer receives the Transport's observation points: the throttle wait
// of every request (host key, duration, outcome), the signals learned from
// a response, and each forwarding with its reason, job ID and idempotent
// key, or its failure. The Transport has none by default (no cost on the
// hot path beyond a nil check); the OpenTelemetry integration implements it
// to record spans and metrics at exactly these points.
type observer interface {
	// throttleStart is called before the limiter runs; the limiter is
	// given the returned context (carrying the throttle span, so that a
	// Limiter's own spans nest under it), and end is called after it
	// admitted or refused the request (err is nil when admitted).
	throttleStart(ctx context.Context, host string, start time.Time) (lctx context.Context, end func(wait time.Duration, err error))
	// learned is called with the signals handed to the limiter.
	learned(ctx context.Context, host string, s Signals)
	// forwarded is called when a request became a job.
	forwarded(ctx context.Context, info *ForwardInfo)
	// forwardFailed is called when forwarding was attempted and failed
	// (err is a *ForwardFailedError); the caller gets the original outcome.
	forwardFailed(ctx context.Context, err error)
}

// acquire runs the limiter for one request (the throttle-wait observation
// point); the wait is measured and observed only when observed is true
// (the request carries telemetry state), and measured and recorded when
// the live view is on (lv not nil).
func (t *Transport) acquire(ctx context.Context, hi *hostInfo, adm *Admission, observed bool, lv *liveState) (Permit, error) {
	var (
		start time.Time
		end   func(time.Duration, error)
		lctx  = ctx
	)
	timed := observed && t.obs != nil
	if timed {
		start = t.clock.Now()
		lctx, end = t.obs.throttleStart(ctx, hi.key, start)
		defer func() {
			if end != nil { // the Limiter panicked: end the span, let the panic go on
				end(t.clock.Now().Sub(start), errLimiterPanic)
			}
		}()
	}
	var (
		p   Permit
		err error
		t0  int64
	)
	if lv != nil {
		t0 = lv.nanos()
	}
	if t.mem != nil {
		p, err = t.mem.acquire(lctx, adm, &hi.state, &hi.own)
	} else {
		p, err = t.limiter.Acquire(lctx, *adm)
		switch {
		case err == nil && p == nil: // a broken Limiter: fail, do not panic later
			err = fmt.Errorf("%w (%T)", ErrNilPermit, t.limiter)
		case err != nil && p != nil: // a slot granted with an error is not used: free it
			p.Release()
			p = nil
		}
	}
	if timed {
		e := end
		end = nil
		e(t.clock.Now().Sub(start), err)
	}
	if lv != nil {
		t1 := lv.nanos()
		lv.acquired(hi, t1-t0, t1, err)
	}
	return p, err
}

// errLimiterPanic is what the throttle span records when the Limiter
// panics.
var errLimiterPanic = errors.New("ezthrottle: the Limiter panicked")

// observeLearned is the observation point of learned signals.
func (t *Transport) observeLearned(ctx context.Context, host string, s Signals) {
	if t.obs != nil {
		t.obs.learned(ctx, host, s)
	}
}

// observeForwarded is the observation point of a successful forward: host
// key, reason, job ID and idempotent key are known here.
func (t *Transport) observeForwarded(ctx context.Context, info *ForwardInfo) {
	receiptFrom(ctx).record(info, nil)
	t.log.LogAttrs(ctx, slog.LevelInfo, "ezthrottle: request forwarded",
		slog.String("host", info.Host), slog.String("reason", string(info.Reason)),
		slog.Int("upstream_status", info.UpstreamStatus),
		slog.String("job_id", info.Submission.JobID), slog.String("idempotent_key", info.Submission.IdempotentKey))
	if t.obs != nil {
		t.obs.forwarded(ctx, info)
	}
	if lv := t.live.Load(); lv != nil {
		lv.forwarded(info)
	}
}

// observeForwardFailed is the observation point of a failed forward; the
// caller receives the original outcome.
func (t *Transport) observeForwardFailed(ctx context.Context, err error) {
	receiptFrom(ctx).record(nil, err)
	t.log.LogAttrs(ctx, slog.LevelWarn, "ezthrottle: forwarding failed, returning the original outcome",
		slog.String("error", err.Error()))
	if t.obs != nil {
		t.obs.forwardFailed(ctx, err)
	}
	if lv := t.live.Load(); lv != nil {
		lv.forwardFailed(err)
	}
}
