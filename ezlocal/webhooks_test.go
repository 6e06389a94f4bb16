package ezlocal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

func TestWebhookCloudPayload(t *testing.T) {
	e, _ := startEngine(t)
	dest := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "abc")
		_, _ = w.Write([]byte(`{"result": "data"}`))
	})
	hook := newReceiver(t, nil)
	info := submitWait(t, e, &ezclient.Job{
		URL: dest.URL, IdempotentKey: "custom_key", Metadata: map[string]any{"order_id": "o_1"},
		Webhooks: []ezclient.Webhook{{URL: hook.URL}},
	})
	require.Equal(t, ezclient.StatusCompleted, info.Status)
	got := hook.deliveries()
	require.Len(t, got, 1)
	assert.Equal(t, "application/json", got[0].Header.Get("Content-Type"))
	assert.Empty(t, got[0].Header.Get(webhook.SignatureHeader), "no secret, no signature")

	var p map[string]any
	require.NoError(t, json.Unmarshal(got[0].Body, &p))
	assert.Equal(t, info.ID, p["job_id"])
	assert.Equal(t, "custom_key", p["idempotent_key"])
	assert.Equal(t, "success", p["status"])
	assert.Equal(t, map[string]any{"order_id": "o_1"}, p["metadata"])
	resp := p["response"].(map[string]any)
	assert.EqualValues(t, 200, resp["status_code"])
	assert.Equal(t, `{"result": "data"}`, resp["body"])
	headers := resp["headers"].(map[string]any)
	assert.Equal(t, "application/json", headers["content-type"])
	assert.Equal(t, "abc", headers["x-request-id"])

	// The receiving side of this library decodes it.
	r, err := webhook.Decode(got[0].Body)
	require.NoError(t, err)
	assert.Equal(t, info.ID, r.JobID)
	assert.Equal(t, "custom_key", r.IdempotentKey)

	t.Run("failed job", func(t *testing.T) {
		bad, _ := scripted(t, 404)
		hook := newReceiver(t, nil)
		info := submitWait(t, e, &ezclient.Job{URL: bad, Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
		require.Equal(t, ezclient.StatusFailed, info.Status)
		var p map[string]any
		require.NoError(t, json.Unmarshal(hook.deliveries()[0].Body, &p))
		assert.Equal(t, "failed", p["status"])
		assert.EqualValues(t, 404, p["response"].(map[string]any)["status_code"])
		assert.Equal(t, map[string]any{}, p["metadata"])
		assert.Equal(t, info.IdempotentKey, p["idempotent_key"], "the engine-derived HASH key is echoed")
	})
}

func TestWebhookFanoutAndQuorum(t *testing.T) {
	e, _ := startEngine(t, WithWebhookRetries(time.Millisecond, 2*time.Millisecond))
	dest := okServer(t)
	primary := newReceiver(t, nil)
	analytics := newReceiver(t, nil)
	down := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	notify := newReceiver(t, nil)

	info := submitWait(t, e, &ezclient.Job{
		URL: dest.URL,
		Webhooks: []ezclient.Webhook{
			{URL: primary.URL, HasQuorumVote: ezclient.Bool(true)},
			{URL: analytics.URL, HasQuorumVote: ezclient.Bool(false)},
			{URL: down.URL},
			{URL: notify.URL},
		},
		WebhookQuorum: 2,
	})
	assert.Len(t, primary.deliveries(), 1)
	assert.Len(t, analytics.deliveries(), 1)
	assert.Len(t, notify.deliveries(), 1)
	assert.Len(t, down.deliveries(), 3, "first attempt + two retries")
	assert.True(t, info.QuorumReached)
	require.Len(t, info.EventsOf(EventQuorumReached), 1)
	assert.Len(t, info.EventsOf(EventWebhookDelivered), 3)
	retried := info.EventsOf(EventWebhookRetried)
	require.Len(t, retried, 2)
	assert.Equal(t, []time.Duration{time.Millisecond, 2 * time.Millisecond}, []time.Duration{retried[0].Delay, retried[1].Delay})
	failed := info.EventsOf(EventWebhookFailed)
	require.Len(t, failed, 1)
	assert.Equal(t, down.URL, failed[0].URL)
	assert.Equal(t, 3, failed[0].Attempt)

	t.Run("quorum not reached", func(t *testing.T) {
		ok := newReceiver(t, nil)
		down := newReceiver(t, func(int) int { return http.StatusServiceUnavailable })
		best := newReceiver(t, nil)
		info := submitWait(t, e, &ezclient.Job{URL: dest.URL + "/q", WebhookQuorum: 2, Webhooks: []ezclient.Webhook{
			{URL: ok.URL}, {URL: down.URL}, {URL: best.URL, HasQuorumVote: ezclient.Bool(false)},
		}})
		assert.False(t, info.QuorumReached)
		assert.True(t, info.Has(EventQuorumFailed))
		assert.False(t, info.Has(EventQuorumReached))
	})
}

func TestWebhookDeliveryRetriesAtLeastOnce(t *testing.T) {
	e, clk := startEngine(t) // default schedule 1, 2, 4, 8 s (instant on the test clock)
	dest := okServer(t)
	hook := newReceiver(t, func(n int) int {
		if n < 3 {
			return http.StatusBadGateway
		}
		return http.StatusNoContent
	})
	info := submitWait(t, e, &ezclient.Job{URL: dest.URL, Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
	got := hook.deliveries()
	require.Len(t, got, 3)
	assert.Equal(t, got[0].Body, got[2].Body, "every attempt carries the same payload")
	d := info.EventsOf(EventWebhookDelivered)
	require.Len(t, d, 1)
	assert.Equal(t, 3, d[0].Attempt)
	assert.Equal(t, http.StatusNoContent, d[0].StatusCode)
	r := info.EventsOf(EventWebhookRetried)
	require.Len(t, r, 2)
	assert.Equal(t, 502, r[0].StatusCode)
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second}, []time.Duration{r[0].Delay, r[1].Delay})
	assert.Subset(t, clk.Sleeps(), []time.Duration{time.Second, 2 * time.Second})

	t.Run("gives up after the schedule", func(t *testing.T) {
		hook := newReceiver(t, func(int) int { return http.StatusInternalServerError })
		info := submitWait(t, e, &ezclient.Job{URL: dest.URL + "/x", Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
		assert.Len(t, hook.deliveries(), 5)
		assert.Len(t, info.EventsOf(EventWebhookRetried), 4)
		assert.Len(t, info.EventsOf(EventWebhookFailed), 1)
		assert.Equal(t, ezclient.StatusCompleted, info.Status, "delivery failures do not change the job's outcome")
	})
}

func TestWebhookRegions(t *testing.T) {
	e, _ := startEngine(t)
	dest := okServer(t)
	require.NoError(t, e.SetRegionDown("lax", true))
	hook := newReceiver(t, nil)
	plain := newReceiver(t, nil)
	info := submitWait(t, e, &ezclient.Job{URL: dest.URL, Regions: []ezclient.Region{"iad"}, Webhooks: []ezclient.Webhook{
		{URL: hook.URL, Regions: []ezclient.Region{"lax", "ord"}},
		{URL: plain.URL},
	}})
	require.Len(t, hook.deliveries(), 1)
	assert.Equal(t, "ord", hook.deliveries()[0].Header.Get("X-EZThrottle-Region"), "lax is down")
	assert.Equal(t, "iad", plain.deliveries()[0].Header.Get("X-EZThrottle-Region"), "from the job's region")
	var regions []string
	for _, ev := range info.EventsOf(EventWebhookDelivered) {
		regions = append(regions, ev.Region)
	}
	assert.ElementsMatch(t, []string{"ord", "iad"}, regions)

	t.Run("every webhook region down", func(t *testing.T) {
		e2, _ := startEngine(t, WithWebhookRetries())
		require.NoError(t, e2.SetRegionDown("lax", true))
		hook := newReceiver(t, nil)
		info := submitWait(t, e2, &ezclient.Job{URL: dest.URL, Webhooks: []ezclient.Webhook{{URL: hook.URL, Regions: []ezclient.Region{"lax"}}}})
		assert.Empty(t, hook.deliveries())
		f := info.EventsOf(EventWebhookFailed)
		require.Len(t, f, 1)
		assert.Contains(t, f[0].Detail, "down")
	})
}

func TestWebhookSignature(t *testing.T) {
	const secret = "whsec_primary_0123456789"
	e, clk := startEngine(t, WithWebhookSecrets(DefaultCustomerID, secret, "whsec_secondary_0123456"))
	dest := okServer(t)
	hook := newReceiver(t, nil)
	submitWait(t, e, &ezclient.Job{URL: dest.URL, Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
	got := hook.deliveries()
	require.Len(t, got, 1)
	sig := got[0].Header.Get("X-EZThrottle-Signature")
	require.NotEmpty(t, sig)

	// Checked by hand against protocol §4 ...
	parts := strings.Split(sig, ",")
	require.Len(t, parts, 2)
	require.True(t, strings.HasPrefix(parts[0], "t="))
	require.True(t, strings.HasPrefix(parts[1], "v1="))
	ts := strings.TrimPrefix(parts[0], "t=")
	assert.Equal(t, strconv.FormatInt(clk.Now().Unix(), 10), ts)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "." + string(got[0].Body)))
	assert.Equal(t, hex.EncodeToString(m.Sum(nil)), strings.TrimPrefix(parts[1], "v1="))
	// ... and by the library's verifier.
	require.NoError(t, webhook.Verify(sig, got[0].Body, secret))
	require.Error(t, webhook.Verify(sig, got[0].Body, "some-other-secret-xxxxx"))

	t.Run("secrets set through the API", func(t *testing.T) {
		e2, _ := startEngine(t)
		_, m := proxyCall(t, e2, "Bearer "+e2.APIKey(), envelope(e2, "POST", "/api/v1/webhook-secrets", `{"primary_secret":"`+secret+`"}`))
		status, _ := forwarded(t, m)
		require.Equal(t, http.StatusOK, status)
		hook := newReceiver(t, nil)
		submitWait(t, e2, &ezclient.Job{URL: dest.URL, Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
		require.NoError(t, webhook.Verify(hook.deliveries()[0].Header.Get(webhook.SignatureHeader), hook.deliveries()[0].Body, secret))
	})
}

// The quorum_reached event reports the deliveries counted when the quorum
// was reached: the counter must not be read again outside its lock while
// another voting delivery is counting (a data race, and a wrong count).
// The event hook holds the engine's lock so that the second delivery counts
// between the first one reaching the quorum and its event.
func TestWebhookQuorumCountNoRace(t *testing.T) {
	var n atomic.Int32
	var e *Engine
	first := make(chan struct{})
	e, _ = startEngine(t, WithEventHook(func(_ string, ev Event) {
		if ev.Type != EventWebhookDelivered {
			return
		}
		if n.Add(1) == 1 {
			<-first
			return
		}
		e.mu.Lock()
		close(first)
		time.Sleep(50 * time.Millisecond) // the first delivery reaches the quorum, then waits for e.mu
		go func() {
			time.Sleep(50 * time.Millisecond) // this delivery counts meanwhile
			e.mu.Unlock()
		}()
	}))
	dest := okServer(t)
	info := submitWait(t, e, &ezclient.Job{URL: dest.URL, Webhooks: []ezclient.Webhook{
		{URL: newReceiver(t, nil).URL}, {URL: newReceiver(t, nil).URL},
	}})
	require.Len(t, info.EventsOf(EventQuorumReached), 1)
	assert.True(t, strings.HasPrefix(info.EventsOf(EventQuorumReached)[0].Detail, "1 of 2 "), info.EventsOf(EventQuorumReached)[0].Detail)
}
