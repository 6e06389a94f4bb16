package ezclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSelfHostedSubmitRequest(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 201, body: `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued"}`})
	c, _ := fxSelfHosted(t, srv, WithHeader("X-Aqueduct-Account-Queue", "enabled"))
	job := &Job{URL: "https://api.example.com/x?a=1", Method: "put", Headers: map[string]string{"X-A": "1"}, Body: "payload",
		Webhooks: []Webhook{{URL: "https://app.com/hook"}}}
	sub, err := c.Submit(context.Background(), job)
	require.NoError(t, err)
	wantKey := HashKey("user-1", "PUT", "https://api.example.com/x?a=1", []byte("payload"))
	assert.Equal(t, &Submission{JobID: "0123456789abcdef0123456789abcdef", Status: StatusQueued, IdempotentKey: wantKey}, sub)

	reqs := srv.requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/jobs", r.Path)
	assert.Empty(t, r.Header.Get("Authorization"), "self-hosted engines are unauthenticated: no key to leak")
	assert.Equal(t, "enabled", r.Header.Get("X-Aqueduct-Account-Queue"))
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, `{"user_id":"user-1","idempotent_key":"`+wantKey+`","url":"https://api.example.com/x?a=1","method":"PUT","headers":{"X-A":"1"},"body":"payload","webhook_url":"https://app.com/hook"}`, string(r.Body))
}

func TestSelfHostedSubmitMinimalBody(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 201, body: `{"job_id":"j","status":"queued"}`})
	c, _ := fxSelfHosted(t, srv)
	_, err := c.Submit(context.Background(), &Job{URL: "https://a.b/c", Webhooks: []Webhook{{URL: "https://w.x/y"}}, IdempotentKey: "custom:key/1"})
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(srv.requests()[0].Body, &body))
	assert.Equal(t, map[string]any{"user_id": "user-1", "idempotent_key": "custom:key/1", "url": "https://a.b/c", "method": "GET", "webhook_url": "https://w.x/y"}, body,
		"every required field present, the custom key wins, empty headers and body omitted")
}

func TestSelfHostedReplies(t *testing.T) {
	tests := []struct {
		name     string
		reply    fxReply
		attempts int
		check    func(t *testing.T, sub *Submission, err error)
	}{
		{"201 queued", fxReply{status: 201, body: `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued"}`}, 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.False(t, sub.Duplicate)
			assert.True(t, sub.QueuedAt.IsZero())
		}},
		{"200 duplicate", fxReply{status: 200, body: `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued","duplicate":true}`}, 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.True(t, sub.Duplicate)
		}},
		{"201 with duplicate flag", fxReply{status: 201, body: `{"job_id":"j","status":"queued","duplicate":"true"}`}, 1, func(t *testing.T, sub *Submission, err error) {
			require.NoError(t, err)
			assert.True(t, sub.Duplicate)
		}},
		{"400 reason", fxReply{status: 400, body: `{"error":"webhook_url is required"}`}, 1, func(t *testing.T, sub *Submission, err error) {
			assert.ErrorIs(t, err, ErrValidation)
			assert.ErrorIs(t, err, ErrEngine)
			var ee *EngineError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, 400, ee.StatusCode)
			assert.Equal(t, "webhook_url is required", ee.Message)
			assert.False(t, ee.Proxy)
			assert.JSONEq(t, `{"error":"webhook_url is required"}`, string(ee.Body))
		}},
		{"413 too large", fxReply{status: 413, body: `{"error":"request body too large","limit_bytes":1048576}`}, 1, func(t *testing.T, sub *Submission, err error) {
			assert.ErrorIs(t, err, ErrValidation)
			assert.Contains(t, err.Error(), "request body too large")
			var ee *EngineError
			require.ErrorAs(t, err, &ee)
			assert.Contains(t, string(ee.Body), "1048576")
		}},
		{"429 admission with Retry-After", fxReply{status: 429, header: map[string]string{"Retry-After": "3"}, body: `{"error":"admission rejected: queue full","limit_reason":"queue_depth"}`}, 1, func(t *testing.T, sub *Submission, err error) {
			var re *RateLimitError
			require.ErrorAs(t, err, &re)
			assert.ErrorIs(t, err, ErrRateLimited)
			assert.Equal(t, 3*time.Second, re.RetryAfter)
			assert.Contains(t, re.Message, "admission rejected: queue full")
		}},
		{"500 retried", fxReply{status: 500, body: `{"error":"boom"}`}, 4, func(t *testing.T, sub *Submission, err error) {
			assert.ErrorIs(t, err, ErrEngine)
			assert.False(t, IsUnreachable(err))
		}},
		{"503 plain text retried", fxReply{status: 503, body: `unavailable`}, 4, func(t *testing.T, sub *Submission, err error) {
			assert.ErrorContains(t, err, "unavailable")
		}},
		{"404 unknown route", fxReply{status: 404, body: `404 page not found`}, 1, func(t *testing.T, sub *Submission, err error) {
			assert.ErrorIs(t, err, ErrNotFound)
		}},
		{"malformed 201", fxReply{status: 201, body: `{"job_id":`}, 1, func(t *testing.T, sub *Submission, err error) {
			assert.ErrorIs(t, err, ErrEngine)
			assert.ErrorContains(t, err, "malformed submission reply")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fxNewServer(t, tt.reply)
			c, sl := fxSelfHosted(t, srv)
			sub, err := c.Submit(context.Background(), fxJobSelfHosted())
			tt.check(t, sub, err)
			if err != nil {
				assert.Nil(t, sub)
			}
			assert.Len(t, srv.requests(), tt.attempts)
			assert.Len(t, sl.got(), tt.attempts-1)
		})
	}
}

func fxJobSelfHosted() *Job {
	return &Job{URL: "https://api.example.com/endpoint", Method: "POST", Body: `{"a":1}`, Webhooks: []Webhook{{URL: "https://app.com/hook"}}}
}

func TestSelfHostedRetryReusesDerivedKey(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 502, body: "bad gateway"}, fxReply{status: 503, body: "x"}, fxReply{status: 201, body: `{"job_id":"j","status":"queued"}`})
	c, _ := fxSelfHosted(t, srv)
	sub, err := c.Submit(context.Background(), fxJobSelfHosted())
	require.NoError(t, err)
	reqs := srv.requests()
	require.Len(t, reqs, 3)
	keys := map[string]bool{}
	for _, r := range reqs {
		var b struct {
			Key string `json:"idempotent_key"`
		}
		require.NoError(t, json.Unmarshal(r.Body, &b))
		keys[b.Key] = true
	}
	assert.Len(t, keys, 1, "one idempotent key for every attempt")
	assert.True(t, keys[sub.IdempotentKey])

	// Submitting the same job again derives the same key: the engine dedups.
	again, err := c.Submit(context.Background(), fxJobSelfHosted())
	require.NoError(t, err)
	assert.Equal(t, sub.IdempotentKey, again.IdempotentKey)
}

func TestSelfHostedNetworkFailureThenSuccess(t *testing.T) {
	srv := fxNewServer(t)
	srv.handle = func(n int, r fxRequest) fxReply {
		if n == 0 {
			panic(http.ErrAbortHandler) // the connection is cut: a network error
		}
		return fxReply{status: 201, body: `{"job_id":"j","status":"queued"}`}
	}
	c, sl := fxSelfHosted(t, srv)
	sub, err := c.Submit(context.Background(), fxJobSelfHosted())
	require.NoError(t, err)
	assert.Equal(t, "j", sub.JobID)
	reqs := srv.requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, string(reqs[0].Body), string(reqs[1].Body))
	assert.Len(t, sl.got(), 1)
}

// TestDialectValidationSendsNothing: a job with a field the self-hosted
// dialect cannot carry fails before any network call.
func TestDialectValidationSendsNothing(t *testing.T) {
	fields := map[string]func(j *Job){
		"metadata":                    func(j *Job) { j.Metadata = map[string]any{"k": "v"} },
		"regions":                     func(j *Job) { j.Regions = []Region{RegionIAD} },
		"region_policy":               func(j *Job) { j.RegionPolicy = RegionPolicyStrict },
		"execution_mode":              func(j *Job) { j.ExecutionMode = ExecutionFanout },
		"webhook_quorum":              func(j *Job) { j.Webhooks = append(j.Webhooks, Webhook{URL: "https://b.c"}); j.WebhookQuorum = 2 },
		"retry_policy":                func(j *Job) { j.RetryPolicy = &RetryPolicy{MaxRetries: 3} },
		"fallback_job":                func(j *Job) { j.Fallback = &Fallback{Trigger: OnError(500), Job: &Job{URL: "https://b.c"}} },
		"on_success":                  func(j *Job) { j.OnSuccess = &Job{URL: "https://b.c"} },
		"on_failure":                  func(j *Job) { j.OnFailure = &Job{URL: "https://b.c"} },
		"on_failure_timeout_ms":       func(j *Job) { j.OnFailureTimeout = time.Second },
		"retry_at":                    func(j *Job) { j.RetryAt = time.Now().Add(time.Hour) },
		"webhooks":                    func(j *Job) { j.Webhooks = append(j.Webhooks, Webhook{URL: "https://b.c"}) },
		"webhooks[0].regions":         func(j *Job) { j.Webhooks[0].Regions = []Region{RegionLAX} },
		"webhooks[0].has_quorum_vote": func(j *Job) { j.Webhooks[0].HasQuorumVote = Bool(false) },
	}
	for field, edit := range fields {
		t.Run(field, func(t *testing.T) {
			srv := fxNewServer(t, fxReply{status: 201, body: `{"job_id":"j"}`})
			c, _ := fxSelfHosted(t, srv)
			j := fxJobSelfHosted()
			edit(j)
			_, err := c.Submit(context.Background(), j)
			require.ErrorIs(t, err, ErrUnsupported)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, field, ve.Field)
			assert.Empty(t, srv.requests(), "nothing sent")
		})
	}
	t.Run("invalid job on Cloud", func(t *testing.T) {
		srv := fxNewServer(t, fxForward(201, fxSubmitReply))
		c, _ := fxCloud(t, srv)
		_, err := c.Submit(context.Background(), &Job{URL: "nope"})
		assert.ErrorIs(t, err, ErrValidation)
		_, err = c.Submit(context.Background(), nil)
		assert.ErrorIs(t, err, ErrValidation)
		assert.Empty(t, srv.requests())
	})
}

func TestSubmitCloudKeyStrategies(t *testing.T) {
	srv := fxNewServer(t)
	srv.handle = func(n int, r fxRequest) fxReply {
		return fxForward(201, `{"job_id":"j","status":"queued"}`) // no key echoed
	}
	c, _ := fxCloud(t, srv)

	sub, err := c.Submit(context.Background(), fxJob())
	require.NoError(t, err)
	assert.Empty(t, sub.IdempotentKey, "HASH on Cloud: the engine derives the key; none was echoed")

	j := fxJob()
	j.IdempotentKey = UniqueKey()
	sub, err = c.Submit(context.Background(), j)
	require.NoError(t, err)
	assert.Equal(t, j.IdempotentKey, sub.IdempotentKey, "the key sent is reported when the engine does not echo it")
	assert.Contains(t, srv.requests()[1].Env.Body, `"idempotent_key":"`+j.IdempotentKey+`"`)
}

func TestHashKeyIsStableAndDocumented(t *testing.T) {
	// The documented derivation: hex SHA-256 of scope \n METHOD \n url \n body.
	sum := sha256.Sum256([]byte("user-1\nPOST\nhttps://a.b/c\n{}"))
	assert.Equal(t, hex.EncodeToString(sum[:]), HashKey("user-1", "post", "https://a.b/c", []byte("{}")))
	assert.Regexp(t, regexp.MustCompile(`^[0-9a-f]{64}$`), HashKey("", "", "", nil))
	assert.Equal(t, HashKey("u", "", "https://a", nil), HashKey("u", "GET", "https://a", nil), "empty method is GET")
	assert.NotEqual(t, HashKey("u1", "GET", "https://a", nil), HashKey("u2", "GET", "https://a", nil), "scoped per user")
	assert.NotEqual(t, HashKey("u", "GET", "https://a", []byte("1")), HashKey("u", "GET", "https://a", []byte("2")))
	assert.NotEqual(t, HashKey("u", "GET", "https://a\nb", nil), HashKey("u", "GET", "https://a", []byte("b")), "separators matter")
	assert.NotEqual(t, UniqueKey(), UniqueKey())
	assert.Regexp(t, `^[0-9a-f-]{36}$`, UniqueKey())
}

func TestDecodeSubmissionLenient(t *testing.T) {
	tests := []struct {
		body string
		want Submission
	}{
		{`{"job_id":"j","status":"queued","queued_at":1763674210055}`, Submission{JobID: "j", Status: StatusQueued, QueuedAt: time.UnixMilli(1763674210055)}},
		{`{"job_id":"j","queued_at":1763674210}`, Submission{JobID: "j", Status: StatusQueued, QueuedAt: time.Unix(1763674210, 0)}},
		{`{"job_id":"j","queued_at":"2025-11-20T21:30:10Z"}`, Submission{JobID: "j", Status: StatusQueued, QueuedAt: time.Date(2025, 11, 20, 21, 30, 10, 0, time.UTC)}},
		{`{"job_id":"j","queued_at":"yesterday","estimated_processing_time":"soon"}`, Submission{JobID: "j", Status: StatusQueued}},
		{`{"job_id":"j","queued_at":{"x":1},"estimated_processing_time":1.9,"duplicate":1}`, Submission{JobID: "j", Status: StatusQueued, EstimatedProcessingTime: 1, Duplicate: true}},
		{`{"job_id":12345,"status":"racing"}`, Submission{JobID: "12345", Status: StatusRacing}},
	}
	for _, tt := range tests {
		got, err := decodeSubmission(201, []byte(tt.body))
		require.NoError(t, err, tt.body)
		assert.Equal(t, tt.want.JobID, got.JobID, tt.body)
		assert.Equal(t, tt.want.Status, got.Status, tt.body)
		assert.True(t, tt.want.QueuedAt.Equal(got.QueuedAt), "%s: %v", tt.body, got.QueuedAt)
		assert.Equal(t, tt.want.EstimatedProcessingTime, got.EstimatedProcessingTime, tt.body)
		assert.Equal(t, tt.want.Duplicate, got.Duplicate, tt.body)
	}
	for _, bad := range []string{``, `null`, `[]`, `{"job_id":""}`, `{"job_id":{"a":1}}`, `{"status":"queued"}`} {
		_, err := decodeSubmission(201, []byte(bad))
		var ee *EngineError
		assert.True(t, errors.As(err, &ee), "%q: %v", bad, err)
	}
}

func TestSubmitLogsWithoutKey(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 500, body: "x"}, fxForward(201, fxSubmitReply))
	logger, logs := fxLogs()
	c, _ := fxCloud(t, srv, WithLogger(logger))
	_, err := c.Submit(context.Background(), fxJob())
	require.NoError(t, err)
	out := logs.String()
	assert.Contains(t, out, "retrying")
	assert.Contains(t, out, "job submitted")
	assert.Contains(t, out, "job_1763674210055_853341")
	fxNoKey(t, "logs", out)
}
