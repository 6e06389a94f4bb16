package browser

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// startEngine starts a local engine (real clock) and a client for it.
func startEngine(t *testing.T, opts ...ezlocal.Option) (*ezlocal.Engine, *ezclient.Client) {
	t.Helper()
	e, err := ezlocal.Start(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	c, err := ezclient.New(ezclient.WithAPIKey(e.APIKey()), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()))
	require.NoError(t, err)
	return e, c
}

func submit(t *testing.T, c *ezclient.Client, job *ezclient.Job) string {
	t.Helper()
	sub, err := c.Submit(context.Background(), job)
	require.NoError(t, err)
	return sub.JobID
}

// rowStatus is the JavaScript that reads a job row's status in the list.
func rowStatus(id string) string {
	return `(function(){var r=document.querySelector('tr[data-job-id=` + quote(id) + `]');return r?r.getAttribute('data-status'):''})()`
}

// The dashboard lists jobs submitted through the API as they arrive and
// follows them to completed / failed without a reload; the filters and the
// job page work.
func TestDashboardFollowsJobs(t *testing.T) {
	e, c := startEngine(t)
	gate := make(chan struct{})
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
			_, _ = io.WriteString(w, `{"ok":true}`)
		case "/missing":
			http.Error(w, "no such thing", http.StatusNotFound)
		default:
			_, _ = io.WriteString(w, `{"ok":true}`)
		}
	}))
	defer dest.Close()
	var once bool
	defer func() {
		if !once {
			close(gate)
		}
	}()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer hook.Close()

	tb := newTab(t)
	tb.do("open the dashboard", chromedp.Navigate(e.URL()))
	tb.waitJS("the empty list", `document.body.textContent.includes("No job yet")`)
	tb.markPage()

	slow := submit(t, c, &ezclient.Job{URL: dest.URL + "/slow", Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
	missing := submit(t, c, &ezclient.Job{URL: dest.URL + "/missing"})
	tb.waitJS("the slow job running", rowStatus(slow)+` === "in_flight"`)
	tb.waitJS("the missing job failed", rowStatus(missing)+` === "failed"`)
	once = true
	close(gate)
	tb.waitJS("the slow job completed", rowStatus(slow)+` === "completed"`)
	assert.True(t, tb.stillSamePage(), "the list updated itself, without a reload")
	tb.screenshot("dashboard-jobs")

	// Filter by status.
	tb.do("filter failed", chromedp.Click(`button[data-filter="failed"]`))
	tb.waitJS("only the failed job", `document.querySelectorAll('tr[data-job-id]').length === 1 && `+rowStatus(missing)+` === "failed"`)
	assert.Contains(t, evalJS[string](tb, `location.search`), "status=failed")
	tb.do("filter all", chromedp.Click(`button[data-filter=""]`))
	tb.waitJS("both jobs", `document.querySelectorAll('tr[data-job-id]').length === 2`)

	// The job page, by clicking and by URL.
	tb.do("open the job", chromedp.Click(`tr[data-job-id=`+quote(slow)+`] a.job-link`))
	tb.waitJS("the job page", `document.getElementById("job-id") && document.getElementById("job-id").textContent === `+quote(slow))
	tb.waitJS("the webhook delivered", `document.getElementById("webhooks").textContent.includes("delivered")`)
	page := evalJS[string](tb, `document.getElementById("main").textContent`)
	assert.Contains(t, page, "Event history")
	assert.Contains(t, page, "iad", "the region that ran the attempt")
	assert.Contains(t, evalJS[string](tb, `document.getElementById("events").textContent`), "completed")
	assert.True(t, tb.stillSamePage(), "navigation within the dashboard does not reload")
	tb.screenshot("dashboard-job")

	tb.do("open a job by URL", chromedp.Navigate(e.URL()+"/ui/jobs/"+missing))
	tb.waitJS("the failed job page", `document.getElementById("job-id") && document.getElementById("job-id").textContent === `+quote(missing))
	tb.waitJS("its failure", `document.getElementById("main").textContent.includes("404")`)
	tb.do("open an unknown job", chromedp.Navigate(e.URL()+"/ui/jobs/job_nope"))
	tb.waitJS("not found", `document.getElementById("main").textContent.includes("No job with this ID")`)
	assert.Empty(t, tb.pageErrors())
	assert.Zero(t, tb.dialogs.Load())
}

// A job whose URL, headers and body (and reply) carry markup shows it as
// text: no script runs, no element is made from it.
func TestDashboardHostileMarkup(t *testing.T) {
	e, c := startEngine(t)
	hostileBody := `<script>window.__pwned=1;alert("body")</script><img src=x onerror="window.__pwned=2;alert(2)">`
	hostilePath := `/x?q=<script>alert(1)</script><b>bold</b>`
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Evil", `<img src=x onerror=alert(3)>`)
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b) // echo the hostile body as the result
	}))
	defer dest.Close()
	id := submit(t, c, &ezclient.Job{
		URL: dest.URL + hostilePath, Method: "POST", Body: hostileBody,
		Headers: map[string]string{"X-Note": `"><svg onload=alert(4)>`},
	})
	_, err := e.WaitJob(context.Background(), id)
	require.NoError(t, err)

	tb := newTab(t)
	tb.do("open the dashboard", chromedp.Navigate(e.URL()))
	tb.waitJS("the job row", rowStatus(id)+` === "completed"`)
	url := evalJS[string](tb, `document.querySelector('tr[data-job-id=`+quote(id)+`] .job-url').textContent`)
	assert.Contains(t, url, `<script>alert(1)</script><b>bold</b>`, "the URL shows as text")

	tb.do("open the job", chromedp.Navigate(e.URL()+"/ui/jobs/"+id))
	tb.waitJS("the job page", `document.getElementById("result-body") !== null`)
	assert.Equal(t, hostileBody, evalJS[string](tb, `document.getElementById("job-body").textContent`))
	assert.Equal(t, hostileBody, evalJS[string](tb, `document.getElementById("result-body").textContent`))
	assert.Contains(t, evalJS[string](tb, `document.getElementById("job-url").textContent`), `<script>alert(1)</script>`)
	main := evalJS[string](tb, `document.getElementById("main").textContent`)
	assert.Contains(t, main, `"><svg onload=alert(4)>`)
	assert.Contains(t, main, `<img src=x onerror=alert(3)>`)
	tb.screenshot("dashboard-hostile")

	// Nothing was made from the data: only the dashboard's own script, no
	// image, svg or bold element, no script ran.
	assert.Equal(t, 1, evalJS[int](tb, `document.querySelectorAll("script").length`))
	assert.Equal(t, 0, evalJS[int](tb, `document.querySelectorAll("img, svg, b, iframe").length`))
	assert.True(t, evalJS[bool](tb, `typeof window.__pwned === "undefined"`))
	assert.Zero(t, tb.dialogs.Load(), "no alert opened")
	assert.Empty(t, tb.pageErrors())
	assert.False(t, strings.Contains(evalJS[string](tb, `document.title`), "<"))
}
