package ezlocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// outcome is the result of executing a job node in one or more regions.
type outcome struct {
	res       *Result
	cancelled bool
}

func (o outcome) ok() bool {
	return o.res != nil && o.res.Error == "" && o.res.StatusCode >= 200 && o.res.StatusCode < 300
}

// code is the status used to match retry, reroute and fallback codes: the
// destination's, or 502 Bad Gateway when no reply arrived.
func (o outcome) code() int {
	if o.res == nil || o.res.StatusCode == 0 {
		return http.StatusBadGateway
	}
	return o.res.StatusCode
}

func failure(region, url, reason string) outcome {
	return outcome{res: &Result{Region: region, URL: url, Error: reason}}
}

// run executes a job from start to settlement. It runs in its own goroutine
// tracked by Close.
func (e *Engine) run(j *job) {
	ctx, span := e.tracing.startJob(e.ctx, j)
	spec := j.spec
	defer e.settle(j)
	defer func() {
		e.mu.Lock()
		ok, reason := j.status == ezclient.StatusCompleted, j.reason
		e.mu.Unlock()
		e.tracing.endJob(span, j, ok, reason)
	}()

	if !spec.RetryAt.IsZero() {
		if d := spec.RetryAt.Sub(e.now()); d > 0 {
			e.event(j, Event{Type: EventScheduled, Delay: d, Detail: "retry_at " + spec.RetryAt.UTC().Format(time.RFC3339Nano)})
			if err := e.cfg.clock.Sleep(ctx, d); err != nil {
				e.finish(j, failure("", spec.URL, "engine closed"), "engine closed")
				return
			}
		}
	}

	execCtx, cancel := context.WithCancel(ctx)
	var timedOut atomic.Bool
	var timerWG sync.WaitGroup
	if spec.OnFailureTimeout > 0 {
		timerWG.Add(1)
		go func() {
			defer timerWG.Done()
			if e.cfg.clock.Sleep(execCtx, spec.OnFailureTimeout) == nil {
				timedOut.Store(true)
				cancel()
			}
		}()
	}
	node, out := e.executeChain(execCtx, j, spec)
	cancel()
	timerWG.Wait()

	reason := ""
	switch {
	case e.succeeded(j, out):
	case ctx.Err() != nil:
		e.finish(j, failure("", spec.URL, "engine closed"), "engine closed")
		return
	case timedOut.Load():
		e.event(j, Event{Type: EventTimedOut, Delay: spec.OnFailureTimeout, Detail: "on_failure_timeout_ms elapsed before the job succeeded"})
		reason = fmt.Sprintf("on_failure_timeout_ms (%v) elapsed", spec.OnFailureTimeout)
		if out.res == nil || out.cancelled {
			out = failure("", node.URL, reason)
		}
	default:
		reason = failReason(out)
	}
	e.finish(j, out, reason)

	// Children: the job's own, and those of the fallback that produced the
	// final result.
	nodes := []*ezclient.Job{spec}
	if node != spec {
		nodes = append(nodes, node)
	}
	for i, n := range nodes {
		child, role := n.OnFailure, "on_failure"
		if e.succeeded(j, out) {
			child, role = n.OnSuccess, "on_success"
		}
		if child != nil {
			e.spawn(ctx, j, child, role, i)
		}
	}

	hooks := spec.Webhooks
	if node != spec {
		for _, h := range node.Webhooks {
			if !slices.ContainsFunc(hooks, func(x ezclient.Webhook) bool { return x.URL == h.URL }) {
				hooks = append(hooks, h)
			}
		}
	}
	e.deliverAll(ctx, j, hooks, spec.WebhookQuorum, out, reason)
}

// succeeded reports whether the job's final outcome counts as a success:
// a 2xx reply on Cloud; on self-hosted engines, any reply (their jobs are
// "completed" whatever the destination's status, and "failed" only when no
// reply arrived).
func (e *Engine) succeeded(j *job, o outcome) bool {
	if j.dialect == ezclient.DialectSelfHosted {
		return o.res != nil && o.res.Error == "" && o.res.StatusCode != 0
	}
	return o.ok()
}

func failReason(o outcome) string {
	if o.res == nil {
		return "no region available"
	}
	if o.res.Error != "" {
		return o.res.Error
	}
	return fmt.Sprintf("destination answered %d", o.res.StatusCode)
}

// finish records the job's final status and notifies stream subscribers.
func (e *Engine) finish(j *job, out outcome, reason string) {
	ev := Event{Type: EventCompleted}
	status := ezclient.StatusCompleted
	if !e.succeeded(j, out) {
		ev.Type, status = EventFailed, ezclient.StatusFailed
		ev.Detail = reason
	}
	if out.res != nil {
		ev.StatusCode, ev.Region = out.res.StatusCode, out.res.Region
	}
	ev.Time = e.now()
	e.mu.Lock()
	if !j.finished() {
		e.finishedLocked(j)
	}
	j.status, j.result, j.reason, j.finishedAt = status, out.res, reason, ev.Time
	j.events = append(j.events, ev)
	e.publishLocked(j, terminalMsg(j))
	e.mu.Unlock()
	e.observe(j, ev)
}

// spawn submits a child job for parent. ctx carries the parent's job span:
// the child continues its trace.
func (e *Engine) spawn(ctx context.Context, parent *job, child *ezclient.Job, role string, n int) {
	key := child.IdempotentKey
	if key == "" {
		// Children without a key get one derived from the parent, so that a
		// parent spawns each child exactly once, and two parents sharing a
		// child template both spawn it.
		key = parent.id + ":" + role + ":" + strconv.Itoa(n)
	}
	spec := child.Clone()
	e.tracing.inherit(ctx, spec, parent.dialect == ezclient.DialectCloud)
	sr, err := e.submit(parent.dialect, parent.customer, key, spec, parent.id, role)
	if err != nil {
		e.event(parent, Event{Type: EventChildSpawned, Detail: role + ": not spawned: " + err.Error(), URL: child.URL})
		return
	}
	detail := role
	if sr.duplicate {
		detail += " (duplicate of an existing job)"
	}
	e.mu.Lock()
	parent.children = append(parent.children, sr.job.id)
	e.mu.Unlock()
	e.event(parent, Event{Type: EventChildSpawned, JobID: sr.job.id, URL: child.URL, Detail: detail})
}

// executeChain executes node and, when its fallback's trigger fires, the
// fallback chain. It returns the node that produced the final outcome.
func (e *Engine) executeChain(ctx context.Context, j *job, node *ezclient.Job) (*ezclient.Job, outcome) {
	fb := node.Fallback
	hasFB := fb != nil && fb.Job != nil
	if hasFB && fb.Trigger != nil && fb.Trigger.Type == ezclient.TriggerOnTimeout {
		nctx, cancel := context.WithCancel(ctx)
		var fired atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.cfg.clock.Sleep(nctx, fb.Trigger.Timeout) == nil {
				fired.Store(true)
				cancel()
			}
		}()
		out := e.executeNode(nctx, j, node)
		cancel()
		wg.Wait()
		if fired.Load() && !out.ok() && ctx.Err() == nil {
			e.event(j, Event{Type: EventFallbackTriggered, URL: fb.Job.URL, Delay: fb.Trigger.Timeout,
				Detail: fmt.Sprintf("on_timeout: %s did not complete within %v", node.URL, fb.Trigger.Timeout)})
			return e.executeChain(ctx, j, fb.Job)
		}
		return node, out
	}
	out := e.executeNode(ctx, j, node)
	if out.ok() || !hasFB || ctx.Err() != nil {
		return node, out
	}
	code := out.code()
	switch {
	case fb.Trigger == nil:
		e.event(j, Event{Type: EventFallbackTriggered, URL: fb.Job.URL, StatusCode: code, Detail: "no trigger: any failure"})
	case fb.Trigger.Type == ezclient.TriggerOnError && slices.Contains(fb.Trigger.Codes, code):
		e.event(j, Event{Type: EventFallbackTriggered, URL: fb.Job.URL, StatusCode: code, Detail: fmt.Sprintf("on_error %v", fb.Trigger.Codes)})
	default:
		return node, out
	}
	return e.executeChain(ctx, j, fb.Job)
}

// executeNode runs one job node in its regions (race or fanout).
func (e *Engine) executeNode(ctx context.Context, j *job, node *ezclient.Job) outcome {
	requested := make([]string, 0, len(node.Regions))
	for _, r := range node.Regions {
		if !slices.Contains(requested, string(r)) {
			requested = append(requested, string(r))
		}
	}
	strict := node.RegionPolicy == ezclient.RegionPolicyStrict
	if len(requested) == 0 {
		requested = []string{e.defaultRegion()}
	}

	// Route around down regions (fallback policy) before starting.
	var regions []string
	used := map[string]bool{}
	for _, r := range requested {
		used[r] = true
	}
	var downFail *outcome
	for _, r := range requested {
		st, _ := e.regionState(r)
		if !st.Down {
			regions = append(regions, r)
			continue
		}
		e.event(j, Event{Type: EventRegionDown, Region: r})
		if strict {
			o := failure(r, node.URL, fmt.Sprintf("region %s is down (strict region policy)", r))
			downFail = &o
			continue
		}
		if alt := e.upRegion(used, nil); alt != "" {
			used[alt] = true
			e.event(j, Event{Type: EventRerouted, FromRegion: r, Region: alt, Detail: "region down"})
			regions = append(regions, alt)
		}
	}
	fanout := node.ExecutionMode == ezclient.ExecutionFanout
	if len(regions) == 0 {
		if downFail != nil {
			return *downFail
		}
		return failure("", node.URL, "no region available: every region is down")
	}
	if fanout && downFail != nil {
		// Fanout runs in every region: a region that cannot run fails the job.
		return *downFail
	}
	allowed := requested
	if !strict {
		allowed = nil
	}
	if len(regions) == 1 {
		return e.runInRegion(ctx, j, node, regions[0], allowed)
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	outs := make([]outcome, len(regions))
	done := make(chan int, len(regions))
	var wg sync.WaitGroup
	for i, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = e.runInRegion(rctx, j, node, r, allowed)
			done <- i
		}()
	}
	if fanout {
		wg.Wait()
		for _, o := range outs {
			if !o.ok() {
				return o
			}
		}
		return outs[0]
	}
	winner := -1
	for range regions {
		i := <-done
		if winner < 0 && outs[i].ok() {
			winner = i
			e.event(j, Event{Type: EventRaceWon, Region: outs[i].res.Region, StatusCode: outs[i].res.StatusCode})
			cancel()
		}
	}
	wg.Wait()
	if winner >= 0 {
		return outs[winner]
	}
	// Every region failed: report the first real failure.
	for _, o := range outs {
		if !o.cancelled && o.res != nil {
			return o
		}
	}
	return outs[0]
}

// runInRegion runs node starting in region, applying the retry policy.
// allowed, when non-nil (strict policy), limits reroutes to those regions.
func (e *Engine) runInRegion(ctx context.Context, j *job, node *ezclient.Job, region string, allowed []string) outcome {
	policy := e.cfg.retryPolicy
	if node.RetryPolicy != nil {
		policy = *node.RetryPolicy
	}
	tried := map[string]bool{region: true}
	retries, reroutes := 0, 0
	dispatched := false
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			e.event(j, Event{Type: EventCancelled, Region: region})
			return outcome{cancelled: true, res: &Result{Region: region, URL: node.URL, Error: "cancelled"}}
		}
		st, _ := e.regionState(region)
		if st.Down {
			e.event(j, Event{Type: EventRegionDown, Region: region})
			if allowed != nil {
				return failure(region, node.URL, fmt.Sprintf("region %s is down (strict region policy)", region))
			}
			alt := e.upRegion(tried, nil)
			if alt == "" {
				alt = e.upRegion(map[string]bool{region: true}, nil)
			}
			if alt == "" {
				return failure(region, node.URL, "no region available: every region is down")
			}
			e.event(j, Event{Type: EventRerouted, FromRegion: region, Region: alt, Detail: "region down"})
			region, dispatched = alt, false
			tried[alt] = true
			st, _ = e.regionState(region)
		}
		if !dispatched {
			e.mu.Lock()
			if !j.finished() {
				j.status = ezclient.StatusInFlight
			}
			e.publishLocked(j, sseMsg{event: "dispatching", data: map[string]any{"job_id": j.id}})
			e.mu.Unlock()
			e.event(j, Event{Type: EventDispatched, Region: region, URL: node.URL})
			dispatched = true
		}
		if st.Latency > 0 {
			if err := e.cfg.clock.Sleep(ctx, st.Latency); err != nil {
				continue // cancelled: reported at the top of the loop
			}
		}
		out := e.attempt(ctx, j, node, region, attempt)
		if ctx.Err() != nil && !out.ok() {
			continue
		}
		if out.ok() {
			return out
		}
		code := out.code()
		if slices.Contains(policy.RetryCodes, code) && retries < policy.MaxRetries {
			retries++
			d := e.retryDelay(out.res, retries)
			e.event(j, Event{Type: EventRetried, Region: region, Attempt: attempt, StatusCode: code, Delay: d,
				Detail: fmt.Sprintf("retry %d/%d", retries, policy.MaxRetries)})
			if err := e.cfg.clock.Sleep(ctx, d); err != nil {
				continue
			}
			continue
		}
		if slices.Contains(policy.RerouteCodes, code) && reroutes < policy.MaxReroutes {
			alt := e.upRegion(tried, allowed)
			if alt == "" {
				alt = e.upRegion(map[string]bool{region: true}, allowed)
			}
			if alt != "" {
				reroutes++
				e.event(j, Event{Type: EventRerouted, FromRegion: region, Region: alt, Attempt: attempt, StatusCode: code,
					Detail: fmt.Sprintf("reroute %d/%d", reroutes, policy.MaxReroutes)})
				region, dispatched = alt, false
				tried[alt] = true
				continue
			}
			e.event(j, Event{Type: EventRerouted, FromRegion: region, Attempt: attempt, StatusCode: code, Detail: "no other region to reroute to"})
		}
		return out
	}
}

// retryDelay is the wait before same-region retry n: the reply's Retry-After
// when usable, else the engine's backoff.
func (e *Engine) retryDelay(res *Result, n int) time.Duration {
	if res != nil && res.Header != nil {
		if s := strings.TrimSpace(res.Header.Get("Retry-After")); s != "" {
			if secs, err := strconv.ParseFloat(s, 64); err == nil && secs >= 0 && secs <= maxRetryDelay.Seconds() {
				return time.Duration(secs * float64(time.Second))
			}
			if t, err := http.ParseTime(s); err == nil {
				d := t.Sub(e.now())
				if d < 0 {
					d = 0
				}
				if d <= maxRetryDelay {
					return d
				}
			}
		}
	}
	d := e.cfg.retryDelay
	for i := 1; i < n && d < maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxRetryDelay)
}

// attempt makes one paced request to node's destination from region.
func (e *Engine) attempt(ctx context.Context, j *job, node *ezclient.Job, region string, n int) outcome {
	u, err := url.Parse(node.URL)
	if err != nil {
		return failure(region, node.URL, "bad url: "+err.Error())
	}
	release, err := e.acquire(ctx, region, u.Host)
	if err != nil {
		return failure(region, node.URL, "cancelled while waiting for the pace: "+err.Error())
	}
	method := node.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if node.Body != "" {
		body = strings.NewReader(node.Body)
	}
	req, err := http.NewRequestWithContext(ctx, strings.ToUpper(method), node.URL, body)
	if err != nil {
		release(nil)
		return failure(region, node.URL, "bad request: "+err.Error())
	}
	for k, v := range node.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-EZThrottle-Job-ID", j.id)
	req.Header.Set("X-EZThrottle-Region", region)
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	req, span := e.tracing.startClient(req, "", j, region, n)
	resp, err := e.hc.Do(req)
	if err != nil {
		endClient(span, 0, err)
		release(nil)
		reason := err.Error()
		if ctx.Err() != nil {
			reason = "cancelled: " + ctx.Err().Error()
		}
		e.event(j, Event{Type: EventAttempt, Region: region, Attempt: n, URL: node.URL, Detail: reason})
		return failure(region, node.URL, reason)
	}
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, e.cfg.maxResponse))
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	_ = resp.Body.Close()
	endClient(span, resp.StatusCode, nil)
	if change := release(resp.Header); change != "" {
		e.event(j, Event{Type: EventPaceChanged, Region: region, URL: node.URL, Detail: change})
	}
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		reason := "reading the reply: " + rerr.Error()
		e.event(j, Event{Type: EventAttempt, Region: region, Attempt: n, StatusCode: resp.StatusCode, URL: node.URL, Detail: reason})
		return failure(region, node.URL, reason)
	}
	e.event(j, Event{Type: EventAttempt, Region: region, Attempt: n, StatusCode: resp.StatusCode, URL: node.URL})
	return outcome{res: &Result{
		StatusCode: resp.StatusCode, Header: resp.Header.Clone(), Body: string(bytes.ToValidUTF8(b, []byte("\uFFFD"))),
		Region: region, URL: node.URL,
	}}
}

// userAgent is sent to destinations and webhooks.
const userAgent = "ezthrottle-local/" + ezclient.Version
