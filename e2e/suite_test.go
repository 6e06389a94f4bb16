package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// The scenarios of the official SDKs' integration suites (their test-app),
// run against the local engine instead of the live Cloud.

func TestPerformanceBasic(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.Step().
		URL(e.api.url("/seq/basic?codes=200")).
		Method("POST").
		Body(`{"hello":"world"}`).
		Type(ezclient.StepPerformance).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Metadata(map[string]any{"suite": "performance"}).
		Execute(e.ctx())
	require.NoError(t, err)
	assert.Equal(t, ezclient.OutcomeSubmitted, res.Outcome)
	assert.False(t, res.Local)
	require.NotEmpty(t, res.JobID())
	assert.Equal(t, ezclient.StatusQueued, res.Submission.Status)
	assert.NotEmpty(t, res.Submission.IdempotentKey, "the engine derives and echoes a HASH key")

	r := e.waitHook(res.JobID())
	assert.True(t, r.Succeeded)
	assert.Equal(t, 200, r.StatusCode)
	assert.Equal(t, "/seq/basic 200 #1 from iad", r.Body)
	assert.Equal(t, res.Submission.IdempotentKey, r.IdempotentKey)
	assert.Equal(t, "performance", r.Metadata["suite"])

	info := e.waitJob(res.JobID())
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	assert.Equal(t, 1, e.api.count("/seq/basic"))
	assert.Equal(t, "POST", info.Spec.Method)
}

func TestMultiRegionRace(t *testing.T) {
	e := newEnv(t)
	// iad and ord never answer; lax does: lax wins, the others are cancelled.
	res, err := e.client.Step().
		URL(e.api.url("/region/race?lax=200")).
		Regions(ezclient.RegionIAD, ezclient.RegionLAX, ezclient.RegionORD).
		ExecutionMode(ezclient.ExecutionRace).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)
	assert.Equal(t, ezclient.StatusRacing, res.Submission.Status, "multi-region race jobs are racing")

	r := e.waitHook(res.JobID())
	assert.True(t, r.Succeeded)
	assert.Contains(t, r.Body, "from lax")

	info := e.waitJob(res.JobID())
	won := info.EventsOf(ezlocal.EventRaceWon)
	require.Len(t, won, 1)
	assert.Equal(t, "lax", won[0].Region)
	var cancelled []string
	for _, ev := range info.EventsOf(ezlocal.EventCancelled) {
		cancelled = append(cancelled, ev.Region)
	}
	assert.ElementsMatch(t, []string{"iad", "ord"}, cancelled)
	assert.Len(t, info.EventsOf(ezlocal.EventWebhookDelivered), 1, "one result, one delivery")
}

func TestFallbackChainOnErrorAndOnTimeout(t *testing.T) {
	e := newEnv(t)
	// primary 500 → (on_error 500) a backup that hangs → (on_timeout 2s)
	// the last resort, which answers.
	lastResort := new(ezclient.Step).URL(e.api.url("/seq/last?codes=200"))
	hanging := new(ezclient.Step).URL(e.api.url("/block/backup")).
		Fallback(lastResort, ezclient.OnTimeout(2*time.Second))
	res, err := e.client.Step().
		URL(e.api.url("/seq/primary?codes=500")).
		Fallback(hanging, ezclient.OnError(500, 502, 503)).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)

	job, err := e.client.Step().URL(e.api.url("/seq/primary?codes=500")).
		Fallback(hanging, ezclient.OnError(500, 502, 503)).Job()
	require.NoError(t, err)
	require.NotNil(t, job.Fallback.Job.Fallback, "the chain travels as nested fallback_job")

	r := e.waitHook(res.JobID())
	assert.True(t, r.Succeeded)
	assert.Equal(t, "/seq/last 200 #1 from iad", r.Body)

	info := e.waitJob(res.JobID())
	fb := info.EventsOf(ezlocal.EventFallbackTriggered)
	require.Len(t, fb, 2, "%v", info.Events)
	assert.Equal(t, e.api.url("/block/backup"), fb[0].URL)
	assert.Equal(t, 500, fb[0].StatusCode)
	assert.Equal(t, e.api.url("/seq/last?codes=200"), fb[1].URL)
	assert.Equal(t, 2*time.Second, fb[1].Delay)
	assert.Contains(t, fb[1].Detail, "on_timeout")
	assert.Equal(t, 1, e.api.count("/seq/primary"))
	// With the instant clock the timeout may fire before the hanging request
	// reached the API; the events above prove it was dispatched and cut.
	assert.LessOrEqual(t, e.api.count("/block/backup"), 1)
	assert.Equal(t, 1, e.api.count("/seq/last"))

	t.Run("a status outside the trigger does not fall back", func(t *testing.T) {
		res, err := e.client.Step().
			URL(e.api.url("/seq/notfound?codes=404")).
			Fallback(new(ezclient.Step).URL(e.api.url("/seq/unused?codes=200")), ezclient.OnError(500)).
			Webhook(ezclient.Webhook{URL: e.hookURL()}).
			Execute(e.ctx())
		require.NoError(t, err)
		r := e.waitHook(res.JobID())
		assert.False(t, r.Succeeded)
		assert.Equal(t, 404, r.StatusCode)
		assert.Equal(t, 0, e.api.count("/seq/unused"))
	})
}

func TestOnSuccessWorkflow(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.Step().
		URL(e.api.url("/seq/charge?codes=200")).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		OnSuccess(new(ezclient.Step).URL(e.api.url("/seq/notify?codes=200")).
			Webhook(ezclient.Webhook{URL: e.hookURL()})).
		OnFailure(new(ezclient.Step).URL(e.api.url("/seq/alert?codes=200"))).
		Execute(e.ctx())
	require.NoError(t, err)

	info := e.waitJob(res.JobID())
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	require.Len(t, info.Children, 1)
	child := e.waitJob(info.Children[0])
	assert.Equal(t, "on_success", child.Role)
	assert.Equal(t, res.JobID(), child.Parent)
	assert.Equal(t, ezclient.StatusCompleted, child.Status)

	// Both the parent's and the child's results reach the receiver.
	assert.Equal(t, "/seq/charge 200 #1 from iad", e.waitHook(res.JobID()).Body)
	assert.Equal(t, "/seq/notify 200 #1 from iad", e.waitHook(child.ID).Body)
	assert.Equal(t, 0, e.api.count("/seq/alert"), "on_failure does not run after a success")
}

func TestOnFailureWorkflow(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.Step().
		URL(e.api.url("/seq/charge?codes=402")).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		OnSuccess(new(ezclient.Step).URL(e.api.url("/seq/notify?codes=200"))).
		OnFailure(new(ezclient.Step).URL(e.api.url("/seq/slack?codes=200")).
			Webhook(ezclient.Webhook{URL: e.hookURL()})).
		Execute(e.ctx())
	require.NoError(t, err)

	r := e.waitHook(res.JobID())
	assert.False(t, r.Succeeded)
	assert.Equal(t, 402, r.StatusCode)

	info := e.waitJob(res.JobID())
	assert.Equal(t, ezclient.StatusFailed, info.Status)
	require.Len(t, info.Children, 1)
	child := e.waitJob(info.Children[0])
	assert.Equal(t, "on_failure", child.Role)
	assert.True(t, e.waitHook(child.ID).Succeeded)
	assert.Equal(t, 1, e.api.count("/seq/slack"))
	assert.Equal(t, 0, e.api.count("/seq/notify"))

	t.Run("on_failure_timeout_ms", func(t *testing.T) {
		res, err := e.client.Step().
			URL(e.api.url("/block/slow")).
			OnFailureTimeout(3 * time.Second).
			OnFailure(new(ezclient.Step).URL(e.api.url("/seq/timeout-alert?codes=200"))).
			Execute(e.ctx())
		require.NoError(t, err)
		info := e.waitJob(res.JobID())
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.True(t, info.Has(ezlocal.EventTimedOut))
		require.Len(t, info.Children, 1)
		e.waitJob(info.Children[0])
		assert.Equal(t, 1, e.api.count("/seq/timeout-alert"))
	})
}

func TestIdempotentHashDedup(t *testing.T) {
	e := newEnv(t)
	step := e.client.Step().
		URL(e.api.url("/seq/charges?codes=200")).
		Method("POST").
		Body(`{"amount":1000,"currency":"usd"}`).
		IdempotentStrategy(ezclient.IdempotentHash)
	first, err := step.Execute(e.ctx())
	require.NoError(t, err)
	second, err := step.Execute(e.ctx())
	require.NoError(t, err)
	assert.Equal(t, first.JobID(), second.JobID(), "same request, same job")
	assert.False(t, first.Submission.Duplicate)
	assert.True(t, second.Submission.Duplicate)
	assert.Equal(t, first.Submission.IdempotentKey, second.Submission.IdempotentKey)
	e.waitJob(first.JobID())
	assert.Equal(t, 1, e.api.count("/seq/charges"), "not charged twice")

	t.Run("custom key", func(t *testing.T) {
		a, err := e.client.Step().URL(e.api.url("/seq/process?codes=200")).IdempotentKey("order-42").Execute(e.ctx())
		require.NoError(t, err)
		b, err := e.client.Step().URL(e.api.url("/seq/process?codes=200&other=1")).IdempotentKey("order-42").Execute(e.ctx())
		require.NoError(t, err)
		assert.Equal(t, a.JobID(), b.JobID(), "dedup per order, whatever the request")
		assert.Equal(t, "order-42", b.Submission.IdempotentKey)
	})
}

func TestIdempotentUniqueTwoJobs(t *testing.T) {
	e := newEnv(t)
	step := e.client.Step().URL(e.api.url("/seq/status?codes=200")).IdempotentStrategy(ezclient.IdempotentUnique)
	first, err := step.Execute(e.ctx())
	require.NoError(t, err)
	second, err := step.Execute(e.ctx())
	require.NoError(t, err)
	assert.NotEqual(t, first.JobID(), second.JobID())
	assert.NotEqual(t, first.Submission.IdempotentKey, second.Submission.IdempotentKey)
	e.waitJob(first.JobID())
	e.waitJob(second.JobID())
	assert.Equal(t, 2, e.api.count("/seq/status"), "polling runs every time")
}

func TestFrugalLocalSuccess(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.Step().
		URL(e.api.url("/seq/cheap?codes=200")).
		Type(ezclient.StepFrugal).
		FallbackOnError(429, 500, 503).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)
	assert.Equal(t, ezclient.OutcomeSucceeded, res.Outcome)
	assert.True(t, res.Local)
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, "/seq/cheap 200 #1", string(res.Body))
	assert.Empty(t, res.JobID())
	assert.Empty(t, e.engine.Jobs(), "nothing reached the engine")
}

func TestFrugalForwardOn429(t *testing.T) {
	e := newEnv(t)
	// The first (local) call is rate limited; the engine's retry succeeds.
	res, err := e.client.Step().
		URL(e.api.url("/seq/limited?codes=429,200")).
		Type(ezclient.StepFrugal).
		FallbackOnError(429, 500).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)
	assert.Equal(t, ezclient.OutcomeForwarded, res.Outcome)
	assert.Equal(t, 429, res.StatusCode)
	require.NotEmpty(t, res.JobID())

	r := e.waitHook(res.JobID())
	assert.True(t, r.Succeeded)
	assert.Equal(t, "/seq/limited 200 #2 from iad", r.Body)
	assert.Equal(t, 2, e.api.count("/seq/limited"), "one local attempt, one on the engine")
	assert.Len(t, e.engine.Jobs(), 1, "forwarded exactly once")

	t.Run("a status outside fallback_on_error is a local failure", func(t *testing.T) {
		res, err := e.client.Step().
			URL(e.api.url("/seq/bad?codes=400")).
			Type(ezclient.StepFrugal).
			FallbackOnError(429, 500).
			Execute(e.ctx())
		require.NoError(t, err)
		assert.Equal(t, ezclient.OutcomeFailed, res.Outcome)
		assert.Empty(t, res.JobID())
		assert.Len(t, e.engine.Jobs(), 1)
	})
}

func TestWebhookQuorumWithOneWebhookDown(t *testing.T) {
	e := newEnv(t)
	down := newReceiver(t, http.StatusServiceUnavailable)
	analytics := newReceiver(t, http.StatusOK)
	notify := newReceiver(t, http.StatusOK)
	res, err := e.client.Step().
		URL(e.api.url("/seq/pay?codes=200")).
		Method("POST").
		Webhooks(
			ezclient.Webhook{URL: e.hookURL(), HasQuorumVote: ezclient.Bool(true)},
			ezclient.Webhook{URL: analytics.URL, HasQuorumVote: ezclient.Bool(false)},
			ezclient.Webhook{URL: notify.URL},
			ezclient.Webhook{URL: down.URL, HasQuorumVote: ezclient.Bool(true)},
		).
		WebhookQuorum(2).
		Execute(e.ctx())
	require.NoError(t, err)

	assert.True(t, e.waitHook(res.JobID()).Succeeded)
	info := e.waitJob(res.JobID())
	assert.True(t, info.QuorumReached, "%v", info.Events)
	assert.True(t, info.Has(ezlocal.EventQuorumReached))
	failed := info.EventsOf(ezlocal.EventWebhookFailed)
	require.Len(t, failed, 1)
	assert.Equal(t, down.URL, failed[0].URL)
	assert.Equal(t, 3, down.deliveries(), "the down webhook was retried (3 attempts in all)")
	assert.Len(t, info.EventsOf(ezlocal.EventWebhookRetried), 2)
	assert.Equal(t, 1, analytics.deliveries())
	assert.Equal(t, 1, notify.deliveries())

	t.Run("quorum not reached", func(t *testing.T) {
		res, err := e.client.Step().
			URL(e.api.url("/seq/pay2?codes=200")).
			Webhooks(ezclient.Webhook{URL: e.hookURL()}, ezclient.Webhook{URL: down.URL}).
			WebhookQuorum(2).
			Execute(e.ctx())
		require.NoError(t, err)
		info := e.waitJob(res.JobID())
		assert.False(t, info.QuorumReached)
		assert.True(t, info.Has(ezlocal.EventQuorumFailed))
	})
}

func TestRetryPolicy(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.Step().
		URL(e.api.url("/seq/flaky?codes=503,429,200")).
		RetryPolicy(ezclient.RetryPolicy{MaxRetries: 5, RetryCodes: []int{429, 503}}).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)
	r := e.waitHook(res.JobID())
	assert.True(t, r.Succeeded)
	assert.Equal(t, "/seq/flaky 200 #3 from iad", r.Body)
	info := e.waitJob(res.JobID())
	retried := info.EventsOf(ezlocal.EventRetried)
	require.Len(t, retried, 2)
	for _, ev := range retried {
		assert.Equal(t, "iad", ev.Region, "retries stay in the same region")
	}
	assert.Equal(t, time.Second, retried[1].Delay, "the 429's Retry-After is honoured")

	t.Run("max_retries bounds the retries", func(t *testing.T) {
		res, err := e.client.Step().
			URL(e.api.url("/seq/down?codes=503")).
			RetryPolicy(ezclient.RetryPolicy{MaxRetries: 2, RetryCodes: []int{503}}).
			Webhook(ezclient.Webhook{URL: e.hookURL()}).
			Execute(e.ctx())
		require.NoError(t, err)
		r := e.waitHook(res.JobID())
		assert.False(t, r.Succeeded)
		assert.Equal(t, 503, r.StatusCode)
		assert.Equal(t, 3, e.api.count("/seq/down"), "1 attempt + 2 retries")
	})
}

func TestReroute(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.Step().
		URL(e.api.url("/region/reroute?iad=502&default=200")).
		Regions(ezclient.RegionIAD).
		RetryPolicy(ezclient.RetryPolicy{MaxReroutes: 2, RerouteCodes: []int{502}}).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)
	r := e.waitHook(res.JobID())
	assert.True(t, r.Succeeded)
	info := e.waitJob(res.JobID())
	rr := info.EventsOf(ezlocal.EventRerouted)
	require.Len(t, rr, 1, "%v", info.Events)
	assert.Equal(t, "iad", rr[0].FromRegion)
	assert.NotEqual(t, "iad", rr[0].Region)
	assert.Equal(t, rr[0].Region, info.Result.Region)
	assert.Contains(t, r.Body, "from "+rr[0].Region)
	assert.Equal(t, 2, e.api.count("/region/reroute"))
}

func TestRegionPolicyStrictVersusFallback(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, e.engine.SetRegionDown("iad", true))

	strict, err := e.client.Step().
		URL(e.api.url("/region/strict?default=200")).
		Regions(ezclient.RegionIAD).
		RegionPolicy(ezclient.RegionPolicyStrict).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)
	r := e.waitHook(strict.JobID())
	assert.False(t, r.Succeeded)
	info := e.waitJob(strict.JobID())
	assert.Equal(t, ezclient.StatusFailed, info.Status)
	assert.Contains(t, info.Reason, "strict")
	assert.Equal(t, 0, e.api.count("/region/strict"), "strict never routes around a down region")

	fallback, err := e.client.Step().
		URL(e.api.url("/region/fallback?default=200")).
		Regions(ezclient.RegionIAD).
		RegionPolicy(ezclient.RegionPolicyFallback).
		Webhook(ezclient.Webhook{URL: e.hookURL()}).
		Execute(e.ctx())
	require.NoError(t, err)
	r = e.waitHook(fallback.JobID())
	assert.True(t, r.Succeeded)
	info = e.waitJob(fallback.JobID())
	assert.NotEqual(t, "iad", info.Result.Region)
	assert.True(t, info.Has(ezlocal.EventRegionDown))
}
