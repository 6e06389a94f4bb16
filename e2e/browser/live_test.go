package browser

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// The Transport's live page shows a host paused by a Retry-After, its
// cause and the job the 429 became, live; the job ID (from the engine) is
// text.
func TestTransportLivePage(t *testing.T) {
	limited := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-limited:
			w.Header().Set("Retry-After", "120")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			w.Header().Set("X-EZTHROTTLE-RPS", "4")
			_, _ = io.WriteString(w, "ok")
		}
	}))
	defer up.Close()
	hostileID := `job_<img src=x onerror=alert(1)>`
	tr, err := ezthrottle.New(ezthrottle.WithPauseJitter(0),
		ezthrottle.WithForwarding(ezthrottle.SubmitterFunc(func(ctx context.Context, j *ezclient.Job) (*ezclient.Submission, error) {
			return &ezclient.Submission{JobID: hostileID, IdempotentKey: "k1", Status: ezclient.StatusQueued}, nil
		})))
	require.NoError(t, err)
	live := httptest.NewServer(tr.LiveHandler())
	defer live.Close()
	hc := &http.Client{Transport: tr}
	get := func() int {
		resp, err := hc.Get(up.URL + "/v1/items")
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, get())

	u, _ := url.Parse(up.URL)
	key := ezthrottle.HostKey(u)
	row := `document.querySelector('tr[data-host=` + quote(key) + `]')`
	tb := newTab(t)
	tb.do("open the live view", chromedp.Navigate(live.URL+"/debug/ezthrottle"))
	tb.waitJS("the host", row+` !== null && `+row+`.textContent.includes("X-Ezthrottle-Rps")`)
	tb.markPage()

	close(limited)
	require.Equal(t, http.StatusAccepted, get(), "the 429 was forwarded")
	tb.waitJS("the pause", row+`.querySelector(".pause").textContent.includes("paused")`)
	pause := evalJS[string](tb, row+`.querySelector(".pause").textContent`)
	assert.Contains(t, pause, "Retry-After: 120 on a 429")
	assert.Contains(t, pause, "until")
	tb.waitJS("the forwarded job", `document.querySelector(".job-id") !== null`)
	assert.Equal(t, hostileID, evalJS[string](tb, `document.querySelector(".job-id").textContent`))
	assert.Equal(t, 0, evalJS[int](tb, `document.querySelectorAll("img").length`))
	assert.True(t, tb.stillSamePage(), "the page updated itself")
	// The countdown moves without a reload.
	first := evalJS[string](tb, row+`.querySelector(".pill").textContent`)
	time.Sleep(1100 * time.Millisecond) // lets the page poll again (no assertion on timing)
	tb.waitJS("the countdown", row+`.querySelector(".pill").textContent !== `+quote(first))
	tb.screenshot("transport-live")
	assert.Zero(t, tb.dialogs.Load())
	assert.Empty(t, tb.pageErrors())
}
