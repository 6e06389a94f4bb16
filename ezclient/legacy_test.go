package ezclient

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestQueueRequest(t *testing.T) {
	srv := fxNewServer(t, fxForward(201, fxSubmitReply))
	c, _ := fxCloud(t, srv)
	sub, err := c.QueueRequest(context.Background(), QueueRequestParams{
		URL: "https://api.example.com", WebhookURL: "https://your-app.com/webhook", Method: "post",
		Headers: map[string]string{"X": "1"}, Body: "b", Metadata: map[string]any{"m": "v"},
		IdempotentKey: "k", RetryAt: time.UnixMilli(1763674210055),
	})
	require.NoError(t, err)
	assert.Equal(t, "job_1763674210055_853341", sub.JobID)
	reqs := srv.requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, `{"url":"https://api.example.com","method":"POST","headers":{"X":"1"},"body":"b","metadata":{"m":"v"},"webhooks":[{"url":"https://your-app.com/webhook"}],"idempotent_key":"k","retry_at":1763674210055}`, reqs[0].Env.Body)
}

func TestQueueRequestSelfHosted(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 201, body: `{"job_id":"j","status":"queued"}`})
	c, _ := fxSelfHosted(t, srv)
	_, err := c.QueueRequest(context.Background(), QueueRequestParams{URL: "https://api.example.com/x", WebhookURL: "https://app/hook"})
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(srv.requests()[0].Body, &body))
	assert.Equal(t, "https://app/hook", body["webhook_url"])
	assert.Equal(t, "GET", body["method"])

	_, err = c.QueueRequest(context.Background(), QueueRequestParams{URL: "https://api.example.com/x", WebhookURL: "https://app/hook", Metadata: map[string]any{"a": 1}})
	assert.ErrorIs(t, err, ErrUnsupported)
}

func TestQueueRequestValidation(t *testing.T) {
	srv := fxNewServer(t)
	c, _ := fxCloud(t, srv)
	for _, p := range []QueueRequestParams{
		{URL: "https://api.example.com"},
		{URL: "https://api.example.com", WebhookURL: "not a url"},
	} {
		_, err := c.QueueRequest(context.Background(), p)
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "webhook_url", ve.Field)
	}
	_, err := c.QueueRequest(context.Background(), QueueRequestParams{WebhookURL: "https://app/hook"})
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "url", ve.Field)
	assert.Empty(t, srv.requests())
}
