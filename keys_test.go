package ezthrottle_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// forwardOne sends one request answered 429 through a Transport with the
// given job options and returns the job submitted for it.
func forwardOne(t *testing.T, reqKey string, defaults []ezthrottle.JobOption, perRequest ...ezthrottle.JobOption) *ezclient.Job {
	t.Helper()
	sub := &fakeSubmitter{}
	tr, err := ezthrottle.New(
		ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, "slow down"), nil })),
		ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
		ezthrottle.WithForwarding(sub, defaults...))
	require.NoError(t, err)
	ctx := ezthrottle.WithJobOptions(context.Background(), perRequest...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.example.com/v1/charges", nil)
	require.NoError(t, err)
	if reqKey != "" {
		req.Header.Set("Idempotency-Key", reqKey)
	}
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	jobs := sub.Jobs()
	require.Len(t, jobs, 1)
	return jobs[0]
}

func TestKeyPrecedence(t *testing.T) {
	setKey := func(k string) ezthrottle.JobOption {
		return ezthrottle.JobEdit(func(j *ezclient.Job) { j.IdempotentKey = k })
	}
	tests := []struct {
		name       string
		reqKey     string
		defaults   []ezthrottle.JobOption
		perRequest []ezthrottle.JobOption
		want       string
	}{
		{name: "HASH by default: left to the engine", want: ""},
		{name: "the request's Idempotency-Key wins over everything", reqKey: "req-key",
			perRequest: []ezthrottle.JobOption{ezthrottle.JobIdempotentKey("opt"), setKey("edit"), ezthrottle.JobKeyStrategy(ezthrottle.UniqueKeys())}, want: "req-key"},
		{name: "JobIdempotentKey", perRequest: []ezthrottle.JobOption{ezthrottle.JobIdempotentKey("opt"), setKey("edit")}, want: "opt"},
		{name: "a key set by JobEdit is kept", perRequest: []ezthrottle.JobOption{setKey("edit")}, want: "edit"},
		{name: "a key set by a default JobEdit is kept", defaults: []ezthrottle.JobOption{setKey("default-edit")}, want: "default-edit"},
		{name: "an Idempotency-Key header added by JobHeader", perRequest: []ezthrottle.JobOption{ezthrottle.JobHeader("Idempotency-Key", "hdr")}, want: "hdr"},
		{name: "JobHeader beats the strategy", perRequest: []ezthrottle.JobOption{ezthrottle.JobHeader("idempotency-key", "hdr"), ezthrottle.JobKeyStrategy(ezthrottle.UniqueKeys())}, want: "hdr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := forwardOne(t, tt.reqKey, tt.defaults, tt.perRequest...)
			assert.Equal(t, tt.want, job.IdempotentKey)
		})
	}
	t.Run("a strategy applies when nothing else sets a key", func(t *testing.T) {
		job := forwardOne(t, "", nil, ezthrottle.JobKeyStrategy(ezthrottle.UniqueKeys()))
		assert.Len(t, job.IdempotentKey, 36)
	})
}

func TestJobEditRunsAfterTheOtherOptions(t *testing.T) {
	var seen int
	job := forwardOne(t, "",
		[]ezthrottle.JobOption{ezthrottle.JobEdit(func(j *ezclient.Job) { seen = len(j.Webhooks) })},
		ezthrottle.JobWebhook("https://app.example/a"), ezthrottle.JobWebhook("https://app.example/b"))
	assert.Equal(t, 2, seen, "a default JobEdit sees the per-request webhooks")
	assert.Len(t, job.Webhooks, 2)
}

func TestAutoForwardKeyFromIdempotencyKeyHeader(t *testing.T) {
	forward := func(job ezclient.Job, opts ...ezthrottle.JobOption) *ezclient.Job {
		sub := &fakeSubmitter{}
		_, s, err := ezthrottle.AutoForward(context.Background(), sub, func(context.Context) (int, error) {
			return 0, &ezthrottle.ForwardError{Job: job, Cause: errors.New("429")}
		}, opts...)
		require.NoError(t, err)
		require.NotNil(t, s)
		return sub.Jobs()[0]
	}
	base := ezclient.Job{URL: "https://api.stripe.com/v1/charges", Method: "POST", Headers: map[string]string{"idempotency-key": "order-42"}}
	assert.Equal(t, "order-42", forward(base).IdempotentKey, "the job's Idempotency-Key header is its key")
	assert.Equal(t, "order-42", forward(base, ezthrottle.JobIdempotentKey("opt")).IdempotentKey, "and it wins over options")
	own := base
	own.IdempotentKey = "explicit"
	assert.Equal(t, "explicit", forward(own).IdempotentKey, "an explicit key wins over the header")
	plain := ezclient.Job{URL: "https://api.example.com/x"}
	assert.Equal(t, "opt", forward(plain, ezthrottle.JobIdempotentKey("opt")).IdempotentKey)
	assert.Equal(t, "", forward(plain).IdempotentKey, "HASH by default")
}
