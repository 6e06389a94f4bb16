package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

func TestSubmitWait(t *testing.T) {
	e, err := ezlocal.Start(ezlocal.WithWebhookRetries())
	require.NoError(t, err)
	defer e.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.Error(w, "nope", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer api.Close()
	cloud := env{"EZTHROTTLE_API_KEY": e.APIKey(), "EZTHROTTLE_PROXY_URL": e.URL(), "EZTHROTTLE_URL": e.URL()}

	t.Run("local engine, completed", func(t *testing.T) {
		code, out, errs := exec(t, context.Background(), cloud, "", "submit", "--url", api.URL+"/ok", "--webhook", api.URL+"/hook", "--wait")
		require.Equal(t, 0, code, errs)
		var sub ezclient.Submission
		require.NoError(t, json.Unmarshal([]byte(out), &sub), "stdout keeps the submission JSON only")
		assert.Contains(t, errs, "Following job "+sub.JobID+" (dashboard: "+e.URL()+"/ui/jobs/"+sub.JobID+")")
		for _, want := range []string{"queued", "dispatched", "attempt", "status 200", "completed", "webhook_delivered", "Job " + sub.JobID + " completed."} {
			assert.Contains(t, errs, want)
		}
	})
	t.Run("local engine, failed", func(t *testing.T) {
		code, _, errs := exec(t, context.Background(), cloud, "", "submit", "--url", api.URL+"/missing", "--wait")
		assert.Equal(t, 1, code)
		assert.Contains(t, errs, "status 404")
		assert.Regexp(t, `job \S+ failed: .*404`, errs)
	})
	t.Run("self-hosted stream", func(t *testing.T) {
		code, _, errs := exec(t, context.Background(), env{"EZTHROTTLE_USER_ID": "u1"}, "",
			"submit", "--self-hosted", e.URL(), "--url", api.URL+"/sh", "--webhook", api.URL+"/hook", "--wait")
		require.Equal(t, 0, code, errs)
		assert.Contains(t, errs, "self-hosted event stream")
		assert.Contains(t, errs, "completed")
		assert.Contains(t, errs, "status 200")
	})
}

func TestFollowNeedsALocalEngine(t *testing.T) {
	var calls atomic.Int32
	cloudish := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "not found", http.StatusNotFound)
	}))
	defer cloudish.Close()
	// submit --wait against an engine that cannot be followed submits
	// nothing and says why.
	e := env{"EZTHROTTLE_API_KEY": "k", "EZTHROTTLE_PROXY_URL": cloudish.URL, "EZTHROTTLE_URL": cloudish.URL}
	code, out, errs := exec(t, context.Background(), e, "", "submit", "--url", "https://api.example.com/x", "--wait")
	assert.Equal(t, 1, code)
	assert.Empty(t, out)
	assert.Contains(t, errs, "nothing was submitted")
	assert.Contains(t, errs, "EZThrottle Cloud reports results to your webhooks")
	assert.Equal(t, int32(1), calls.Load(), "only the probe")

	_, err := getLocalJob(context.Background(), http.DefaultClient, cloudish.URL+"/ui/api/jobs/x")
	require.Error(t, err)
	assert.True(t, errors.Is(err, errNoProgress))
	assert.Contains(t, err.Error(), "404")
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                 "plain",
		"a\x1b[31mred\x1b[0m":   "a?[31mred?[0m",
		"line\nbreak\ttab\r":    "line?break?tab?",
		"<script>ok</script>":   "<script>ok</script>",
		"\u202eRLO is a format": "\u202eRLO is a format",
	} {
		assert.Equal(t, want, printable(in), "%q", in)
	}
}

func TestDevPrintsTheDashboard(t *testing.T) {
	dev := background(t, env{}, "dev", "--addr", "127.0.0.1:0")
	url := dev.out.waitFor(t, `dashboard +(\S+)`)
	engine := dev.out.waitFor(t, `export EZTHROTTLE_URL=(\S+)`)
	assert.Equal(t, engine+"/", url)
	resp, err := http.Get(url)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	http.DefaultClient.CloseIdleConnections()
	assert.Equal(t, 0, dev.stop())
}
