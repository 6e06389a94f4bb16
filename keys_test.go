package ezthrottle_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
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

// Regression test: the Idempotency-Key header's value was used as it came,
// so a blank header became the key " " (and " k " a key with spaces),
// unlike ezclient, which trims it and treats a blank one as absent. Every
// place a header carries the key (the request's own header, a job header
// added by JobHeader, a ForwardError job's header) now follows ezclient.
func TestIdempotencyKeyHeaderTrimmedAndBlankIsAbsent(t *testing.T) {
	unique := ezthrottle.JobKeyStrategy(ezthrottle.UniqueKeys())
	blanks := []string{" ", "\t", "  \t  "}
	for _, blank := range blanks {
		t.Run("request header "+strconvQuote(blank), func(t *testing.T) {
			assert.Equal(t, "", forwardOne(t, blank, nil).IdempotentKey, "a blank header is no key: HASH")
			assert.Len(t, forwardOne(t, blank, nil, unique).IdempotentKey, 36, "a blank header leaves the strategy to choose")
			assert.Equal(t, "opt", forwardOne(t, blank, nil, ezthrottle.JobIdempotentKey("opt")).IdempotentKey)
			assert.Equal(t, "hdr", forwardOne(t, blank, nil, ezthrottle.JobHeader("Idempotency-Key", " hdr ")).IdempotentKey)
		})
		t.Run("job header "+strconvQuote(blank), func(t *testing.T) {
			for _, name := range []string{"Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"} {
				assert.Len(t, forwardOne(t, "", nil, ezthrottle.JobHeader(name, blank), unique).IdempotentKey, 36)
				assert.Equal(t, "", forwardOne(t, "", nil, ezthrottle.JobHeader(name, blank)).IdempotentKey)
			}
		})
	}
	for _, padded := range []string{" k-1", "k-1 ", "\tk-1\t", "  k-1  "} {
		assert.Equal(t, "k-1", forwardOne(t, padded, nil, unique).IdempotentKey, "request header %q", padded)
		assert.Equal(t, "k-1", forwardOne(t, "", nil, ezthrottle.JobHeader("idempotency-key", padded), unique).IdempotentKey, "job header %q", padded)
	}
}

func TestAutoForwardBlankIdempotencyKeyHeaderIsAbsent(t *testing.T) {
	forward := func(job ezclient.Job, opts ...ezthrottle.JobOption) *ezclient.Job {
		sub := &fakeSubmitter{}
		_, s, err := ezthrottle.AutoForward(context.Background(), sub, func(context.Context) (int, error) {
			return 0, &ezthrottle.ForwardError{Job: job, Cause: errors.New("429")}
		}, opts...)
		require.NoError(t, err)
		require.NotNil(t, s)
		return sub.Jobs()[0]
	}
	for _, name := range []string{"Idempotency-Key", "idempotency-key"} {
		blank := ezclient.Job{URL: "https://api.example.com/x", Headers: map[string]string{name: "  "}}
		assert.Equal(t, "", forward(blank).IdempotentKey, "a blank header is no key")
		assert.Equal(t, "opt", forward(blank, ezthrottle.JobIdempotentKey("opt")).IdempotentKey, "a blank header does not win over options")
		assert.Len(t, forward(blank, ezthrottle.JobKeyStrategy(ezthrottle.UniqueKeys())).IdempotentKey, 36)
		padded := ezclient.Job{URL: "https://api.example.com/x", Headers: map[string]string{name: " order-42\t"}}
		assert.Equal(t, "order-42", forward(padded, ezthrottle.JobIdempotentKey("opt")).IdempotentKey)
	}
	// The exact spelling wins over another one, and a blank exact spelling
	// gives way to a non-blank other one (ezclient.HeaderKey).
	both := ezclient.Job{URL: "https://api.example.com/x", Headers: map[string]string{"Idempotency-Key": " ", "idempotency-key": "low"}}
	assert.Equal(t, "low", forward(both).IdempotentKey)
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

// A write is replayed after a 5xx only when it carries an Idempotency-Key:
// a blank one is no key, so it does not make the write safe to replay.
func TestBlankIdempotencyKeyDoesNotMakeAWriteReplayable(t *testing.T) {
	for _, tt := range []struct {
		key     string
		forward bool
	}{{" ", false}, {"\t \t", false}, {" k-1 ", true}} {
		t.Run(strconvQuote(tt.key), func(t *testing.T) {
			sub := &fakeSubmitter{}
			tr, err := ezthrottle.New(
				ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 500, "oops"), nil })),
				ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
				ezthrottle.WithForwarding(sub))
			require.NoError(t, err)
			ctx, receipt := ezthrottle.WithReceipt(context.Background())
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.example.com/v1/charges", nil)
			require.NoError(t, err)
			req.Header.Set("Idempotency-Key", tt.key)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			assert.Equal(t, tt.forward, receipt.Forwarded())
			if tt.forward {
				require.Len(t, sub.Jobs(), 1)
				assert.Equal(t, "k-1", sub.Jobs()[0].IdempotentKey)
				return
			}
			assert.Equal(t, 500, resp.StatusCode, "the original response")
			assert.ErrorIs(t, receipt.Err(), ezthrottle.ErrUnsafeReplay)
			assert.Empty(t, sub.Jobs())
		})
	}
}

// A request whose Idempotency-Key no submission can carry back (longer
// than ezclient.MaxIdempotentKeyLength, or with control characters) is
// not forwarded: the job is refused before it exists, and the caller gets
// the original response with the reason in the receipt.
func TestUnsendableIdempotencyKeyRefusedBeforeTheJobExists(t *testing.T) {
	for name, key := range map[string]string{
		"too long": strings.Repeat("k", ezclient.MaxIdempotentKeyLength+1),
		"DEL":      "order\x7f42",
		"C1":       "order\u008542",
	} {
		t.Run(name, func(t *testing.T) {
			engine, client := newEngine(t)
			tr := mustNew(t, ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, "slow down"), nil })),
				ezthrottle.WithClient(client), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
			ctx, receipt := ezthrottle.WithReceipt(context.Background())
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.example.com/v1/charges", nil)
			require.NoError(t, err)
			req.Header["Idempotency-Key"] = []string{key}
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			assert.Equal(t, 429, resp.StatusCode, "the original response")
			assert.Equal(t, "slow down", readAll(t, resp.Body))
			assert.False(t, receipt.Forwarded())
			var ve *ezclient.ValidationError
			require.ErrorAs(t, receipt.Err(), &ve)
			assert.Empty(t, engine.Jobs(), "no job exists")
		})
	}
}
