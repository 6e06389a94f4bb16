package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser tests drive a real Chromium (or Chrome) with chromedp. Outside
// CI they skip when no browser is installed; with CI set they fail instead,
// so that CI cannot pass without having run them. EZTHROTTLE_CHROME names
// the browser binary when it is not on PATH.

var browserNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"}

// findBrowser returns the browser binary, or "" when there is none.
func findBrowser() string {
	if p := os.Getenv("EZTHROTTLE_CHROME"); p != "" {
		return p
	}
	for _, n := range browserNames {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// tab is a browser tab of one test.
type tab struct {
	t       *testing.T
	ctx     context.Context
	dialogs atomic.Int32 // JavaScript dialogs (alert, confirm, prompt) opened
	mu      sync.Mutex
	errors  []string // uncaught exceptions of the page
}

// newTab starts a headless browser for the test, closed at cleanup.
func newTab(t *testing.T) *tab {
	t.Helper()
	path := findBrowser()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but no browser was found (looked for %v, or $EZTHROTTLE_CHROME): "+
				"install Debian's chromium package (.ci/services.d/chromium.sh does)", browserNames)
		}
		t.Skipf("no Chromium or Chrome installed (looked for %v on PATH, or $EZTHROTTLE_CHROME): skipping the browser test; "+
			"install one (apt-get install chromium) to run it", browserNames)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 860),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("lang", "en-US"),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	tb := &tab{t: t}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		switch e := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			tb.dialogs.Add(1)
			go func() { _ = chromedp.Do(tb.ctx, dismissDialog()) }() // never leave the page blocked
		case *runtime.EventExceptionThrown:
			tb.mu.Lock()
			tb.errors = append(tb.errors, e.ExceptionDetails.Text+" "+describeException(e))
			tb.mu.Unlock()
		}
	}))
	tb.ctx = ctx
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		acancel()
		t.Fatalf("starting %s: %v", path, err)
	}
	t.Cleanup(func() {
		cancel()
		acancel()
	})
	return tb
}

func describeException(e *runtime.EventExceptionThrown) string {
	if e.ExceptionDetails.Exception != nil && e.ExceptionDetails.Exception.Description != "" {
		return e.ExceptionDetails.Exception.Description
	}
	return ""
}

func dismissDialog() chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		return chromedp.Void{}, err
	}
}

// do runs actions with a bound (a hang becomes a failure, nothing is timed).
func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// waitJS waits until the JavaScript expression is truthy.
func (tb *tab) waitJS(what, expr string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		dctx, dcancel := context.WithTimeout(tb.ctx, 5*time.Second)
		defer dcancel()
		body, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
		tb.t.Fatalf("waiting for %s (%s): %v\npage errors: %v\npage:\n%s", what, expr, err, tb.pageErrors(), body)
	}
}

// eval evaluates a JavaScript expression into T.
func evalJS[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// noReload marks the page; stillSamePage checks that the mark survived
// (the page updated itself, it was not reloaded).
func (tb *tab) markPage() {
	tb.t.Helper()
	evalJS[bool](tb, `(window.__ezthrottleMark = true)`)
}

func (tb *tab) stillSamePage() bool { return evalJS[bool](tb, `window.__ezthrottleMark === true`) }

// pageErrors returns the uncaught exceptions of the page so far.
func (tb *tab) pageErrors() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.errors...)
}

var (
	shotsOnce sync.Once
	shotsDir  string
)

// screenshotDir is $EZTHROTTLE_SCREENSHOTS_DIR, or a temporary directory
// kept after the run (its path is logged).
func screenshotDir(t *testing.T) string {
	shotsOnce.Do(func() {
		if d := os.Getenv("EZTHROTTLE_SCREENSHOTS_DIR"); d != "" {
			shotsDir = d
			_ = os.MkdirAll(d, 0o755)
			return
		}
		d, err := os.MkdirTemp("", "ezthrottle-screenshots-")
		if err == nil {
			shotsDir = d
		}
	})
	return shotsDir
}

// screenshot saves the viewport as name.png in the screenshot directory.
func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	dir := screenshotDir(tb.t)
	if dir == "" {
		tb.t.Log("no screenshot directory; screenshot skipped")
		return ""
	}
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.t.Fatalf("writing %s: %v", p, err)
	}
	tb.t.Logf("screenshot: %s (%d KiB)", p, len(b)/1024)
	return p
}

// quote makes a JavaScript string literal of s.
func quote(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprint("quote: ", err))
	}
	return string(b)
}
