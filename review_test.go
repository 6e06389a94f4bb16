package ezthrottle_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

const reviewURL = "https://api.example.com/v1/things"

func reviewInFlight(t *testing.T, tr *ezthrottle.Transport) int {
	t.Helper()
	u, _ := url.Parse(reviewURL)
	st, ok := tr.Limiter().(*ezthrottle.MemoryLimiter).Stats(ezthrottle.HostKey(u))
	require.True(t, ok)
	return st.InFlight
}

func mustPanic(t *testing.T, fn func()) {
	t.Helper()
	defer func() { require.NotNil(t, recover(), "expected a panic") }()
	fn()
}

// A panic anywhere after the slot was taken (base, Submitter) must not leak
// the slot: a recovered panic would otherwise stall the host for good.
func TestPanicFreesTheSlot(t *testing.T) {
	limit := ezthrottle.Limit{Rate: 1000, Burst: 100, MaxInFlight: 1}
	t.Run("in the base", func(t *testing.T) {
		tr, err := ezthrottle.New(ezthrottle.WithDefaultLimit(limit),
			ezthrottle.WithBase(rtFunc(func(*http.Request) (*http.Response, error) { panic("base exploded") })))
		require.NoError(t, err)
		req, _ := http.NewRequest(http.MethodGet, reviewURL, nil)
		mustPanic(t, func() { _, _ = tr.RoundTrip(req) })
		assert.Equal(t, 0, reviewInFlight(t, tr))
	})
	t.Run("in the Submitter, with the upstream body still open", func(t *testing.T) {
		var upstream *trackedBody
		tr, err := ezthrottle.New(ezthrottle.WithDefaultLimit(limit),
			ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
				resp := respond(r, 503, strings.Repeat("x", 100<<10), "Retry-After", "1") // too large to buffer
				upstream = resp.Body.(*trackedBody)
				return resp, nil
			})),
			ezthrottle.WithForwarding(ezthrottle.SubmitterFunc(func(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
				panic("submitter exploded")
			})))
		require.NoError(t, err)
		req, _ := http.NewRequest(http.MethodGet, reviewURL, nil)
		mustPanic(t, func() { _, _ = tr.RoundTrip(req) })
		assert.Equal(t, 0, reviewInFlight(t, tr))
		assert.True(t, upstream.Closed(), "the upstream body is closed")
	})
}

// While the engine is called, a small upstream answer is in memory and the
// slot is free for other requests; if forwarding then fails, the caller
// still gets the whole original answer.
func TestSlotFreeDuringSubmission(t *testing.T) {
	var tr *ezthrottle.Transport
	var during int
	var upstream *trackedBody
	tr, err := ezthrottle.New(
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1000, Burst: 100, MaxInFlight: 1}),
		ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
			resp := respond(r, 429, `{"error":"slow down"}`)
			upstream = resp.Body.(*trackedBody)
			return resp, nil
		})),
		ezthrottle.WithForwarding(ezthrottle.SubmitterFunc(func(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
			during = reviewInFlight(t, tr)
			return nil, &ezclient.EngineError{StatusCode: 502, Proxy: true, Message: "Proxy Error"}
		})))
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodGet, reviewURL, nil)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	assert.Equal(t, 0, during, "the slot is free while the engine is called")
	assert.True(t, upstream.Closed(), "the upstream body was read into memory and closed")
	assert.Equal(t, 429, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, `{"error":"slow down"}`, string(b), "the original answer, intact")
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, 0, reviewInFlight(t, tr))
}

// A large upstream answer is not buffered: it keeps its slot until closed,
// and is returned intact, from its first byte, when forwarding fails.
func TestLargeAnswerIntactWhenForwardingFails(t *testing.T) {
	big := strings.Repeat("0123456789", 10<<10) // 100 KiB
	tr, err := ezthrottle.New(
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1000, Burst: 100, MaxInFlight: 1}),
		ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
			resp := respond(r, 503, big)
			resp.ContentLength = -1 // unknown: the Transport has to read to find out
			return resp, nil
		})),
		ezthrottle.WithForwarding(ezthrottle.SubmitterFunc(func(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
			return nil, &ezclient.EngineError{StatusCode: 500, Message: "down"}
		})))
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodGet, reviewURL, nil)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	assert.Equal(t, 1, reviewInFlight(t, tr), "held until the body is closed")
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, big, string(b))
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, 0, reviewInFlight(t, tr))
}

// An upstream cannot pose as a forwarded response.
func TestUpstream202CannotSpoofForwarding(t *testing.T) {
	tr, err := ezthrottle.New(ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
		return respond(r, 202, `{"job_id":"job_fake"}`,
			"X-EZThrottle-Job-ID", "job_fake", "X-EZThrottle-Forwarded-Reason", "status", "X-Other", "kept"), nil
	})))
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodGet, reviewURL, nil)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 202, resp.StatusCode)
	assert.False(t, ezthrottle.IsForwarded(resp))
	_, ok := ezthrottle.JobFromResponse(resp)
	assert.False(t, ok)
	assert.Equal(t, "kept", resp.Header.Get("X-Other"))
}

// sharedErrLimiter returns the same *ThrottleError to every caller, as a
// custom Limiter may.
type sharedErrLimiter struct{ err *ezthrottle.ThrottleError }

func (l sharedErrLimiter) Acquire(context.Context, ezthrottle.Admission) (ezthrottle.Permit, error) {
	return nil, l.err
}
func (sharedErrLimiter) Learn(context.Context, string, ezthrottle.Signals) {}

func TestLimiterErrorNotModified(t *testing.T) {
	shared := &ezthrottle.ThrottleError{Host: "h", Wait: time.Second, Predicted: true}
	tr, err := ezthrottle.New(ezthrottle.WithLimiter(sharedErrLimiter{shared}),
		ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, ""), nil })))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, reviewURL, nil)
	_, err = tr.RoundTrip(req)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the returned error names the deadline as the cause")
	var te *ezthrottle.ThrottleError
	require.True(t, errors.As(err, &te))
	assert.NotSame(t, shared, te)
	assert.Nil(t, shared.Cause, "the limiter's own error is not modified")
}
