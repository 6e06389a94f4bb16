package ezclient

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wireKeys walks an encoded job tree and returns each job's idempotent_key
// by path ("" = the root, "on_success", "fallback_job.on_failure", ...).
func wireKeys(t *testing.T, doc []byte) map[string]string {
	t.Helper()
	var root map[string]any
	require.NoError(t, json.Unmarshal(doc, &root))
	out := map[string]string{}
	var walk func(p string, m map[string]any)
	walk = func(p string, m map[string]any) {
		k, _ := m["idempotent_key"].(string)
		out[p] = k
		for _, child := range []string{"fallback_job", "on_success", "on_failure"} {
			if c, ok := m[child].(map[string]any); ok {
				walk(fieldPath(p, child), c)
			}
		}
	}
	walk("", root)
	return out
}

// TestJobHeaderIdempotencyKeyEncoded: a job's own Idempotency-Key header
// becomes its idempotent_key wherever the job sits in a tree, in any
// spelling of the header name; an explicit IdempotentKey wins; a job
// without either keeps the HASH strategy (no key).
func TestJobHeaderIdempotencyKeyEncoded(t *testing.T) {
	hdr := func(name, v string) map[string]string { return map[string]string{name: v, "X-Other": "1"} }
	job := &Job{
		URL: "https://a.example/root", Headers: hdr("Idempotency-Key", "root-k"),
		Fallback: &Fallback{Trigger: OnError(503), Job: &Job{
			URL: "https://b.example/fb", Headers: hdr("idempotency-key", "fb-k"),
			OnFailure: &Job{URL: "https://c.example/fb-fail", Headers: hdr("IDEMPOTENCY-KEY", " fbf-k ")},
			Fallback:  &Fallback{Job: &Job{URL: "https://d.example/fb2"}},
		}},
		OnSuccess: &Job{URL: "https://e.example/ok", Headers: hdr("Idempotency-Key", "ok-hdr"), IdempotentKey: "ok-explicit"},
		OnFailure: &Job{URL: "https://f.example/fail", Headers: hdr("Idempotency-Key", "   ")},
	}
	doc, err := json.Marshal(job)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{
		"":                          "root-k",
		"fallback_job":              "fb-k",
		"fallback_job.on_failure":   "fbf-k",
		"fallback_job.fallback_job": "",
		"on_success":                "ok-explicit",
		"on_failure":                "",
	}, wireKeys(t, doc))
	assert.Empty(t, job.IdempotentKey, "encoding does not modify the job")

	// The choice among several spellings does not depend on map order.
	multi := &Job{URL: "https://a.example/", Headers: map[string]string{"idempotency-key": "b", "IDEMPOTENCY-KEY": "a"}}
	for range 20 {
		doc, err := json.Marshal(multi)
		require.NoError(t, err)
		assert.Equal(t, "a", wireKeys(t, doc)[""])
	}
}

// TestSubmitHeaderIdempotencyKey: Submit, QueueRequest (both dialects) and
// nested jobs all send the header's key; the self-hosted dialect uses it
// before deriving the hash; the Submission reports it.
func TestSubmitHeaderIdempotencyKey(t *testing.T) {
	t.Run("cloud submit", func(t *testing.T) {
		srv := fxNewServer(t, fxForward(201, `{"job_id":"j","status":"queued"}`))
		c, _ := fxCloud(t, srv)
		job := fxJob()
		job.Headers = map[string]string{"Idempotency-Key": "order-42"}
		job.OnSuccess = &Job{URL: "https://a.example/next", Headers: map[string]string{"idempotency-key": "next-42"}}
		sub, err := c.Submit(context.Background(), job)
		require.NoError(t, err)
		assert.Equal(t, "order-42", sub.IdempotentKey)
		keys := wireKeys(t, []byte(srv.requests()[0].Env.Body))
		assert.Equal(t, "order-42", keys[""])
		assert.Equal(t, "next-42", keys["on_success"])
	})
	t.Run("cloud QueueRequest", func(t *testing.T) {
		srv := fxNewServer(t, fxForward(201, `{"job_id":"j","status":"queued"}`))
		c, _ := fxCloud(t, srv)
		_, err := c.QueueRequest(context.Background(), QueueRequestParams{URL: "https://a.example/x", WebhookURL: "https://w.example/h",
			Headers: map[string]string{"Idempotency-Key": "q-1"}})
		require.NoError(t, err)
		assert.Equal(t, "q-1", wireKeys(t, []byte(srv.requests()[0].Env.Body))[""])
	})
	for _, name := range []string{"Idempotency-Key", "idempotency-key"} {
		t.Run("self-hosted "+name, func(t *testing.T) {
			srv := fxNewServer(t, fxReply{status: 201, body: `{"job_id":"j","status":"queued"}`})
			c, _ := fxSelfHosted(t, srv)
			sub, err := c.QueueRequest(context.Background(), QueueRequestParams{URL: "https://a.example/x", Method: "POST", Body: "b",
				WebhookURL: "https://w.example/h", Headers: map[string]string{name: "sh-1"}})
			require.NoError(t, err)
			assert.Equal(t, "sh-1", sub.IdempotentKey)
			var body map[string]any
			require.NoError(t, json.Unmarshal(srv.requests()[0].Body, &body))
			assert.Equal(t, "sh-1", body["idempotent_key"], "the header's key comes before the hash")
		})
	}
}

// TestStepHeaderKeyBeatsStrategy: the Step builder applies the same rule:
// the header's key (trimmed) wins over the UNIQUE strategy; a blank header
// is no key.
func TestStepHeaderKeyBeatsStrategy(t *testing.T) {
	c, _ := fxCloud(t, fxNewServer(t))
	job, err := c.Step().URL("https://a.example").Header("idempotency-key", " k-1 ").IdempotentStrategy(IdempotentUnique).Job()
	require.NoError(t, err)
	assert.Equal(t, "k-1", job.IdempotentKey)
	job, err = c.Step().URL("https://a.example").Header("Idempotency-Key", "  ").IdempotentStrategy(IdempotentUnique).Job()
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f-]{36}$`, job.IdempotentKey, "a blank header is no key: the strategy decides")
}
