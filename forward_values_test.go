package ezthrottle_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// staticSubmitter answers every submission with sub.
func staticSubmitter(sub ezclient.Submission) ezthrottle.Submitter {
	return ezthrottle.SubmitterFunc(func(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
		cp := sub
		return &cp, nil
	})
}

func base429(body string) http.RoundTripper {
	return rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, body), nil })
}

// The synthetic 202 says what the engine said: its body, the
// X-EZThrottle-Job-Status header, JobFromResponse, the ForwardedError and
// the Receipt all carry the engine's status.
func TestSyntheticAcceptedCarriesEngineStatus(t *testing.T) {
	for _, tt := range []struct {
		engine, want ezclient.JobStatus
	}{
		{ezclient.StatusRacing, ezclient.StatusRacing},
		{ezclient.StatusQueued, ezclient.StatusQueued},
		{"", ezclient.StatusQueued},
		{"scheduled", "scheduled"}, // a status this version does not know is passed on
	} {
		t.Run(string(tt.engine), func(t *testing.T) {
			sub := staticSubmitter(ezclient.Submission{JobID: "job_9", Status: tt.engine, IdempotentKey: "k"})
			tr := mustNew(t, ezthrottle.WithBase(base429("busy")), ezthrottle.WithForwarding(sub))
			ctx, rcpt := ezthrottle.WithReceipt(context.Background())
			resp, err := tr.RoundTrip(newReq(t, ctx, http.MethodGet, "https://api.test/x", nil))
			require.NoError(t, err)
			require.Equal(t, 202, resp.StatusCode)
			var body map[string]string
			require.NoError(t, json.Unmarshal([]byte(readAll(t, resp.Body)), &body))
			assert.Equal(t, string(tt.want), body["status"])
			assert.Equal(t, "job_9", body["job_id"])
			assert.Equal(t, string(tt.want), resp.Header.Get(ezthrottle.HeaderJobStatus))
			info, ok := ezthrottle.JobFromResponse(resp)
			require.True(t, ok)
			assert.Equal(t, tt.want, info.Submission.Status)
			ri, ok := rcpt.Info()
			require.True(t, ok)
			assert.Equal(t, tt.want, ri.Submission.Status)

			tr = mustNew(t, ezthrottle.WithBase(base429("busy")), ezthrottle.WithForwarding(sub), ezthrottle.WithForwardedError())
			_, err = tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, "https://api.test/x", nil))
			var fe *ezthrottle.ForwardedError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.want, fe.Submission.Status)
		})
	}
	t.Run("an upstream cannot set it", func(t *testing.T) {
		tr := mustNew(t, ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
			return respond(r, 202, "", ezthrottle.HeaderJobStatus, "racing"), nil
		})))
		resp, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, "https://api.test/x", nil))
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		assert.Empty(t, resp.Header.Get(ezthrottle.HeaderJobStatus))
	})
	t.Run("JobFromResponse without the header (older Transport) says queued", func(t *testing.T) {
		h := http.Header{}
		h.Set(ezthrottle.HeaderJobID, "job_1")
		h.Set(ezthrottle.HeaderForwardedReason, string(ezthrottle.ReasonStatus))
		info, ok := ezthrottle.JobFromResponse(&http.Response{StatusCode: 202, Header: h})
		require.True(t, ok)
		assert.Equal(t, ezclient.StatusQueued, info.Submission.Status)
	})
}

// End to end with the local engine: a multi-region race job is "racing".
func TestSyntheticAcceptedRacingFromEngine(t *testing.T) {
	e, err := ezlocal.Start()
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(dest.Close)
	cl, err := ezclient.New(ezclient.WithAPIKey(e.APIKey()), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()))
	require.NoError(t, err)
	tr := mustNew(t, ezthrottle.WithClient(cl, ezthrottle.JobRegions("iad", "lax"), ezthrottle.JobWebhook(dest.URL+"/hook")),
		ezthrottle.WithForwardOnNetworkError(false))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, dest.URL+"/x", nil))
	require.NoError(t, err)
	require.True(t, ezthrottle.IsForwarded(resp))
	var body map[string]string
	require.NoError(t, json.Unmarshal([]byte(readAll(t, resp.Body)), &body))
	assert.Equal(t, "racing", body["status"])
	assert.Equal(t, "racing", resp.Header.Get(ezthrottle.HeaderJobStatus))
}

// unsafeValues are engine-supplied values that must never reach a header.
var unsafeValues = map[string]string{
	"CR LF":      "job_1\r\nSet-Cookie: session=stolen",
	"LF":         "job_1\nX-Injected: 1",
	"NUL":        "job_1\x00",
	"C1 control": "job\u0085x",
	"U+2028":     "job\u20281",
	"1 MiB":      strings.Repeat("j", 1<<20),
}

// A Submitter's values are validated where the synthetic 202's headers are
// set: a bad job ID, key or status is a failed submission and the caller
// gets the original outcome, whatever the Submitter (not only
// *ezclient.Client) and whatever the forwarding reason.
func TestUnsafeSubmissionValuesAreAFailedForward(t *testing.T) {
	for name, v := range unsafeValues {
		for _, field := range []string{"job_id", "idempotent_key", "status"} {
			sub := ezclient.Submission{JobID: "job_1", IdempotentKey: "k", Status: ezclient.StatusQueued}
			switch field {
			case "job_id":
				sub.JobID = v
			case "idempotent_key":
				sub.IdempotentKey = v
			case "status":
				sub.Status = ezclient.JobStatus(v)
			}
			t.Run(field+" "+name, func(t *testing.T) {
				tr := mustNew(t, ezthrottle.WithBase(base429("original answer")), ezthrottle.WithForwarding(staticSubmitter(sub)))
				ctx, rcpt := ezthrottle.WithReceipt(context.Background())
				resp, err := tr.RoundTrip(newReq(t, ctx, http.MethodGet, "https://api.test/x", nil))
				require.NoError(t, err)
				assert.Equal(t, 429, resp.StatusCode, "the original response")
				assert.Equal(t, "original answer", readAll(t, resp.Body))
				assert.False(t, ezthrottle.IsForwarded(resp))
				for k := range resp.Header {
					assert.NotContains(t, k, "Injected")
					assert.NotContains(t, k, "Set-Cookie")
				}
				assert.False(t, rcpt.Forwarded())
				var ffe *ezthrottle.ForwardFailedError
				require.ErrorAs(t, rcpt.Err(), &ffe)
				assert.ErrorIs(t, ffe, ezclient.ErrEngine)
				assert.Less(t, len(ffe.Error()), 1024, "the error does not carry the value")
			})
		}
	}
	t.Run("overflow and network paths return the original error", func(t *testing.T) {
		bad := staticSubmitter(ezclient.Submission{JobID: "job\r\n1"})
		netErr := &netError{}
		tr := mustNew(t, ezthrottle.WithForwarding(bad),
			ezthrottle.WithBase(rtFunc(func(*http.Request) (*http.Response, error) { return nil, netErr })))
		_, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, "https://api.test/x", nil))
		require.Error(t, err)
		assert.ErrorIs(t, err, netErr)
		assert.ErrorIs(t, err, ezclient.ErrEngine)
	})
	t.Run("the job's own key unfit for a header", func(t *testing.T) {
		// The engine echoes no key: the job's own one would go into the
		// header.
		sub := staticSubmitter(ezclient.Submission{JobID: "job_1"})
		tr := mustNew(t, ezthrottle.WithBase(base429("original")), ezthrottle.WithForwarding(sub),
			ezthrottle.WithKeyStrategy(func(ezthrottle.KeyInput) string { return "key\r\nX-Injected: 1" }))
		resp, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, "https://api.test/x", nil))
		require.NoError(t, err)
		assert.Equal(t, 429, resp.StatusCode)
		assert.Equal(t, "original", readAll(t, resp.Body))
	})
	t.Run("AutoForward", func(t *testing.T) {
		_, s, err := ezthrottle.AutoForward(context.Background(), staticSubmitter(ezclient.Submission{JobID: "job\n1"}),
			forwardJob(ezclient.Job{URL: "https://api.test/x"}))
		assert.Nil(t, s)
		var fe *ezthrottle.ForwardError
		assert.ErrorAs(t, err, &fe, "the original error")
		assert.ErrorIs(t, err, ezclient.ErrEngine)
	})
}

// The same through a real client, in both dialects: the engine's reply is
// validated where it is decoded.
func TestUnsafeEngineReplyIsAFailedForward(t *testing.T) {
	for _, selfHosted := range []bool{false, true} {
		for name, v := range unsafeValues {
			t.Run(name, func(t *testing.T) {
				reply, _ := json.Marshal(map[string]string{"job_id": v, "status": "queued"})
				engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					if selfHosted {
						w.WriteHeader(http.StatusCreated)
						_, _ = w.Write(reply)
						return
					}
					env, _ := json.Marshal(map[string]any{"status": "allowed",
						"forwarded_response": map[string]any{"status_code": 201, "body": string(reply)}})
					_, _ = w.Write(env)
				}))
				t.Cleanup(engine.Close)
				var (
					cl  *ezclient.Client
					err error
				)
				if selfHosted {
					cl, err = ezclient.New(ezclient.WithSelfHosted(engine.URL, "u1"), ezclient.WithRetry(1, 0, 0))
				} else {
					cl, err = ezclient.New(ezclient.WithAPIKey("test-key-123456"), ezclient.WithProxyURL(engine.URL),
						ezclient.WithEngineURL("https://engine.test"), ezclient.WithRetry(1, 0, 0))
				}
				require.NoError(t, err)
				tr := mustNew(t, ezthrottle.WithBase(base429("original")),
					ezthrottle.WithClient(cl, ezthrottle.JobWebhook("https://hooks.test/x")))
				ctx, rcpt := ezthrottle.WithReceipt(context.Background())
				resp, err := tr.RoundTrip(newReq(t, ctx, http.MethodGet, "https://api.test/x", nil))
				require.NoError(t, err)
				assert.Equal(t, 429, resp.StatusCode)
				assert.Equal(t, "original", readAll(t, resp.Body))
				var ee *ezclient.EngineError
				assert.True(t, errors.As(rcpt.Err(), &ee), "%v", rcpt.Err())
			})
		}
	}
}

// netError is a network error (net.Error) that forwards.
type netError struct{}

func (*netError) Error() string   { return "dial tcp: connection refused" }
func (*netError) Timeout() bool   { return false }
func (*netError) Temporary() bool { return false }
