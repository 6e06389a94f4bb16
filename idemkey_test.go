package ezthrottle_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// recordingEngine is a fake Cloud proxy that records the job documents
// (the envelope's body) it receives and accepts every job.
type recordingEngine struct {
	mu   sync.Mutex
	jobs []map[string]any
}

func (e *recordingEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var env struct{ Body string }
	_ = json.Unmarshal(b, &env)
	var job map[string]any
	_ = json.Unmarshal([]byte(env.Body), &job)
	e.mu.Lock()
	e.jobs = append(e.jobs, job)
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"allowed","forwarded_response":{"status_code":201,"body":"{\"job_id\":\"j1\",\"status\":\"queued\"}"}}`)
}

func (e *recordingEngine) last(t *testing.T) map[string]any {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	require.NotEmpty(t, e.jobs)
	return e.jobs[len(e.jobs)-1]
}

func nestedKey(m map[string]any, path ...string) any {
	for _, p := range path {
		m, _ = m[p].(map[string]any)
	}
	return m["idempotent_key"]
}

// TestNestedJobsHeaderIdempotencyKey: nested jobs from job options and
// from a ForwardError's job carry their own Idempotency-Key header as
// idempotent_key on the wire (issue 13 item 8).
func TestNestedJobsHeaderIdempotencyKey(t *testing.T) {
	eng := &recordingEngine{}
	srv := httptest.NewServer(eng)
	t.Cleanup(srv.Close)
	c, err := ezclient.New(ezclient.WithAPIKey("k"), ezclient.WithProxyURL(srv.URL), ezclient.WithEngineURL("http://engine.invalid"),
		ezclient.WithHTTPClient(srv.Client()))
	require.NoError(t, err)
	hdr := func(v string) map[string]string { return map[string]string{"Idempotency-Key": v} }

	t.Run("AutoForward", func(t *testing.T) {
		fe := &ezthrottle.ForwardError{Job: ezclient.Job{
			URL: "https://api.example/charge", Method: "POST", Headers: hdr("root"),
			OnFailure: &ezclient.Job{URL: "https://api.example/refund", Headers: hdr("refund-1")},
			Fallback:  &ezclient.Fallback{Job: &ezclient.Job{URL: "https://backup.example/charge", Headers: map[string]string{"idempotency-key": "fb-1"}}},
		}}
		_, sub, err := ezthrottle.AutoForward(context.Background(), c, func(context.Context) (int, error) { return 0, fe },
			ezthrottle.JobOnSuccess(&ezclient.Job{URL: "https://api.example/notify", Headers: hdr("notify-1")}))
		require.NoError(t, err)
		require.NotNil(t, sub)
		job := eng.last(t)
		assert.Equal(t, "root", nestedKey(job))
		assert.Equal(t, "refund-1", nestedKey(job, "on_failure"))
		assert.Equal(t, "fb-1", nestedKey(job, "fallback_job"))
		assert.Equal(t, "notify-1", nestedKey(job, "on_success"))
	})
	t.Run("Transport", func(t *testing.T) {
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) }))
		t.Cleanup(api.Close)
		tr, err := ezthrottle.New(ezthrottle.WithBase(api.Client().Transport), ezthrottle.WithForwarding(c,
			ezthrottle.JobOnSuccess(&ezclient.Job{URL: "https://api.example/notify", Headers: hdr("notify-2")}),
			ezthrottle.JobFallback(ezclient.OnError(503), &ezclient.Job{URL: "https://backup.example/x", Headers: hdr("fb-2")})))
		require.NoError(t, err)
		resp, err := (&http.Client{Transport: tr}).Get(api.URL + "/x")
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "forwarded")
		job := eng.last(t)
		assert.Nil(t, nestedKey(job), "root: HASH")
		assert.Equal(t, "notify-2", nestedKey(job, "on_success"))
		assert.Equal(t, "fb-2", nestedKey(job, "fallback_job"))
	})
}
