package ezlocal

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

func dashGet(t *testing.T, url string, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func TestDashboardRoutes(t *testing.T) {
	e, _ := startEngine(t)
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/ui/app.js"`},
		{"/ui/", "text/html; charset=utf-8", `<main id="main">`},
		{"/ui/jobs/job_1_1", "text/html; charset=utf-8", `<main id="main">`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "textContent"},
		{"/ui/app.css", "text/css; charset=utf-8", "--accent"},
		{"/ui/api/overview", "application/json", `"jobs":[],"destinations":[]`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := dashGet(t, e.URL()+tc.path, "")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, tc.ctype, resp.Header.Get("Content-Type"))
			assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
			assert.Contains(t, string(body), tc.contains)
			if strings.HasPrefix(tc.ctype, "text/") {
				csp := resp.Header.Get("Content-Security-Policy")
				assert.Contains(t, csp, "script-src 'self'")
				assert.NotContains(t, csp, "unsafe-inline")
			}
		})
	}
	t.Run("the page never builds markup from data", func(t *testing.T) {
		_, js := dashGet(t, e.URL()+"/ui/app.js", "")
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
			assert.NotContains(t, string(js), bad)
		}
	})
	t.Run("API routes are unchanged", func(t *testing.T) {
		resp, _ := dashGet(t, e.URL()+"/health", "")
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		resp, _ = dashGet(t, e.URL()+"/nope", "")
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		resp, _ = dashGet(t, e.URL()+"/ui/api/jobs/nope", "")
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		req, _ := http.NewRequest("POST", e.URL()+"/", strings.NewReader("{}"))
		r, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		r.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, r.StatusCode)
		// Submitting still works.
		info := submitWait(t, e, &ezclient.Job{URL: okServer(t).URL})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
	})
}

func TestDashboardOverviewAndJob(t *testing.T) {
	e, _ := startEngine(t)
	require.NoError(t, e.SetWebhookSecrets(e.CustomerID(), "whsec_primary_secret_0123456789", ""))
	ok := okServer(t)
	bad := server(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
	hook := newReceiver(t, func(n int) int {
		if n == 1 {
			return http.StatusUnauthorized
		}
		return http.StatusOK
	})
	hostile := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	hostileURL := `<script>alert(1)</script>`
	done := submitWait(t, e, &ezclient.Job{
		URL: ok.URL + "/p?q=" + hostileURL, Method: "POST", Body: hostile,
		Headers:  map[string]string{"Authorization": "Bearer sk_live_secret", "X-Api-Token": "t0k", "X-Trace": hostile},
		Webhooks: []ezclient.Webhook{{URL: hook.URL}, {URL: hook.URL + "/audit", HasQuorumVote: ezclient.Bool(false)}},
	})
	require.Equal(t, ezclient.StatusCompleted, done.Status)
	failed := submitWait(t, e, &ezclient.Job{URL: bad.URL})
	require.Equal(t, ezclient.StatusFailed, failed.Status)

	var ov dashOverview
	resp, body := dashGet(t, e.URL()+"/ui/api/overview", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.Unmarshal(body, &ov))
	assert.Equal(t, 2, ov.Total)
	assert.Equal(t, 1, ov.Counts[ezclient.StatusCompleted])
	assert.Equal(t, 1, ov.Counts[ezclient.StatusFailed])
	require.Len(t, ov.Jobs, 2)
	assert.Equal(t, failed.ID, ov.Jobs[0].ID, "newest first")
	assert.Equal(t, done.ID, ov.Jobs[1].ID)
	assert.Equal(t, []string{"iad"}, ov.Jobs[1].Regions[:1])
	assert.Equal(t, 1, ov.Jobs[1].Attempts)
	assert.Equal(t, 2, ov.Jobs[1].Webhooks)
	assert.Equal(t, 2, ov.Jobs[1].Delivered)
	assert.Contains(t, string(body), `<script>`, "JSON carries the data as is; the page inserts it as text")
	require.NotEmpty(t, ov.Destinations)
	require.NotEmpty(t, ov.Regions)

	resp, body = dashGet(t, e.URL()+"/ui/api/overview?status=failed", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.Unmarshal(body, &ov))
	require.Len(t, ov.Jobs, 1)
	assert.Equal(t, failed.ID, ov.Jobs[0].ID)
	assert.Equal(t, 2, ov.Total)

	var d struct {
		ID   string `json:"id"`
		Spec struct {
			URL     string            `json:"url"`
			Body    string            `json:"body"`
			Headers map[string]string `json:"headers"`
		} `json:"spec"`
		Webhooks []dashDelivery `json:"webhook_deliveries"`
		Quorum   *dashQuorum    `json:"quorum"`
		Events   []dashEvent    `json:"events"`
		Result   *dashResult    `json:"result"`
	}
	resp, body = dashGet(t, e.URL()+"/ui/api/jobs/"+done.ID, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(t, json.Unmarshal(body, &d))
	assert.Equal(t, done.ID, d.ID)
	assert.Equal(t, hostile, d.Spec.Body)
	assert.Contains(t, d.Spec.URL, hostileURL)
	assert.Equal(t, "[redacted]", d.Spec.Headers["Authorization"])
	assert.Equal(t, "[redacted]", d.Spec.Headers["X-Api-Token"])
	assert.Equal(t, hostile, d.Spec.Headers["X-Trace"])
	assert.NotContains(t, string(body), "sk_live_secret")
	require.NotNil(t, d.Result)
	assert.Equal(t, 200, d.Result.StatusCode)

	require.Len(t, d.Webhooks, 2)
	main := d.Webhooks[0]
	assert.Equal(t, "delivered", main.Outcome)
	assert.True(t, main.Votes)
	require.NotEmpty(t, main.Attempts)
	for _, a := range main.Attempts {
		assert.True(t, a.Signed, "the customer has a secret: every delivery is signed")
	}
	statuses := []int{}
	for _, wh := range d.Webhooks {
		for _, a := range wh.Attempts {
			statuses = append(statuses, a.StatusCode)
		}
	}
	assert.Contains(t, statuses, http.StatusUnauthorized, "the rejected delivery and its retry are listed")
	assert.False(t, d.Webhooks[1].Votes)
	require.NotNil(t, d.Quorum)
	assert.True(t, d.Quorum.Reached)
	assert.Equal(t, 1, d.Quorum.Voting)
	assert.Equal(t, 1, d.Quorum.Delivered)
	assert.NotEmpty(t, d.Events)
}

func TestSensitiveHeaders(t *testing.T) {
	for name, want := range map[string]bool{
		"Authorization": true, "authorization": true, "Proxy-Authorization": true, "Cookie": true,
		"X-Api-Key": true, "X-Auth-Token": true, "Stripe-Signature": true, "X-Client-Secret": true,
		"Content-Type": false, "Idempotency-Key": false, "X-Request-Id": false, "Accept": false,
	} {
		assert.Equal(t, want, sensitiveHeader(name), name)
	}
}

// A destination's row counts its requests in flight per region and the
// jobs waiting for a turn.
func TestDashboardDestinationQueue(t *testing.T) {
	e, _ := startEngine(t, WithDefaultPace(100, 1))
	gate := make(chan struct{})
	started := make(chan struct{}, 8)
	dest := server(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-gate
	})
	defer close(gate)
	c := cloudClient(t, e)
	for i := range 3 {
		_, err := c.Submit(t.Context(), &ezclient.Job{URL: dest.URL + "/q", IdempotentKey: "k" + string(rune('a'+i))})
		require.NoError(t, err)
	}
	<-started
	host := strings.TrimPrefix(dest.URL, "http://")
	var d dashDest
	require.Eventually(t, func() bool {
		var ov dashOverview
		_, body := dashGet(t, e.URL()+"/ui/api/overview", "")
		require.NoError(t, json.Unmarshal(body, &ov))
		for _, x := range ov.Destinations {
			if x.Host == host {
				d = x
			}
		}
		return d.InFlight == 1 && d.Queued == 2
	}, 10*time.Second, 5*time.Millisecond, "destination %+v", d)
	assert.Equal(t, 1, d.MaxConcurrent)
	require.Len(t, d.Lanes, 1)
	assert.Equal(t, "iad", d.Lanes[0].Region)
	assert.Equal(t, 1, d.Lanes[0].InFlight)
}
