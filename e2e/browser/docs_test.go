package browser

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// TestDocsScreenshots builds a small but realistic scene (jobs that
// complete, retry, fail and race; signed webhooks, one rejected once; a
// Transport that learns a pace, waits, is paused by Retry-After and
// forwards) and screenshots both pages. With EZTHROTTLE_UPDATE_DOCS=1 it
// writes the README's images into docs/img:
//
//	cd e2e/browser && EZTHROTTLE_UPDATE_DOCS=1 go test -run TestDocsScreenshots .
func TestDocsScreenshots(t *testing.T) {
	const secret = "whsec_docs_0123456789abcdef"
	e, c := startEngine(t, ezlocal.WithWebhookSecrets(ezlocal.DefaultCustomerID, secret, ""),
		ezlocal.WithWebhookRetries(200*time.Millisecond), ezlocal.WithRetryDelay(200*time.Millisecond),
		ezlocal.WithDefaultPace(20, 2))

	// The API the jobs call.
	var flaky atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/reports":
			if flaky.Add(1) == 1 {
				w.Header().Set("Retry-After", "0")
				http.Error(w, `{"error":"busy"}`, http.StatusServiceUnavailable)
				return
			}
		case "/v1/orders/ord_missing":
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no such order"}`)
			return
		}
		_, _ = fmt.Fprintf(w, `{"ok":true,"path":%q}`, r.URL.Path)
	}))
	defer api.Close()
	// A webhook receiver verifying signatures; the audit hook rejects its
	// first delivery.
	var audit atomic.Int32
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if webhook.Verify(r.Header.Get(webhook.SignatureHeader), b, secret) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/audit" && audit.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}))
	defer hooks.Close()

	main := []ezclient.Webhook{{URL: hooks.URL + "/orders"}, {URL: hooks.URL + "/audit", HasQuorumVote: ezclient.Bool(false)}}
	ids := []string{
		submit(t, c, &ezclient.Job{URL: api.URL + "/v1/charges", Method: "POST", Body: `{"amount":1000,"currency":"eur"}`,
			Headers:  map[string]string{"Authorization": "Bearer sk_live_xxx", "Content-Type": "application/json", "Idempotency-Key": "order-42"},
			Webhooks: main, Metadata: map[string]any{"order": "42"}}),
		submit(t, c, &ezclient.Job{URL: api.URL + "/v1/reports", Webhooks: []ezclient.Webhook{{URL: hooks.URL + "/orders"}}}),
		submit(t, c, &ezclient.Job{URL: api.URL + "/v1/orders/ord_missing", Webhooks: []ezclient.Webhook{{URL: hooks.URL + "/orders"}}}),
		submit(t, c, &ezclient.Job{URL: api.URL + "/v1/prices", Regions: []ezclient.Region{ezclient.RegionIAD, ezclient.RegionLAX, ezclient.RegionFRA},
			ExecutionMode: ezclient.ExecutionRace}),
		submit(t, c, &ezclient.Job{URL: api.URL + "/v1/customers/cus_7", Regions: []ezclient.Region{ezclient.RegionAMS}}),
	}
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := e.WaitJob(ctx, id)
		cancel()
		require.NoError(t, err)
	}
	// Jobs still running (two in flight, one queued: 2 in flight per
	// region) when the picture is taken.
	gate := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(gate)
	var running string
	for i := range 3 {
		running = submit(t, c, &ezclient.Job{URL: slow.URL + "/v1/exports/" + strconv.Itoa(i+1), Method: "POST", Body: `{"format":"csv"}`})
	}
	su, _ := url.Parse(slow.URL)

	tb := newTab(t)
	tb.do("open the dashboard", chromedp.Navigate(e.URL()))
	tb.waitJS("the running job", rowStatus(running)+` === "in_flight"`)
	tb.waitJS("every job", `document.querySelectorAll('tr[data-job-id]').length === 8`)
	tb.waitJS("the queue", `(function(){var r=document.querySelector('tr[data-host=`+quote(su.Host)+`]');return r&&r.children[2].textContent==="2"&&r.children[3].textContent==="1"})()`)
	docShot(t, tb, "dashboard", false)

	tb.do("open a job", chromedp.Navigate(e.URL()+"/ui/jobs/"+ids[0]))
	tb.waitJS("its deliveries", `document.getElementById("quorum") !== null && document.getElementById("webhooks").textContent.includes("signed · accepted")`)
	docShot(t, tb, "dashboard-job", true)

	// The Transport: one API paces it, one pauses it with Retry-After (the
	// call is forwarded to the engine), calls wait for their turn.
	paced := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-EZTHROTTLE-RPS", "8")
		w.Header().Set("X-EZTHROTTLE-MAX-CONCURRENT", "3")
		_, _ = io.WriteString(w, "ok")
	}))
	defer paced.Close()
	limited := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "90")
		http.Error(w, "quota exceeded", http.StatusTooManyRequests)
	}))
	defer limited.Close()
	tr, err := ezthrottle.New(ezthrottle.WithClient(c), ezthrottle.WithPauseJitter(0),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 20, Burst: 2, MaxInFlight: 4}))
	require.NoError(t, err)
	live := httptest.NewServer(tr.LiveHandler())
	defer live.Close()
	hc := &http.Client{Transport: tr}
	call := func(u string) {
		resp, err := hc.Get(u)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() { defer wg.Done(); call(paced.URL + "/v1/items?page=" + strconv.Itoa(i)) }()
	}
	wg.Wait()
	call(limited.URL + "/v1/search?q=shoes")
	lu, _ := url.Parse(limited.URL)
	tb.do("open the live view", chromedp.Navigate(live.URL))
	tb.waitJS("the pause", `(function(){var r=document.querySelector('tr[data-host=`+quote(ezthrottle.HostKey(lu))+`]');return r&&r.textContent.includes("Retry-After: 90")})()`)
	docShot(t, tb, "transport-live", false)
}

// docShot saves a screenshot in the screenshot directory, and in docs/img
// with EZTHROTTLE_UPDATE_DOCS=1; full takes the whole page.
func docShot(t *testing.T, tb *tab, name string, full bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	var (
		b   []byte
		err error
	)
	if full {
		b, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	} else {
		b, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	}
	require.NoError(t, err)
	docs := filepath.Join("..", "..", "docs", "img")
	dirs := []string{screenshotDir(t)}
	if os.Getenv("EZTHROTTLE_UPDATE_DOCS") == "1" {
		dirs = append(dirs, docs)
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		require.NoError(t, os.MkdirAll(d, 0o755))
		p := filepath.Join(d, name+".png")
		require.NoError(t, os.WriteFile(p, b, 0o644))
		if d == docs {
			shrinkPNG(t, p)
		}
		if st, err := os.Stat(p); err == nil {
			t.Logf("screenshot: %s (%d KiB)", p, st.Size()/1024)
		}
	}
}

// shrinkPNG quantizes a committed image with pngquant when it is installed
// (apt-get install pngquant): a third of the size, no visible change.
func shrinkPNG(t *testing.T, p string) {
	bin, err := exec.LookPath("pngquant")
	if err != nil {
		t.Logf("pngquant not installed: %s left unquantized", p)
		return
	}
	if out, err := exec.Command(bin, "--quality", "70-90", "--force", "--ext", ".png", p).CombinedOutput(); err != nil {
		t.Logf("pngquant %s: %v %s", p, err, out)
	}
}
