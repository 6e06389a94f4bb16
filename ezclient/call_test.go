package ezclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/internal/testnet"
)

const fxSubmitReply = `{"job_id":"job_1763674210055_853341","status":"queued","idempotent_key":"hash:abc/def","queued_at":1763674210055,"estimated_processing_time":1200}`

func fxJob() *Job {
	return &Job{URL: "https://api.example.com/endpoint", Method: "post", Body: `{"hello":"world"}`,
		Webhooks: []Webhook{{URL: "https://your-app.com/webhook"}}}
}

func TestCloudEnvelope(t *testing.T) {
	srv := fxNewServer(t, fxForward(201, fxSubmitReply))
	c, _ := fxCloud(t, srv, WithUserAgent("app/1"), WithHeader("X-Extra", "yes"))
	job := fxJob()
	sub, err := c.Submit(context.Background(), job)
	require.NoError(t, err)

	reqs := srv.requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/api/v1/proxy", r.Path)
	assert.Equal(t, "Bearer "+fxKey, r.Header.Get("Authorization"))
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, "app/1 ezthrottle-go/"+Version, r.Header.Get("User-Agent"))
	assert.Equal(t, "yes", r.Header.Get("X-Extra"))

	// The envelope, key by key, and the job double-encoded as a JSON string.
	var env map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &env))
	assert.Equal(t, map[string]any{
		"scope":       "customer",
		"metric_name": "",
		"target_url":  fxEngineURL + "/api/v1/jobs",
		"method":      "POST",
		"headers":     map[string]any{"Content-Type": "application/json"},
		"body":        `{"url":"https://api.example.com/endpoint","method":"POST","body":"{\"hello\":\"world\"}","webhooks":[{"url":"https://your-app.com/webhook"}]}`,
	}, env)
	assert.NotContains(t, env["body"], "idempotent_key", "HASH strategy on Cloud: the engine derives the key")

	assert.Equal(t, &Submission{
		JobID: "job_1763674210055_853341", Status: StatusQueued, IdempotentKey: "hash:abc/def",
		QueuedAt: time.UnixMilli(1763674210055), EstimatedProcessingTime: 1200,
	}, sub)
}

// TestCloudReplies covers every proxy reply shape of protocol §1.1 and the
// engine replies forwarded inside it (§1.3).
func TestCloudReplies(t *testing.T) {
	now := time.Date(2025, 11, 20, 12, 0, 0, 0, time.UTC)
	type check func(t *testing.T, sub *Submission, err error)
	isErr := func(sentinel error, status int, msgPart string) check {
		return func(t *testing.T, sub *Submission, err error) {
			t.Helper()
			require.Error(t, err)
			assert.Nil(t, sub)
			assert.ErrorIs(t, err, sentinel)
			if msgPart != "" {
				assert.Contains(t, err.Error(), msgPart)
			}
			var ae *AuthError
			var re *RateLimitError
			var ee *EngineError
			switch {
			case errors.As(err, &ae):
				assert.Equal(t, status, ae.StatusCode)
			case errors.As(err, &re):
				assert.Equal(t, status, re.StatusCode)
			case errors.As(err, &ee):
				assert.Equal(t, status, ee.StatusCode)
			default:
				t.Fatalf("untyped error %T: %v", err, err)
			}
		}
	}
	rate := func(after time.Duration, msgPart string) check {
		return func(t *testing.T, sub *Submission, err error) {
			t.Helper()
			isErr(ErrRateLimited, 429, msgPart)(t, sub, err)
			var re *RateLimitError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, after, re.RetryAfter)
			if after > 0 {
				assert.True(t, now.Add(after).Equal(re.RetryAt), "RetryAt %v", re.RetryAt)
			} else {
				assert.True(t, re.RetryAt.IsZero())
			}
		}
	}
	proxyErr := func(status int, msgPart string, sentinel error) check {
		return func(t *testing.T, sub *Submission, err error) {
			t.Helper()
			isErr(sentinel, status, msgPart)(t, sub, err)
			var ee *EngineError
			require.ErrorAs(t, err, &ee)
			assert.True(t, ee.Proxy, "the proxy's own error")
		}
	}
	engineErr := func(status int, msgPart string, sentinel error) check {
		return func(t *testing.T, sub *Submission, err error) {
			t.Helper()
			isErr(sentinel, status, msgPart)(t, sub, err)
			var ee *EngineError
			require.ErrorAs(t, err, &ee)
			assert.False(t, ee.Proxy, "the engine's error, forwarded")
			assert.NotEmpty(t, ee.Body)
		}
	}
	tests := []struct {
		name     string
		reply    fxReply
		attempts int // requests the proxy sees (4 = retried to exhaustion)
		check    check
	}{
		{"engine 201 new job", fxForward(201, fxSubmitReply), 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.False(t, sub.Duplicate)
			assert.Equal(t, StatusQueued, sub.Status)
		}},
		{"engine 200 duplicate", fxForward(200, fxSubmitReply), 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.True(t, sub.Duplicate)
			assert.Equal(t, "job_1763674210055_853341", sub.JobID)
		}},
		{"racing", fxForward(201, `{"job_id":"j2","status":"racing","idempotent_key":"k:1/2","queued_at":1763674210055}`), 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.Equal(t, StatusRacing, sub.Status)
			assert.Equal(t, "k:1/2", sub.IdempotentKey)
		}},
		{"forwarded body as an object", fxReply{status: 200, body: `{"status":"allowed","forwarded_response":{"status_code":201,"body":{"job_id":"j3","status":"queued"}}}`}, 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.Equal(t, "j3", sub.JobID)
		}},
		{"status_code written as a float", fxReply{status: 200, body: `{"status":"allowed","forwarded_response":{"status_code":201.0,"body":"{\"job_id\":\"j4\"}"}}`}, 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.Equal(t, "j4", sub.JobID)
			assert.Equal(t, StatusQueued, sub.Status, "status defaults to queued")
		}},
		{"plan limit 429 retry_after", fxReply{status: 429, body: `{"status":"denied","error":"Plan limit exceeded","retry_after":3600,"breach_status":{}}`}, 1, rate(time.Hour, "Plan limit exceeded")},
		{"429 retry_after_seconds", fxReply{status: 429, body: `{"error":"Too Many Requests","retry_after_seconds":300}`}, 1, rate(5*time.Minute, "Too Many Requests")},
		{"429 retry_after as a string", fxReply{status: 429, body: `{"error":"slow down","retry_after":"7"}`}, 1, rate(7*time.Second, "slow down")},
		{"429 without any hint", fxReply{status: 429, body: `{"status":"denied","error":"Plan limit exceeded"}`}, 1, rate(0, "Plan limit exceeded")},
		{"429 Retry-After seconds header wins", fxReply{status: 429, header: map[string]string{"Retry-After": "120"}, body: `{"retry_after":3600}`}, 1, rate(2*time.Minute, "")},
		{"429 Retry-After HTTP-date header wins", fxReply{status: 429, header: map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, body: `{"retry_after":3600}`}, 1, rate(90*time.Second, "")},
		{"429 garbage Retry-After falls back to the body", fxReply{status: 429, header: map[string]string{"Retry-After": "soon"}, body: `{"retry_after":60}`}, 1, rate(time.Minute, "")},
		{"429 negative and absurd values ignored", fxReply{status: 429, header: map[string]string{"Retry-After": "-5"}, body: `{"retry_after":-1,"retry_after_seconds":99999999999}`}, 1, rate(0, "")},
		{"429 retry_at unix seconds", fxReply{status: 429, body: fmt.Sprintf(`{"error":"x","retry_at":%d}`, now.Add(time.Minute).Unix())}, 1, rate(time.Minute, "")},
		{"429 retry_at unix ms", fxReply{status: 429, body: fmt.Sprintf(`{"error":"x","retry_at":%d}`, now.Add(2*time.Minute).UnixMilli())}, 1, rate(2*time.Minute, "")},
		{"429 retry_at RFC 3339", fxReply{status: 429, body: fmt.Sprintf(`{"error":"x","retry_at":%q}`, now.Add(3*time.Minute).Format(time.RFC3339))}, 1, rate(3*time.Minute, "")},
		{"429 plain text", fxReply{status: 429, body: `Too Many Requests`}, 1, rate(0, "Too Many Requests")},
		{"200 verdict denied with retry_after", fxReply{status: 200, body: `{"status":"denied","error":"Plan limit exceeded","retry_after":60}`}, 1, rate(time.Minute, "Plan limit exceeded")},
		{"200 verdict denied without hint", fxReply{status: 200, body: `{"status":"denied","error":"Feature not in plan"}`}, 1, isErr(ErrDenied, 403, "Feature not in plan")},
		{"200 verdict missing", fxReply{status: 200, body: `{"forwarded_response":{"status_code":201,"body":"{}"}}`}, 1, isErr(ErrDenied, 403, "proxy verdict")},
		{"400 bad envelope", fxReply{status: 400, body: `{"error":"Bad Request","message":"missing target_url"}`}, 1, proxyErr(400, "Bad Request: missing target_url", ErrValidation)},
		{"401 invalid key", fxReply{status: 401, body: `{"error":"Unauthorized","message":"Invalid API key"}`}, 1, isErr(ErrUnauthorized, 401, "Invalid API key")},
		{"403 wrong key kind", fxReply{status: 403, body: `{"error":"Forbidden","message":"business key required"}`}, 1, isErr(ErrDenied, 403, "business key required")},
		{"413 envelope too large", fxReply{status: 413, body: `{"error":"Payload Too Large"}`}, 1, proxyErr(413, "Payload Too Large", ErrValidation)},
		{"500 plain text is retried", fxReply{status: 500, body: "Internal Server Error"}, 4, proxyErr(500, "Internal Server Error", ErrEngine)},
		{"502 Proxy Error is retried", fxReply{status: 502, body: "Proxy Error"}, 4, func(t *testing.T, sub *Submission, err error) {
			proxyErr(502, "Proxy Error", ErrEngine)(t, sub, err)
			assert.True(t, IsUnreachable(err))
		}},
		{"forwarded 500 is retried", fxForward(500, `{"error":"db down"}`), 4, engineErr(500, "db down", ErrEngine)},
		{"forwarded 400", fxForward(400, `{"error":"url is required"}`), 1, engineErr(400, "url is required", ErrValidation)},
		{"forwarded 422 plain", fxForward(422, `unprocessable`), 1, engineErr(422, "unprocessable", ErrValidation)},
		{"forwarded 404", fxForward(404, `{"error":"not found"}`), 1, engineErr(404, "not found", ErrNotFound)},
		{"forwarded 202 is not a submission", fxForward(202, `{"job_id":"x"}`), 1, engineErr(202, "job_id", ErrEngine)},
		{"forwarded 429", fxForward(429, `{"error":"admission rejected","retry_after":5}`), 1, rate(5*time.Second, "admission rejected")},
		{"forwarded 401", fxForward(401, `{"error":"bad customer"}`), 1, isErr(ErrUnauthorized, 401, "bad customer")},
		{"malformed proxy JSON", fxReply{status: 200, body: `<html>oops</html>`}, 1, proxyErr(200, "malformed proxy reply", ErrEngine)},
		{"no forwarded_response", fxReply{status: 200, body: `{"status":"allowed"}`}, 1, proxyErr(200, "without forwarded_response", ErrEngine)},
		{"forwarded body not a string", fxReply{status: 200, body: `{"status":"allowed","forwarded_response":{"status_code":201,"body":42}}`}, 1, proxyErr(200, "forwarded_response.body", ErrEngine)},
		{"forwarded status not a number", fxReply{status: 200, body: `{"status":"allowed","forwarded_response":{"status_code":"abc","body":"{}"}}`}, 1, proxyErr(200, "status_code", ErrEngine)},
		{"forwarded status out of range", fxReply{status: 200, body: `{"status":"allowed","forwarded_response":{"status_code":999,"body":"{}"}}`}, 1, proxyErr(200, "999", ErrEngine)},
		{"submission reply not JSON", fxForward(201, `created!`), 1, engineErr(201, "malformed submission reply", ErrEngine)},
		{"submission reply without job_id", fxForward(201, `{"status":"queued"}`), 1, engineErr(201, "without job_id", ErrEngine)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fxNewServer(t, tt.reply)
			c, sl := fxCloud(t, srv, withNow(func() time.Time { return now }))
			sub, err := c.Submit(context.Background(), fxJob())
			tt.check(t, sub, err)
			assert.Equal(t, tt.attempts, len(srv.requests()), "attempts")
			assert.Len(t, sl.got(), tt.attempts-1, "one backoff wait between attempts")
			if err != nil {
				fxNoKey(t, "error", err.Error())
			}
		})
	}
}

func TestRetryThenSuccessReusesTheSameBody(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first fxReply
	}{
		{"proxy 502", fxReply{status: 502, body: "Proxy Error"}},
		{"proxy 503", fxReply{status: 503, body: "busy"}},
		{"engine 503 forwarded", fxForward(503, `{"error":"overloaded"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := fxNewServer(t, tc.first, tc.first, fxForward(201, fxSubmitReply))
			c, sl := fxCloud(t, srv)
			job := fxJob()
			job.IdempotentKey = "order-42"
			sub, err := c.Submit(context.Background(), job)
			require.NoError(t, err)
			assert.Equal(t, "job_1763674210055_853341", sub.JobID)
			reqs := srv.requests()
			require.Len(t, reqs, 3)
			for _, r := range reqs[1:] {
				assert.Equal(t, string(reqs[0].Body), string(r.Body), "identical envelope on every attempt")
			}
			var inner map[string]any
			require.NoError(t, json.Unmarshal([]byte(reqs[2].Env.Body), &inner))
			assert.Equal(t, "order-42", inner["idempotent_key"])
			assert.Equal(t, []time.Duration{200 * time.Millisecond, 400 * time.Millisecond}, sl.got())
		})
	}
}

func TestRetryBackoffIsBoundedAndCapped(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 500, body: "boom"})
	c, sl := fxCloud(t, srv, WithRetry(6, 100*time.Millisecond, 300*time.Millisecond))
	_, err := c.Submit(context.Background(), fxJob())
	require.Error(t, err)
	assert.Len(t, srv.requests(), 6)
	assert.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}, sl.got())

	srv2 := fxNewServer(t, fxReply{status: 500, body: "boom"})
	c2, sl2 := fxCloud(t, srv2, WithRetry(1, 0, 0))
	_, err = c2.Submit(context.Background(), fxJob())
	require.Error(t, err)
	assert.Len(t, srv2.requests(), 1, "WithRetry(1, ...) disables retries")
	assert.Empty(t, sl2.got())
}

func TestRetryUsesJitter(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 500, body: "boom"})
	c, sl := fxCloud(t, srv, withJitter(func(d time.Duration) time.Duration { return d / 2 }))
	_, err := c.Submit(context.Background(), fxJob())
	require.Error(t, err)
	assert.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, sl.got())
}

func TestNever4xxRetried(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 409, 413, 422, 429} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			srv := fxNewServer(t, fxReply{status: status, body: `{"error":"no"}`})
			c, sl := fxCloud(t, srv)
			_, err := c.Submit(context.Background(), fxJob())
			require.Error(t, err)
			assert.Len(t, srv.requests(), 1)
			assert.Empty(t, sl.got())

			srv2 := fxNewServer(t, fxForward(status, `{"error":"no"}`))
			c2, _ := fxCloud(t, srv2)
			_, err = c2.Submit(context.Background(), fxJob())
			require.Error(t, err)
			assert.Len(t, srv2.requests(), 1, "forwarded %d", status)
		})
	}
}

func TestNetworkErrorsAreRetriedAndUnreachable(t *testing.T) {
	addr := testnet.RefusedAddr(t) // connection refused
	sl := &fxSleeper{}
	logger, logs := fxLogs()
	c, err := New(withGetenv(fxNoEnv), WithAPIKey(fxKey), WithProxyURL("http://"+addr), WithEngineURL(fxEngineURL),
		withSleep(sl.sleep), withJitter(fxNoJitter), WithLogger(logger))
	require.NoError(t, err)
	_, err = c.Submit(context.Background(), fxJob())
	require.Error(t, err)
	assert.True(t, IsUnreachable(err))
	assert.NotErrorIs(t, err, ErrEngine)
	var opErr *net.OpError
	assert.ErrorAs(t, err, &opErr, "the transport's error is kept for inspection")
	assert.Len(t, sl.got(), 3)
	fxNoKey(t, "error", err.Error())
	fxNoKey(t, "logs", logs.String())
	assert.Contains(t, logs.String(), "retrying")

	assert.False(t, IsUnreachable(nil))
	assert.False(t, IsUnreachable(&EngineError{StatusCode: 502}), "an engine 502 is an answer")
	assert.True(t, IsUnreachable(fmt.Errorf("wrapped: %w", &EngineError{StatusCode: 502, Proxy: true})))
}

func TestContextCancellation(t *testing.T) {
	t.Run("already cancelled: nothing is sent", func(t *testing.T) {
		srv := fxNewServer(t, fxForward(201, fxSubmitReply))
		c, _ := fxCloud(t, srv)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Submit(ctx, fxJob())
		assert.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, srv.requests())
	})
	t.Run("during the request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := fxNewServer(t)
		release := make(chan struct{})
		srv.handle = func(int, fxRequest) fxReply {
			cancel()
			<-release
			return fxForward(201, fxSubmitReply)
		}
		defer close(release)
		c, sl := fxCloud(t, srv)
		_, err := c.Submit(ctx, fxJob())
		assert.ErrorIs(t, err, context.Canceled)
		assert.False(t, IsUnreachable(err), "a cancelled call is not an unreachable engine")
		assert.Empty(t, sl.got(), "not retried")
		assert.Len(t, srv.requests(), 1)
	})
	t.Run("during the backoff wait", func(t *testing.T) {
		srv := fxNewServer(t, fxReply{status: 502, body: "Proxy Error"})
		c, sl := fxCloud(t, srv)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sl.hook = func(ctx context.Context, d time.Duration) error {
			cancel()
			return ctx.Err()
		}
		_, err := c.Submit(ctx, fxJob())
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, ErrEngine, "the last failure is kept")
		assert.Len(t, srv.requests(), 1)
	})
	t.Run("cancelled between the wait and the next attempt", func(t *testing.T) {
		srv := fxNewServer(t, fxReply{status: 502, body: "Proxy Error"})
		c, sl := fxCloud(t, srv)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sl.hook = func(context.Context, time.Duration) error { cancel(); return nil }
		_, err := c.Submit(ctx, fxJob())
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, ErrEngine)
		assert.Len(t, srv.requests(), 1)
	})
	t.Run("a wait that would pass the deadline is not started", func(t *testing.T) {
		srv := fxNewServer(t, fxReply{status: 502, body: "Proxy Error"})
		now := time.Now()
		c, sl := fxCloud(t, srv, withNow(func() time.Time { return now }))
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(100*time.Millisecond)) // backoff is 200 ms
		defer cancel()
		_, err := c.Submit(ctx, fxJob())
		assert.ErrorIs(t, err, ErrEngine)
		assert.True(t, IsUnreachable(err))
		assert.Empty(t, sl.got(), "no sleep past the deadline")
		assert.Len(t, srv.requests(), 1)
	})
	t.Run("a wait that fits before the deadline is taken", func(t *testing.T) {
		srv := fxNewServer(t, fxReply{status: 502, body: "Proxy Error"}, fxForward(201, fxSubmitReply))
		now := time.Now()
		c, sl := fxCloud(t, srv, withNow(func() time.Time { return now }))
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(time.Hour))
		defer cancel()
		_, err := c.Submit(ctx, fxJob())
		assert.NoError(t, err)
		assert.Len(t, sl.got(), 1)
	})
}

// TestAPIKeyNeverLeaks runs failure paths whose replies echo the API key
// and checks every error message, typed error field and log line.
func TestAPIKeyNeverLeaks(t *testing.T) {
	echo := "key " + fxKey + " is invalid"
	replies := []fxReply{
		{status: 401, body: `{"error":"Unauthorized","message":"` + echo + `"}`},
		{status: 403, body: echo},
		{status: 429, body: `{"error":"` + echo + `","retry_after":1}`},
		{status: 400, body: `{"error":"` + echo + `"}`},
		{status: 500, body: echo},
		{status: 502, body: echo},
		{status: 200, body: `{"status":"denied","error":"` + echo + `"}`},
		{status: 200, body: `not json ` + echo},
		fxForward(500, echo),
		fxForward(400, `{"error":"`+echo+`"}`),
		fxForward(201, `{"status":"queued","note":"`+echo+`"}`),
		// Long preambles: a truncated message must not keep part of the key.
		{status: 500, body: strings.Repeat("x", 500) + fxKey},
		{status: 400, body: `{"error":"` + strings.Repeat("y", 495) + fxKey + `"}`},
		fxForward(500, strings.Repeat("z", maxErrorBody-8)+fxKey),
	}
	for i, rep := range replies {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			srv := fxNewServer(t, rep)
			logger, logs := fxLogs()
			c, _ := fxCloud(t, srv, WithLogger(logger))
			_, err := c.Submit(context.Background(), fxJob())
			require.Error(t, err)
			fxNoKey(t, "Error()", err.Error())
			fxNoKey(t, "%+v", fmt.Sprintf("%+v", err))
			fxNoKey(t, "%#v", fmt.Sprintf("%#v", err))
			var ee *EngineError
			if errors.As(err, &ee) {
				fxNoKey(t, "EngineError.Body", string(ee.Body))
			}
			fxNoKey(t, "logs", logs.String())
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 1.5 ", 1500 * time.Millisecond, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{"99999999999", 0, false},
		{now.Add(time.Minute).Format(http.TimeFormat), time.Minute, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{now.Add(30 * 24 * time.Hour).Format(http.TimeFormat), 0, false},
		{now.Add(time.Minute).Format(time.RFC850), time.Minute, true},
		{now.Add(time.Minute).Format(time.ANSIC), time.Minute, true},
		{"Wed, 01 Jan 2025 00:01:00 UTC", time.Minute, true},
		{"Tue, 31 Dec 2024 19:01:00 EST", 0, false}, // Go would read EST as +0000: never trusted
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		assert.Equal(t, tt.ok, ok, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
	}
}

func TestRetryHintBody(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &Client{now: func() time.Time { return now }}
	tests := []struct {
		body string
		want time.Duration
		ok   bool
	}{
		{`{"retry_after":3600}`, time.Hour, true},
		{`{"retry_after":"30"}`, 30 * time.Second, true},
		{`{"retry_after_seconds":300}`, 5 * time.Minute, true},
		{`{"retry_after":null,"retry_after_seconds":2}`, 2 * time.Second, true},
		{`{"retry_after":true,"retry_after_seconds":{"x":1}}`, 0, false},
		{`{"retry_after":"garbage","retry_at":"garbage"}`, 0, false},
		{`{"retry_at":"NaN"}`, 0, false},
		{`{"retry_at":-5}`, 0, false},
		{`{"retry_at":1e300}`, 0, false},
		{fmt.Sprintf(`{"retry_at":%d}`, now.Add(-time.Minute).Unix()), 0, true},
		{fmt.Sprintf(`{"retry_at":"%d"}`, now.Add(time.Minute).UnixMilli()), time.Minute, true},
		{fmt.Sprintf(`{"retry_at":%q}`, now.Add(time.Minute).Format(http.TimeFormat)), time.Minute, true},
		{fmt.Sprintf(`{"retry_at":%d}`, now.Add(30*24*time.Hour).Unix()), 0, false},
	}
	for _, tt := range tests {
		ef, ok := decodeErrorFields([]byte(tt.body))
		require.True(t, ok, tt.body)
		d, _, ok := c.retryHint(nil, ef)
		assert.Equal(t, tt.ok, ok, tt.body)
		assert.Equal(t, tt.want, d, tt.body)
	}
}

func TestLooseHelpers(t *testing.T) {
	assert.Equal(t, "a", looseString(json.RawMessage(`"a"`)))
	assert.Equal(t, "12", looseString(json.RawMessage(`12`)))
	assert.Equal(t, "", looseString(json.RawMessage(`null`)))
	assert.Equal(t, "inner", looseString(json.RawMessage(`{"message":"inner","code":1}`)))
	assert.Equal(t, "e", looseString(json.RawMessage(`{"error":"e"}`)))
	assert.Equal(t, `{"code":1}`, looseString(json.RawMessage(`{"code":1}`)))
	assert.Equal(t, `[1]`, looseString(json.RawMessage(`[1]`)))
	n, ok := looseInt(json.RawMessage(`"201"`))
	assert.True(t, ok)
	assert.Equal(t, 201, n)
	_, ok = looseInt(json.RawMessage(`2.5`))
	assert.False(t, ok)
	_, ok = looseInt(json.RawMessage(`1e30`))
	assert.False(t, ok)
	assert.Equal(t, "a: b", joinMsg("a", "b"))
	assert.Equal(t, "a", joinMsg("a", "a"))
	assert.Equal(t, "b", joinMsg(" ", "b"))
}

func TestErrorMessages(t *testing.T) {
	assert.Equal(t, "ezthrottle: rate limited: Plan limit exceeded (retry after 1h0m0s)", (&RateLimitError{Message: "Plan limit exceeded", RetryAfter: time.Hour}).Error())
	assert.Equal(t, "ezthrottle: rate limited", (&RateLimitError{}).Error())
	assert.Equal(t, "ezthrottle: unauthorized (HTTP 401): Invalid API key", (&AuthError{StatusCode: 401, Message: "Invalid API key"}).Error())
	assert.Equal(t, "ezthrottle: denied (HTTP 403)", (&AuthError{StatusCode: 403}).Error())
	assert.Equal(t, "ezthrottle: proxy error (HTTP 502): Proxy Error", (&EngineError{StatusCode: 502, Proxy: true, Message: "Proxy Error"}).Error())
	assert.Equal(t, "ezthrottle: engine error (HTTP 500)", (&EngineError{StatusCode: 500}).Error())
	assert.True(t, (&EngineError{StatusCode: 503}).Temporary())
	assert.False(t, (&EngineError{StatusCode: 400}).Temporary())
	assert.Equal(t, `ezthrottle: field "regions" not supported: why`, unsupported("regions", "why").Error())
	assert.NotErrorIs(t, &AuthError{StatusCode: 401}, ErrDenied)
	assert.NotErrorIs(t, &AuthError{StatusCode: 403}, ErrUnauthorized)
	assert.NotErrorIs(t, &EngineError{StatusCode: 500}, ErrNotFound)
	assert.NotErrorIs(t, &EngineError{StatusCode: 500}, ErrValidation)
}

func TestOversizedReply(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 200, body: strings.Repeat("x", maxReplyBody+10)})
	c, _ := fxCloud(t, srv)
	_, err := c.Submit(context.Background(), fxJob())
	var ee *EngineError
	require.ErrorAs(t, err, &ee)
	assert.Contains(t, ee.Message, "larger than 4 MiB")
	assert.LessOrEqual(t, len(ee.Body), maxErrorBody)
}
