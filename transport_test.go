package ezthrottle_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// reqSnapshot captures everything of a request the Transport must not change.
type reqSnapshot struct {
	method, url, host string
	header            http.Header
	body              io.ReadCloser
	getBody           bool
	ctx               context.Context
	contentLength     int64
}

func snapshot(r *http.Request) reqSnapshot {
	return reqSnapshot{method: r.Method, url: r.URL.String(), host: r.Host, header: r.Header.Clone(),
		body: r.Body, getBody: r.GetBody != nil, ctx: r.Context(), contentLength: r.ContentLength}
}

func assertUnchanged(t *testing.T, before reqSnapshot, r *http.Request) {
	t.Helper()
	after := snapshot(r)
	assert.Equal(t, before.method, after.method)
	assert.Equal(t, before.url, after.url)
	assert.Equal(t, before.host, after.host)
	assert.Equal(t, before.header, after.header)
	assert.True(t, before.body == after.body, "request body replaced")
	assert.Equal(t, before.getBody, after.getBody)
	assert.True(t, before.ctx == after.ctx, "request context replaced")
	assert.Equal(t, before.contentLength, after.contentLength)
}

func newReq(t testing.TB, ctx context.Context, method, u string, body io.ReadCloser) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, u, nil)
	require.NoError(t, err)
	if body != nil {
		r.Body = body
		r.ContentLength = -1
	}
	return r
}

func mustNew(t testing.TB, opts ...ezthrottle.Option) *ezthrottle.Transport {
	t.Helper()
	tr, err := ezthrottle.New(opts...)
	require.NoError(t, err)
	return tr
}

func readAll(t *testing.T, rc io.ReadCloser) string {
	t.Helper()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	return string(b)
}

func TestPassThroughGETPassesTheSameRequest(t *testing.T) {
	var got *http.Request
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		got = r
		return respond(r, 200, "hello"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	req := newReq(t, context.Background(), "GET", "https://API.Example.com/x?y=1", nil)
	req.Header.Set("Authorization", "Bearer k")
	before := snapshot(req)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	assert.True(t, got == req, "the caller's request goes to the base unchanged, not a clone")
	assert.Equal(t, "hello", readAll(t, resp.Body))
	assertUnchanged(t, before, req)
}

func TestSlotHeldUntilBodyClosed(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "data"), nil })
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 1}))
	ml := tr.Limiter().(*ezthrottle.MemoryLimiter)
	key := "https://a.example:443"

	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/1", nil))
	require.NoError(t, err)
	s, _ := ml.Stats(key)
	assert.Equal(t, 1, s.InFlight, "slot held while the body is open")
	require.NoError(t, resp.Body.Close())
	require.NoError(t, resp.Body.Close(), "double close is harmless")
	s, _ = ml.Stats(key)
	assert.Equal(t, 0, s.InFlight)

	// Reading to EOF does not release: Close does, once.
	resp, err = tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/2", nil))
	require.NoError(t, err)
	_, _ = io.ReadAll(resp.Body)
	s, _ = ml.Stats(key)
	assert.Equal(t, 1, s.InFlight)
	tr2slots := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithLimiter(ml),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 2}))
	other, err := tr2slots.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/2b", nil))
	require.NoError(t, err)
	s, _ = ml.Stats(key)
	assert.Equal(t, 2, s.InFlight)
	resp.Body.Close()
	resp.Body.Close()
	s, _ = ml.Stats(key)
	assert.Equal(t, 1, s.InFlight, "released once only")
	other.Body.Close()
	s, _ = ml.Stats(key)
	assert.Equal(t, 0, s.InFlight)

	// A failed round trip releases at once.
	tr2 := mustNew(t, ezthrottle.WithBase(rtFunc(func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("boom")
	})), ezthrottle.WithLimiter(ml), ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 1}))
	_, err = tr2.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/3", nil))
	require.Error(t, err)
	s, _ = ml.Stats(key)
	assert.Equal(t, 0, s.InFlight)
}

func TestHostKey(t *testing.T) {
	for in, want := range map[string]string{
		"https://API.Example.com/x":     "https://api.example.com:443",
		"http://example.com":            "http://example.com:80",
		"HTTP://Example.com:8080/":      "http://example.com:8080",
		"https://[::1]/":                "https://[::1]:443",
		"https://[::1]:8443/":           "https://[::1]:8443",
		"https://user:pw@example.com/a": "https://example.com:443",
	} {
		u, err := url.Parse(in)
		require.NoError(t, err)
		assert.Equal(t, want, ezthrottle.HostKey(u), in)
	}
}

func TestHostLimits(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, ""), nil })
	tr := mustNew(t, ezthrottle.WithBase(base),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 3, Burst: 1, MaxInFlight: 3}),
		ezthrottle.WithHostLimit("api.stripe.com", ezthrottle.Limit{Rate: 25, Burst: 5, MaxInFlight: 10}),
		ezthrottle.WithHostLimit("*.example.com", ezthrottle.Limit{Rate: 7}),
		ezthrottle.WithHostLimit("*.deep.example.com", ezthrottle.Limit{Rate: 8}),
		ezthrottle.WithHostLimit("exact.example.com", ezthrottle.Limit{Rate: 9}),
		ezthrottle.WithHostLimit("localhost:8080", ezthrottle.Unlimited()),
	)
	ml := tr.Limiter().(*ezthrottle.MemoryLimiter)
	for u, want := range map[string]float64{
		"https://api.stripe.com/v1":      25,
		"https://a.example.com/":         7,
		"https://x.deep.example.com/":    8,
		"https://exact.example.com/":     9,
		"https://example.com/":           3,
		"http://localhost:8080/":         math.Inf(1),
		"http://localhost:9090/":         3,
		"https://evilexample.com/":       3,
		"https://API.STRIPE.COM:443/v1/": 25,
	} {
		req := newReq(t, context.Background(), "GET", u, nil)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err, u)
		resp.Body.Close()
		s, ok := ml.Stats(ezthrottle.HostKey(req.URL))
		require.True(t, ok, u)
		assert.Equal(t, want, s.Rate, u)
	}

	for _, bad := range []string{"", "*", "*.", "a/b", "*.*.x"} {
		_, err := ezthrottle.New(ezthrottle.WithHostLimit(bad, ezthrottle.DefaultLimit()))
		assert.Error(t, err, "pattern %q", bad)
	}
	_, err := ezthrottle.New(ezthrottle.WithHostLimit("x.com", ezthrottle.Limit{}))
	assert.Error(t, err)
	_, err = ezthrottle.New(ezthrottle.WithBase(nil))
	assert.Error(t, err)
}

func TestPacingThroughTransport(t *testing.T) {
	clk := newFakeClock()
	var calls atomic.Int32
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		calls.Add(1)
		return respond(r, 200, ""), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk)) // default: 2 rps, burst 1
	do := func() chan error {
		ch := make(chan error, 1)
		go func() {
			resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil))
			if err == nil {
				resp.Body.Close()
			}
			ch <- err
		}()
		return ch
	}
	require.NoError(t, <-do())
	ch := do()
	waitFor(t, "second request waiting", func() bool { return clk.Timers() == 1 })
	assert.Equal(t, int32(1), calls.Load())
	clk.Advance(500 * time.Millisecond)
	require.NoError(t, <-ch)
	assert.Equal(t, int32(2), calls.Load())
}

func TestRetryAfterPausesHost(t *testing.T) {
	clk := newFakeClock()
	var n atomic.Int32
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if n.Add(1) == 1 {
			return respond(r, 429, "slow down", "Retry-After", "3"), nil
		}
		return respond(r, 200, "ok"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithPauseJitter(0),
		ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil))
	require.NoError(t, err)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, "slow down", readAll(t, resp.Body), "no forwarding: the 429 reaches the caller intact")

	// Another path on the same host waits for the pause.
	ch := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/other", nil))
		if err == nil {
			resp.Body.Close()
		}
		ch <- err
	}()
	waitFor(t, "waiting on the pause", func() bool { return clk.Timers() == 1 })
	clk.Advance(2999 * time.Millisecond)
	select {
	case <-ch:
		t.Fatal("request started during the Retry-After pause")
	default:
	}
	clk.Advance(time.Millisecond)
	require.NoError(t, <-ch)
	assert.Equal(t, int32(2), n.Load())

	// Other hosts are not paused.
	resp, err = tr.RoundTrip(newReq(t, context.Background(), "GET", "https://b.example/", nil))
	require.NoError(t, err)
	resp.Body.Close()
}

func TestPauseJitterAndCap(t *testing.T) {
	clk := newFakeClock()
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		return respond(r, 503, "", "Retry-After", "86400"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithMaxPause(time.Minute),
		ezthrottle.WithPauseJitter(time.Second))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil))
	require.NoError(t, err)
	resp.Body.Close()
	s, _ := tr.Limiter().(*ezthrottle.MemoryLimiter).Stats("https://a.example:443")
	pause := s.PausedUntil.Sub(clk.Now())
	assert.Greater(t, pause, time.Minute, "a positive jitter is added")
	assert.LessOrEqual(t, pause, time.Minute+time.Second, "the pause is capped")
}

func TestPaceHeadersApplyToNextRequest(t *testing.T) {
	clk := newFakeClock()
	var hdrs atomic.Value
	hdrs.Store([]string{"X-EZTHROTTLE-RPS", "0.5", "X-EZTHROTTLE-MAX-CONCURRENT", "4"})
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		return respond(r, 200, "", hdrs.Load().([]string)...), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithLearnedLimitCap(100, 50))
	ml := tr.Limiter().(*ezthrottle.MemoryLimiter)
	get := func() {
		resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil))
		require.NoError(t, err)
		resp.Body.Close()
	}
	get()
	s, _ := ml.Stats("https://a.example:443")
	assert.Equal(t, 0.5, s.Rate)
	assert.Equal(t, 4, s.MaxInFlight)

	// The next request already waits 2 s (0.5 rps).
	_, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil).WithContext(deadlineCtx(t, clk.Now().Add(1900*time.Millisecond))))
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, 2*time.Second, te.Wait)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// Zero is floored, garbage ignored, and the cap applies.
	hdrs.Store([]string{"X-EZTHROTTLE-RPS", "0", "X-EZTHROTTLE-MAX-CONCURRENT", "0"})
	clk.Advance(2 * time.Second)
	get()
	s, _ = ml.Stats("https://a.example:443")
	assert.Equal(t, ezthrottle.DefaultMinRate, s.Rate)
	assert.Equal(t, 1, s.MaxInFlight)

	hdrs.Store([]string{"X-EZTHROTTLE-RPS", "NaN", "X-EZTHROTTLE-MAX-CONCURRENT", "-2"})
	clk.Advance(time.Minute)
	get()
	s, _ = ml.Stats("https://a.example:443")
	assert.Equal(t, ezthrottle.DefaultMinRate, s.Rate, "garbage ignored")

	hdrs.Store([]string{"X-Aqueduct-Rps", "5000", "X-Aqueduct-Max-Concurrent", "999"})
	clk.Advance(time.Minute)
	get()
	s, _ = ml.Stats("https://a.example:443")
	assert.Equal(t, 100.0, s.Rate, "capped")
	assert.Equal(t, 50, s.MaxInFlight, "capped")

	// The self-hosted engines' family paces the host too.
	hdrs.Store([]string{"X-Aquifer-Rps", "0.25", "X-Aquifer-Max-Concurrent", "3"})
	clk.Advance(time.Minute)
	get()
	s, _ = ml.Stats("https://a.example:443")
	assert.Equal(t, 0.25, s.Rate, "X-Aquifer-Rps")
	assert.Equal(t, 3, s.MaxInFlight, "X-Aquifer-Max-Concurrent")
}

func deadlineCtx(t *testing.T, d time.Time) context.Context {
	ctx, cancel := context.WithDeadline(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestDeadlineDecisionWithoutForwarding(t *testing.T) {
	clk := newFakeClock()
	var calls atomic.Int32
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		calls.Add(1)
		return respond(r, 200, ""), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 0.1, Burst: 1}))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil))
	require.NoError(t, err)
	resp.Body.Close()

	body := newTrackedBody("payload")
	req := newReq(t, deadlineCtx(t, clk.Now().Add(5*time.Second)), "PUT", "https://a.example/", body)
	before := snapshot(req)
	_, err = tr.RoundTrip(req)
	require.Error(t, err)
	assert.ErrorIs(t, err, ezthrottle.ErrThrottled)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var te *ezthrottle.ThrottleError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Predicted)
	assert.Equal(t, 10*time.Second, te.Wait)
	assert.Equal(t, 0, clk.Timers(), "no wait started")
	assert.True(t, body.Closed(), "body closed when throttled")
	assert.Equal(t, int64(0), body.read.Load())
	assert.Equal(t, int32(1), calls.Load())
	assertUnchanged(t, before, req)

	// WithMaxWait: the cause is ErrMaxWait.
	tr2 := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithLimiter(tr.Limiter()),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 0.1, Burst: 1}), ezthrottle.WithMaxWait(time.Second))
	_, err = tr2.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil))
	assert.ErrorIs(t, err, ezthrottle.ErrMaxWait)
	assert.False(t, errors.Is(err, context.DeadlineExceeded))

	// Through an http.Client the error is a timeout.
	hc := &http.Client{Transport: tr}
	_, err = hc.Do(newReq(t, deadlineCtx(t, clk.Now().Add(time.Second)), "GET", "https://a.example/", nil))
	var ue *url.Error
	require.ErrorAs(t, err, &ue)
	assert.True(t, ue.Timeout())
}

func TestCancelledWhileWaitingClosesBody(t *testing.T) {
	clk := newFakeClock()
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, ""), nil })
	sub := &fakeSubmitter{}
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithForwarding(sub),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1, Burst: 1}))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://a.example/", nil))
	require.NoError(t, err)
	resp.Body.Close()

	ctx, cancel := context.WithCancel(context.Background())
	body := newTrackedBody("x")
	ch := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(newReq(t, ctx, "POST", "https://a.example/", body))
		ch <- err
	}()
	waitFor(t, "waiting", func() bool { return clk.Timers() == 1 })
	cancel()
	err = <-ch
	assert.ErrorIs(t, err, context.Canceled)
	assert.True(t, body.Closed())
	assert.Empty(t, sub.Jobs(), "the caller's own cancellation is never forwarded")
}

// engineFake collects jobs posted through a real *ezclient.Client speaking
// the Cloud proxy envelope.
type engineFake struct {
	mu     sync.Mutex
	jobs   []map[string]any
	raw    []string
	status int    // engine status inside forwarded_response (default 201)
	proxy  int    // proxy HTTP status (default 200)
	reply  string // proxy reply body override
}

func (e *engineFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var env struct {
		TargetURL string `json:"target_url"`
		Body      string `json:"body"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &env)
	e.mu.Lock()
	defer e.mu.Unlock()
	var job map[string]any
	_ = json.Unmarshal([]byte(env.Body), &job)
	e.jobs = append(e.jobs, job)
	e.raw = append(e.raw, env.Body)
	w.Header().Set("Content-Type", "application/json")
	if e.proxy != 0 && e.proxy != 200 {
		w.WriteHeader(e.proxy)
		fmt.Fprint(w, e.reply)
		return
	}
	status := e.status
	if status == 0 {
		status = 201
	}
	key, _ := job["idempotent_key"].(string)
	if key == "" {
		key = fmt.Sprintf("engine-key-%d", len(e.jobs))
	}
	inner := fmt.Sprintf(`{"job_id":"job_%d","status":"queued","idempotent_key":%q,"queued_at":1763674210055}`, len(e.jobs), key)
	if status >= 400 {
		inner = `{"error":"bad job"}`
	}
	q, _ := json.Marshal(inner)
	fmt.Fprintf(w, `{"status":"allowed","forwarded_response":{"status_code":%d,"headers":{},"body":%s}}`, status, q)
}

func (e *engineFake) Jobs() []map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]map[string]any(nil), e.jobs...)
}
