package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// wrapped returns an http.Client whose Transport throttles and forwards to
// the test's engine, with the verifying receiver as the jobs' webhook.
func (e *env) wrapped(opts ...ezthrottle.Option) *http.Client {
	e.t.Helper()
	base := &http.Transport{}
	e.t.Cleanup(base.CloseIdleConnections)
	hc, err := ezthrottle.Wrap(&http.Client{Transport: base}, append([]ezthrottle.Option{
		ezthrottle.WithClient(e.client, ezthrottle.JobWebhook(e.hookURL()), ezthrottle.JobMeta("via", "transport")),
	}, opts...)...)
	require.NoError(e.t, err)
	return hc
}

// TestTransportForwards429ToWaiter: a real API answers 429; the Transport
// turns the call into a job on the engine and hands back a 202 with its ID;
// the engine's retry succeeds and the result reaches a waiter through the
// webhook handler.
func TestTransportForwards429ToWaiter(t *testing.T) {
	e := newEnv(t)
	hc := e.wrapped()

	req, err := http.NewRequestWithContext(e.ctx(), http.MethodPost, e.api.url("/seq/charges?codes=429,200"), strings.NewReader(`{"amount":1000}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "order-7")
	resp, err := hc.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	assert.True(t, ezthrottle.IsForwarded(resp))
	info, ok := ezthrottle.JobFromResponse(resp)
	require.True(t, ok)
	assert.Equal(t, ezthrottle.ReasonStatus, info.Reason)
	assert.Equal(t, 429, info.UpstreamStatus)
	assert.Equal(t, "order-7", info.Submission.IdempotentKey, "the request's Idempotency-Key is the job's key")
	key := webhook.KeyFromHeader(resp.Header)
	require.Equal(t, info.JobID(), key.JobID)

	r, err := e.hooks.Wait(e.ctx(), key)
	require.NoError(t, err)
	assert.True(t, r.Succeeded)
	assert.Equal(t, 200, r.StatusCode)
	assert.Equal(t, "/seq/charges 200 #2 from iad", r.Body)
	assert.Equal(t, "transport", r.Metadata["via"])

	job := e.waitJob(key.JobID)
	assert.Equal(t, `{"amount":1000}`, job.Spec.Body, "the body travels with the job")
	assert.Equal(t, "application/json", job.Spec.Headers["Content-Type"])
	hdrs := e.api.headers("/seq/charges")
	require.Len(t, hdrs, 2)
	assert.Equal(t, "order-7", hdrs[1].Get("Idempotency-Key"), "the engine replays the request's headers")
}

// TestTransportForwardedErrorAndReceipt: SDKs that decode any 2xx into an
// empty result learn the job ID from a *ForwardedError or a Receipt.
func TestTransportForwardedErrorAndReceipt(t *testing.T) {
	e := newEnv(t)

	t.Run("forwarded error", func(t *testing.T) {
		hc := e.wrapped(ezthrottle.WithForwardedError())
		resp, err := hc.Get(e.api.url("/seq/ferr?codes=503,200"))
		if resp != nil {
			resp.Body.Close()
		}
		require.Error(t, err)
		var fe *ezthrottle.ForwardedError
		require.True(t, errors.As(err, &fe), "%v", err)
		assert.ErrorIs(t, err, ezthrottle.ErrForwarded)
		r, err := e.hooks.WaitJob(e.ctx(), fe.JobID())
		require.NoError(t, err)
		assert.True(t, r.Succeeded)
	})
	t.Run("receipt", func(t *testing.T) {
		hc := e.wrapped()
		ctx, receipt := ezthrottle.WithReceipt(e.ctx())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.api.url("/seq/receipt?codes=429,200"), nil)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.True(t, receipt.Forwarded())
		r, err := e.hooks.WaitJob(e.ctx(), receipt.JobID())
		require.NoError(t, err)
		assert.Equal(t, "/seq/receipt 200 #2 from iad", r.Body)
	})
	t.Run("a success is not forwarded", func(t *testing.T) {
		hc := e.wrapped()
		before := len(e.engine.Jobs())
		resp, err := hc.Get(e.api.url("/seq/fine?codes=200"))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "/seq/fine 200 #1", string(b))
		assert.False(t, ezthrottle.IsForwarded(resp))
		assert.Len(t, e.engine.Jobs(), before)
	})
}

// TestAutoForwardLegacyCode: legacy code returns a *ForwardError; the job
// is submitted as is, never re-run locally.
func TestAutoForwardLegacyCode(t *testing.T) {
	e := newEnv(t)
	legacy := func(ctx context.Context) (string, error) {
		resp, err := http.Get(e.api.url("/seq/legacy?codes=429,200"))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			return "", &ezthrottle.ForwardError{Job: ezclient.Job{
				URL: e.api.url("/seq/legacy?codes=429,200"), IdempotentKey: "order_12345",
				Metadata: map[string]any{"order_id": "order_12345"},
				Webhooks: []ezclient.Webhook{{URL: e.hookURL()}},
			}}
		}
		return "done locally", nil
	}
	defer http.DefaultClient.CloseIdleConnections()
	v, sub, err := ezthrottle.AutoForward(e.ctx(), e.client, legacy)
	require.NoError(t, err)
	assert.Empty(t, v)
	require.NotNil(t, sub)
	assert.Equal(t, "order_12345", sub.IdempotentKey)
	r := e.waitHook(sub.JobID)
	assert.True(t, r.Succeeded)
	assert.Equal(t, "order_12345", r.Metadata["order_id"])
	assert.Equal(t, 2, e.api.count("/seq/legacy"), "the failed call is not re-run locally")
}

// TestWebhookSignatures: deliveries are signed with the account's secret;
// a receiver with another secret (or an unsigned account) rejects them, and
// the engine records the failed deliveries.
func TestWebhookSignatures(t *testing.T) {
	t.Run("raw deliveries verify with the secret only", func(t *testing.T) {
		e := newEnv(t)
		var mu sync.Mutex
		var sig string
		var body []byte
		raw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			sig, body = r.Header.Get(webhook.SignatureHeader), b
			mu.Unlock()
		}))
		defer raw.Close()
		res, err := e.client.Step().URL(e.api.url("/seq/signed?codes=200")).Webhook(ezclient.Webhook{URL: raw.URL}).Execute(e.ctx())
		require.NoError(t, err)
		e.waitJob(res.JobID())
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, sig)
		v := webhook.Verifier{Primary: secret, Now: e.clk.Now}
		require.NoError(t, v.Verify(sig, body))
		wrong := webhook.Verifier{Primary: "not-the-account-secret", Now: e.clk.Now}
		assert.ErrorIs(t, wrong.Verify(sig, body), webhook.ErrMismatch)
		tampered := append([]byte(nil), body...)
		tampered[len(tampered)-2] ^= 1
		assert.ErrorIs(t, v.Verify(sig, tampered), webhook.ErrMismatch)
		r, err := webhook.Decode(body)
		require.NoError(t, err)
		assert.Equal(t, res.JobID(), r.JobID)
	})
	t.Run("a receiver with the wrong secret rejects every attempt", func(t *testing.T) {
		e := newEnv(t)
		other, err := webhook.NewHandler(webhook.WithSecret("whsec_someone_elses_secret"), webhook.WithClock(e.clk.Now))
		require.NoError(t, err)
		defer other.Close()
		srv := httptest.NewServer(other)
		defer srv.Close()
		res, err := e.client.Step().URL(e.api.url("/seq/wrong?codes=200")).Webhook(ezclient.Webhook{URL: srv.URL}).Execute(e.ctx())
		require.NoError(t, err)
		info := e.waitJob(res.JobID())
		failed := info.EventsOf(ezlocal.EventWebhookFailed)
		require.Len(t, failed, 1, "%v", info.Events)
		assert.Equal(t, http.StatusUnauthorized, failed[0].StatusCode)
		assert.Equal(t, 0, other.Store().Len())
	})
	t.Run("rotation: the new secret signs, the old one is still accepted", func(t *testing.T) {
		e := newEnv(t)
		const next = "whsec_e2e_next_secret_000000"
		require.NoError(t, e.engine.SetWebhookSecrets(ezlocal.DefaultCustomerID, next, secret))
		// The receiver has not switched yet: old primary, new as secondary.
		res, err := e.client.Step().URL(e.api.url("/seq/rotate?codes=200")).Webhook(ezclient.Webhook{URL: e.hookURL()}).Execute(e.ctx())
		require.NoError(t, err)
		rotating, err := webhook.NewHandler(webhook.WithSecret(secret), webhook.WithSecondarySecret(next), webhook.WithClock(e.clk.Now))
		require.NoError(t, err)
		defer rotating.Close()
		srv := httptest.NewServer(rotating)
		defer srv.Close()
		res2, err := e.client.Step().URL(e.api.url("/seq/rotate2?codes=200")).Webhook(ezclient.Webhook{URL: srv.URL}).Execute(e.ctx())
		require.NoError(t, err)
		_, err = rotating.WaitJob(e.ctx(), res2.JobID())
		require.NoError(t, err)
		// The receiver that only knows the old secret rejects the new
		// signature.
		info := e.waitJob(res.JobID())
		assert.True(t, info.Has(ezlocal.EventWebhookFailed))
	})
	t.Run("an unsigned account's deliveries are rejected by a verifying receiver", func(t *testing.T) {
		e := newEnv(t)
		require.NoError(t, e.engine.SetWebhookSecrets(ezlocal.DefaultCustomerID, "", ""))
		res, err := e.client.Step().URL(e.api.url("/seq/unsigned?codes=200")).Webhook(ezclient.Webhook{URL: e.hookURL()}).Execute(e.ctx())
		require.NoError(t, err)
		info := e.waitJob(res.JobID())
		failed := info.EventsOf(ezlocal.EventWebhookFailed)
		require.Len(t, failed, 1)
		assert.Equal(t, http.StatusUnauthorized, failed[0].StatusCode)
	})
}

// TestSelfHostedDialect: the same engine as a self-hosted server: POST /jobs,
// the event stream, and the self-hosted webhook payload.
func TestSelfHostedDialect(t *testing.T) {
	e := newEnv(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c, err := ezclient.New(ezclient.WithSelfHosted(e.engine.URL(), "user-1"),
		ezclient.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	res, err := c.Step().URL(e.api.url("/gate/self")).Method("POST").Body("x").
		Webhook(ezclient.Webhook{URL: e.hookURL()}).Execute(e.ctx())
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{32}$`, res.JobID())

	// Follow the job's event stream; let the API answer once connected, so
	// the terminal event arrives on the stream itself.
	var types []ezclient.EventType
	var last ezclient.Event
	for ev, err := range c.StreamJob(e.ctx(), res.JobID()) {
		require.NoError(t, err)
		if len(types) == 0 {
			e.api.open("self")
		}
		types = append(types, ev.Type)
		last = ev
	}
	require.NotEmpty(t, types)
	assert.Equal(t, ezclient.EventCompleted, last.Type, "%v", types)
	assert.Equal(t, 200, last.ResponseStatus)
	assert.True(t, last.Succeeded)
	assert.False(t, last.FromStatus)

	// Connecting after the job finished: the engine sends no terminal event,
	// only comments; WaitJob still returns at once, from the status lookup.
	done, err := c.WaitJob(e.ctx(), res.JobID())
	require.NoError(t, err)
	assert.Equal(t, ezclient.EventCompleted, done.Type)
	assert.True(t, done.FromStatus)

	// Self-hosted deliveries are not signed: accept them on an unsigned
	// receiver.
	plain, err := webhook.NewHandler()
	require.NoError(t, err)
	defer plain.Close()
	srv := httptest.NewServer(plain)
	defer srv.Close()
	res2, err := c.Step().URL(e.api.url("/seq/self2?codes=201")).Webhook(ezclient.Webhook{URL: srv.URL}).Execute(e.ctx())
	require.NoError(t, err)
	r, err := plain.WaitJob(e.ctx(), res2.JobID())
	require.NoError(t, err)
	assert.Equal(t, webhook.FormSelfHosted, r.Form)
	assert.True(t, r.Succeeded)
	assert.Equal(t, 201, r.StatusCode)

	_, err = c.Step().URL(e.api.url("/seq/self3?codes=200")).Regions(ezclient.RegionLAX).
		Webhook(ezclient.Webhook{URL: srv.URL}).Execute(e.ctx())
	assert.ErrorIs(t, err, ezclient.ErrUnsupported, "regions cannot travel to a self-hosted engine")
}
