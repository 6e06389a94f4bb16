package ezclient

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGetJob(t *testing.T) {
	for _, st := range []JobStatus{StatusQueued, StatusInFlight, StatusCompleted, StatusFailed} {
		t.Run(string(st), func(t *testing.T) {
			body := `{"job_id":"abc","status":"` + string(st) + `","url":"https://a.b/c","method":"POST","created_at":1763674210055}`
			srv := fxNewServer(t, fxReply{status: 200, body: body})
			c, _ := fxSelfHosted(t, srv)
			info, err := c.GetJob(context.Background(), "abc")
			require.NoError(t, err)
			assert.Equal(t, "abc", info.JobID)
			assert.Equal(t, st, info.Status)
			assert.Equal(t, st == StatusCompleted || st == StatusFailed, info.Status.Terminal())
			assert.Equal(t, "https://a.b/c", info.URL)
			assert.Equal(t, "POST", info.Method)
			assert.True(t, time.UnixMilli(1763674210055).Equal(info.CreatedAt))
			assert.JSONEq(t, body, string(info.Raw))
			reqs := srv.requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, "GET", reqs[0].Method)
			assert.Equal(t, "/jobs/abc", reqs[0].Path)
		})
	}
}

func TestGetJobReplies(t *testing.T) {
	tests := []struct {
		name     string
		replies  []fxReply
		attempts int
		check    func(t *testing.T, info *JobInfo, err error)
	}{
		{"404 job not found", []fxReply{{status: 404, body: `{"error":"job not found"}`}}, 1, func(t *testing.T, info *JobInfo, err error) {
			assert.ErrorIs(t, err, ErrNotFound)
			assert.ErrorContains(t, err, "job not found")
			assert.Nil(t, info)
		}},
		{"5xx retried", []fxReply{{status: 503, body: "busy"}, {status: 200, body: `{"job_id":"x","status":"queued"}`}}, 2, func(t *testing.T, info *JobInfo, err error) {
			require.NoError(t, err)
			assert.Equal(t, StatusQueued, info.Status)
		}},
		{"missing job_id taken from the request", []fxReply{{status: 200, body: `{"status":"failed","created_at":"2025-11-20T21:30:10Z"}`}}, 1, func(t *testing.T, info *JobInfo, err error) {
			require.NoError(t, err)
			assert.Equal(t, "id/with space", info.JobID)
			assert.Equal(t, time.Date(2025, 11, 20, 21, 30, 10, 0, time.UTC), info.CreatedAt)
		}},
		{"missing status", []fxReply{{status: 200, body: `{"job_id":"x"}`}}, 1, func(t *testing.T, info *JobInfo, err error) {
			assert.ErrorIs(t, err, ErrEngine)
		}},
		{"not JSON", []fxReply{{status: 200, body: `<html>`}}, 1, func(t *testing.T, info *JobInfo, err error) {
			assert.ErrorIs(t, err, ErrEngine)
			assert.ErrorContains(t, err, "malformed status reply")
		}},
		{"429", []fxReply{{status: 429, header: map[string]string{"Retry-After": "2"}, body: `{"error":"slow"}`}}, 1, func(t *testing.T, info *JobInfo, err error) {
			assert.ErrorIs(t, err, ErrRateLimited)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fxNewServer(t, tt.replies...)
			c, _ := fxSelfHosted(t, srv)
			info, err := c.GetJob(context.Background(), "id/with space")
			tt.check(t, info, err)
			reqs := srv.requests()
			assert.Len(t, reqs, tt.attempts)
			assert.Equal(t, "/jobs/id%2Fwith%20space", reqs[0].Path, "the ID is one escaped path segment")
		})
	}
}

func TestGetJobArguments(t *testing.T) {
	srv := fxNewServer(t, fxForward(200, `{}`))
	cloud, _ := fxCloud(t, srv)
	_, err := cloud.GetJob(context.Background(), "abc")
	assert.ErrorIs(t, err, ErrUnsupported)

	self, _ := fxSelfHosted(t, srv)
	_, err = self.GetJob(context.Background(), " ")
	assert.ErrorIs(t, err, ErrValidation)
	_, err = self.GetJob(context.Background(), "a\nb")
	assert.ErrorIs(t, err, ErrValidation)
	assert.Empty(t, srv.requests(), "nothing sent")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = self.GetJob(ctx, "abc")
	assert.ErrorIs(t, err, context.Canceled)
}
