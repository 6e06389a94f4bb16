package ezlocal

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

func TestProxyAuth(t *testing.T) {
	e, _ := startEngine(t, WithAPIKey("key_one", "cus_1"), WithAPIKey("key_two", "cus_2"))
	assert.Equal(t, "key_one", e.APIKey())
	assert.Equal(t, "cus_1", e.CustomerID())
	dest := okServer(t)
	env := envelope(e, "POST", "/api/v1/jobs", `{"url":"`+dest.URL+`","method":"GET"}`)
	for _, tc := range []struct {
		name, header string
		want         int
	}{
		{"missing", "", http.StatusUnauthorized},
		{"wrong key", "Bearer nope", http.StatusUnauthorized},
		{"default key no longer accepted", "Bearer " + DefaultAPIKey, http.StatusUnauthorized},
		{"not bearer", "Basic a2V5X29uZQ==", http.StatusUnauthorized},
		{"first key", "Bearer key_one", http.StatusOK},
		{"second key", "bearer key_two", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := proxyCall(t, e, tc.header, env)
			require.Equal(t, tc.want, code, "%v", m)
			if code == http.StatusUnauthorized {
				assert.Equal(t, map[string]any{"error": "Unauthorized", "message": "Invalid API key"}, m)
			}
		})
	}
	require.NoError(t, e.WaitIdle(context.Background()))
	// Each customer got its own job (HASH keys are per customer).
	jobs := e.Jobs()
	require.Len(t, jobs, 2)
	assert.NotEqual(t, jobs[0].IdempotentKey, jobs[1].IdempotentKey)
	assert.ElementsMatch(t, []string{"cus_1", "cus_2"}, []string{jobs[0].Customer, jobs[1].Customer})

	// The real client maps 401 to ErrUnauthorized.
	c, err := ezclient.New(ezclient.WithAPIKey("bad"), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()))
	require.NoError(t, err)
	_, err = c.Submit(context.Background(), &ezclient.Job{URL: dest.URL})
	assert.ErrorIs(t, err, ezclient.ErrUnauthorized)
}

func TestProxyBadEnvelope(t *testing.T) {
	e, _ := startEngine(t)
	key := "Bearer " + e.APIKey()
	for _, tc := range []struct {
		name string
		body any
		want string
	}{
		{"not json", "{", "invalid JSON"},
		{"no target", map[string]any{"method": "POST", "body": ""}, "missing target_url"},
		{"relative target", map[string]any{"target_url": "/api/v1/jobs", "method": "POST"}, "not an absolute"},
		{"no method", map[string]any{"target_url": e.URL() + "/api/v1/jobs"}, "missing method"},
		{"bad method", map[string]any{"target_url": e.URL() + "/api/v1/jobs", "method": "FETCH"}, "unknown method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := proxyCall(t, e, key, tc.body)
			assert.Equal(t, http.StatusBadRequest, code)
			assert.Equal(t, "Bad Request", m["error"])
			assert.Contains(t, m["message"], tc.want)
		})
	}
}

func TestProxyEnvelopeTooLarge(t *testing.T) {
	e, _ := startEngine(t, WithBodyLimits(512, 0, 0))
	dest := okServer(t)
	big := `{"url":"` + dest.URL + `","body":"` + strings.Repeat("x", 600) + `"}`
	code, m := proxyCall(t, e, "Bearer "+e.APIKey(), envelope(e, "POST", "/api/v1/jobs", big))
	assert.Equal(t, http.StatusRequestEntityTooLarge, code)
	assert.Equal(t, "Payload Too Large", m["error"])
	assert.Empty(t, e.Jobs(), "nothing may be queued")

	_, err := cloudClient(t, e).Submit(context.Background(), &ezclient.Job{URL: dest.URL, Body: strings.Repeat("x", 600)})
	var ee *ezclient.EngineError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, http.StatusRequestEntityTooLarge, ee.StatusCode)
	assert.ErrorIs(t, err, ezclient.ErrValidation)
}

func TestProxyPlanLimit(t *testing.T) {
	e, _ := startEngine(t, WithPlanLimit(1, time.Hour))
	dest := okServer(t)
	c := cloudClient(t, e)
	_, err := c.Submit(context.Background(), &ezclient.Job{URL: dest.URL})
	require.NoError(t, err)

	code, m := proxyCall(t, e, "Bearer "+e.APIKey(), envelope(e, "POST", "/api/v1/jobs", `{"url":"`+dest.URL+`?2"}`))
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Equal(t, "denied", m["status"])
	assert.Equal(t, "Plan limit exceeded", m["error"])
	assert.EqualValues(t, 3600, m["retry_after"])

	_, err = c.Submit(context.Background(), &ezclient.Job{URL: dest.URL + "?3"})
	var rl *ezclient.RateLimitError
	require.ErrorAs(t, err, &rl)
	assert.Equal(t, time.Hour, rl.RetryAfter)
	require.NoError(t, e.WaitIdle(context.Background()))
	assert.Len(t, e.Jobs(), 1)
}

func TestCloudSubmitWireFormat(t *testing.T) {
	e, clk := startEngine(t)
	dest := okServer(t)
	code, m := proxyCall(t, e, "Bearer "+e.APIKey(),
		envelope(e, "POST", "/api/v1/jobs", `{"url":"`+dest.URL+`/a?b=1&c=2","method":"POST","body":"{\"n\":1}","idempotent_key":"order:42/x"}`))
	require.Equal(t, http.StatusOK, code)
	fr := m["forwarded_response"].(map[string]any)
	assert.Equal(t, map[string]any{"content-type": "application/json"}, fr["headers"])
	assert.Equal(t, map[string]any{}, m["breach_status"])
	status, inner := forwarded(t, m)
	assert.Equal(t, http.StatusCreated, status)
	assert.Regexp(t, regexp.MustCompile(`^job_\d+_\d+$`), inner["job_id"])
	assert.Equal(t, "queued", inner["status"])
	assert.Equal(t, "order:42/x", inner["idempotent_key"])
	assert.EqualValues(t, clk.Now().UnixMilli(), inner["queued_at"])

	// Same key again: 200 with the same job.
	_, m = proxyCall(t, e, "Bearer "+e.APIKey(),
		envelope(e, "POST", "/api/v1/jobs", `{"url":"`+dest.URL+`/other","idempotent_key":"order:42/x"}`))
	status, again := forwarded(t, m)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, inner["job_id"], again["job_id"])

	// Wrong method and unknown target are forwarded errors.
	_, m = proxyCall(t, e, "Bearer "+e.APIKey(), envelope(e, "GET", "/api/v1/jobs", ""))
	status, _ = forwarded(t, m)
	assert.Equal(t, http.StatusMethodNotAllowed, status)
	_, m = proxyCall(t, e, "Bearer "+e.APIKey(), envelope(e, "POST", "/api/v1/nope", ""))
	status, _ = forwarded(t, m)
	assert.Equal(t, http.StatusNotFound, status)
	waitJob(t, e, inner["job_id"].(string))
}

func TestCloudIdempotencyStrategies(t *testing.T) {
	e, _ := startEngine(t, WithAPIKey("k1", "cus_1"), WithAPIKey("k2", "cus_2"))
	dest := okServer(t)
	c := cloudClient(t, e)
	ctx := context.Background()
	job := &ezclient.Job{URL: dest.URL + "/charge", Method: "post", Body: `{"amount":1000}`}

	// HASH (default): the engine derives the key; same request = same job.
	first, err := c.Submit(ctx, job)
	require.NoError(t, err)
	assert.False(t, first.Duplicate)
	assert.Equal(t, HashKey("cus_1", "POST", dest.URL+"/charge", `{"amount":1000}`), first.IdempotentKey)
	second, err := c.Submit(ctx, job)
	require.NoError(t, err)
	assert.True(t, second.Duplicate)
	assert.Equal(t, first.JobID, second.JobID)
	// A different body is a different hash.
	other, err := c.Submit(ctx, &ezclient.Job{URL: dest.URL + "/charge", Method: "POST", Body: `{"amount":2000}`})
	require.NoError(t, err)
	assert.NotEqual(t, first.JobID, other.JobID)
	// Another customer never shares a hash.
	c2, err := ezclient.New(ezclient.WithAPIKey("k2"), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()))
	require.NoError(t, err)
	theirs, err := c2.Submit(ctx, job)
	require.NoError(t, err)
	assert.False(t, theirs.Duplicate)
	assert.NotEqual(t, first.JobID, theirs.JobID)

	// UNIQUE: a fresh key per submission allows repeats.
	u1, err := c.Submit(ctx, &ezclient.Job{URL: dest.URL + "/status", IdempotentKey: ezclient.UniqueKey()})
	require.NoError(t, err)
	u2, err := c.Submit(ctx, &ezclient.Job{URL: dest.URL + "/status", IdempotentKey: ezclient.UniqueKey()})
	require.NoError(t, err)
	assert.NotEqual(t, u1.JobID, u2.JobID)
	assert.False(t, u2.Duplicate)

	// Custom keys win over the content.
	k1, err := c.Submit(ctx, &ezclient.Job{URL: dest.URL + "/process", IdempotentKey: "order-7"})
	require.NoError(t, err)
	k2, err := c.Submit(ctx, &ezclient.Job{URL: dest.URL + "/process?again", IdempotentKey: "order-7"})
	require.NoError(t, err)
	assert.Equal(t, k1.JobID, k2.JobID)
	assert.True(t, k2.Duplicate)
	assert.Equal(t, "order-7", k2.IdempotentKey)

	require.NoError(t, e.WaitIdle(ctx))
	info, ok := e.JobByKey(ezclient.DialectCloud, "cus_1", "order-7")
	require.True(t, ok)
	assert.Equal(t, k1.JobID, info.ID)
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	assert.Len(t, e.Jobs(), 6)
}

func TestCloudValidation(t *testing.T) {
	e, _ := startEngine(t)
	for _, tc := range []struct {
		name, job, field string
	}{
		{"no url", `{"method":"GET"}`, "url"},
		{"bad method", `{"url":"http://x.test","method":"FETCH"}`, "method"},
		{"unknown region", `{"url":"http://x.test","regions":["iad","mars"]}`, "regions"},
		{"unknown webhook region", `{"url":"http://x.test","webhooks":[{"url":"http://h.test","regions":["pluto"]}]}`, "webhooks[0].regions"},
		{"nested", `{"url":"http://x.test","fallback_job":{"url":"ftp://y"}}`, "fallback_job.url"},
		{"bad trigger", `{"url":"http://x.test","fallback_job":{"url":"http://y.test","trigger":{"type":"on_error"}}}`, "fallback_job.trigger.codes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m := proxyCall(t, e, "Bearer "+e.APIKey(), envelope(e, "POST", "/api/v1/jobs", tc.job))
			status, inner := forwarded(t, m)
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Equal(t, tc.field, inner["field"], "%v", inner)
			assert.NotEmpty(t, inner["error"])
		})
	}
	_, m := proxyCall(t, e, "Bearer "+e.APIKey(), envelope(e, "POST", "/api/v1/jobs", `not json`))
	status, inner := forwarded(t, m)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, inner["error"], "invalid job JSON")
	assert.Empty(t, e.Jobs())

	// Through the real client an engine 400 is an EngineError matching
	// ErrValidation (a well-formed code this engine does not simulate).
	_, err := cloudClient(t, e).Submit(context.Background(), &ezclient.Job{URL: "http://x.test", Regions: []ezclient.Region{"xyz"}})
	var ee *ezclient.EngineError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, http.StatusBadRequest, ee.StatusCode)
	assert.Contains(t, ee.Message, `unknown region "xyz"`)
	assert.True(t, errors.Is(err, ezclient.ErrValidation))
}

func TestCloudRacingStatus(t *testing.T) {
	e, _ := startEngine(t)
	dest := okServer(t)
	c := cloudClient(t, e)
	for _, tc := range []struct {
		name string
		job  ezclient.Job
		want ezclient.JobStatus
	}{
		{"single region", ezclient.Job{URL: dest.URL + "/1", Regions: []ezclient.Region{"iad"}}, ezclient.StatusQueued},
		{"race", ezclient.Job{URL: dest.URL + "/2", Regions: []ezclient.Region{"iad", "lax"}}, ezclient.StatusRacing},
		{"fanout", ezclient.Job{URL: dest.URL + "/3", Regions: []ezclient.Region{"iad", "lax"}, ExecutionMode: ezclient.ExecutionFanout}, ezclient.StatusQueued},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := c.Submit(context.Background(), &tc.job)
			require.NoError(t, err)
			assert.Equal(t, tc.want, sub.Status)
			assert.Equal(t, ezclient.StatusCompleted, waitJob(t, e, sub.JobID).Status)
		})
	}
}

func TestWebhookSecretsAPI(t *testing.T) {
	e, _ := startEngine(t)
	key := "Bearer " + e.APIKey()
	call := func(method, body string) (int, map[string]any) {
		_, m := proxyCall(t, e, key, envelope(e, method, "/api/v1/webhook-secrets", body))
		return forwarded(t, m)
	}
	status, m := call("GET", "")
	assert.Equal(t, http.StatusNotFound, status)
	assert.NotEmpty(t, m["error"])

	status, m = call("POST", `{"primary_secret":"short"}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, m["error"], "16 characters")

	status, m = call("POST", `{"primary_secret":"abcdefghijklmnop1234"}`)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "ok", m["status"])
	status, m = call("GET", "")
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, map[string]any{"customer_id": DefaultCustomerID, "primary_secret": "abcd****1234", "secondary_secret": nil, "has_secondary": false}, m)

	status, _ = call("POST", `{"primary_secret":"new-primary-secret-0001","secondary_secret":"abcdefghijklmnop1234"}`)
	assert.Equal(t, http.StatusOK, status)
	_, m = call("GET", "")
	assert.Equal(t, "new-****0001", m["primary_secret"])
	assert.Equal(t, "abcd****1234", m["secondary_secret"])
	assert.Equal(t, true, m["has_secondary"])
	s, ok := e.secretFor(DefaultCustomerID)
	require.True(t, ok)
	assert.Equal(t, "new-primary-secret-0001", s.primary)

	status, m = call("DELETE", "")
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "ok", m["status"])
	status, _ = call("GET", "")
	assert.Equal(t, http.StatusNotFound, status)

	status, _ = call("PATCH", "")
	assert.Equal(t, http.StatusMethodNotAllowed, status)
}

func TestDirectEngineEndpoints(t *testing.T) {
	e, _ := startEngine(t)
	dest := okServer(t)
	req, _ := http.NewRequest(http.MethodPost, e.URL()+"/api/v1/jobs", strings.NewReader(`{"url":"`+dest.URL+`"}`))
	code, _ := doJSON(t, req)
	assert.Equal(t, http.StatusUnauthorized, code)
	req, _ = http.NewRequest(http.MethodPost, e.URL()+"/api/v1/jobs", strings.NewReader(`{"url":"`+dest.URL+`"}`))
	req.Header.Set("Authorization", "Bearer "+e.APIKey())
	code, m := doJSON(t, req)
	assert.Equal(t, http.StatusCreated, code)
	waitJob(t, e, m["job_id"].(string))
}

func TestFailProxyCalls(t *testing.T) {
	e, _ := startEngine(t)
	dest := okServer(t)
	e.FailProxyCalls(2, http.StatusBadGateway)
	c := cloudClient(t, e, ezclient.WithRetry(3, 0, 0))
	sub, err := c.Submit(context.Background(), &ezclient.Job{URL: dest.URL})
	require.NoError(t, err, "the client retries 502s")
	assert.False(t, sub.Duplicate)
	waitJob(t, e, sub.JobID)

	e.FailProxyCalls(1, http.StatusBadGateway)
	_, err = cloudClient(t, e).Submit(context.Background(), &ezclient.Job{URL: dest.URL + "/2"})
	assert.True(t, ezclient.IsUnreachable(err), "%v", err)
	assert.Len(t, e.Jobs(), 1)

	e.FailProxyCalls(1, http.StatusInternalServerError)
	code, _ := proxyCallRaw(t, e)
	assert.Equal(t, http.StatusInternalServerError, code)
}

func proxyCallRaw(t *testing.T, e *Engine) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.URL()+"/api/v1/proxy", strings.NewReader("{}"))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCloudEnvelopeLimitRefusedBeforeSending: a body of quotes under 1 MiB
// whose envelope is over the proxy's limit is refused by the client with
// ErrTooLarge, not sent to get a 413 (issue 13 item 9).
func TestCloudEnvelopeLimitRefusedBeforeSending(t *testing.T) {
	e, _ := startEngine(t)
	_, err := cloudClient(t, e).Submit(context.Background(), &ezclient.Job{URL: "http://x.test", Method: "PUT", Body: strings.Repeat(`"`, 256<<10)})
	require.ErrorIs(t, err, ezclient.ErrTooLarge)
	var ee *ezclient.EngineError
	assert.False(t, errors.As(err, &ee), "refused by the client, not by the proxy's 413")
	assert.Empty(t, e.Jobs())
}
