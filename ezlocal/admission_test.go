package ezlocal

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// Regression tests: the self-hosted admission check (WithAdmissionLimit)
// scanned every job the engine held on each POST /jobs, and ran apart from
// the registration of the job, so that concurrent submissions could all
// pass it. It is now an index of unfinished jobs per user, updated as jobs
// start, finish and are dropped, read and updated under the lock that
// registers the job.

// scanUnfinished counts unfinished jobs per owner the slow way.
func scanUnfinished(e *Engine) map[owner]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[owner]int{}
	for _, j := range e.order {
		if !j.dropped && !j.finished() {
			m[owner{j.dialect, j.customer}]++
		}
	}
	return m
}

// requireIndexExact checks the index against a scan.
func requireIndexExact(t *testing.T, e *Engine) {
	t.Helper()
	want := scanUnfinished(e)
	e.mu.Lock()
	got := make(map[owner]int, len(e.unfinished))
	for k, v := range e.unfinished {
		got[k] = v
	}
	e.mu.Unlock()
	require.Equal(t, want, got)
}

// gate is a destination that holds every request until released (or the
// client goes away).
type gate struct {
	*httptest.Server
	release chan struct{}
	once    sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{release: make(chan struct{})}
	g.Server = server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-g.release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func TestAdmissionIndexFollowsJobsThroughTheirLife(t *testing.T) {
	for _, keep := range []int{0, 1} {
		t.Run(fmt.Sprintf("max_finished=%d", keep), func(t *testing.T) {
			opts := []Option{WithAdmissionLimit(2, time.Second)}
			if keep > 0 {
				opts = append(opts, WithMaxFinishedJobs(keep))
			}
			e, _ := startEngine(t, opts...)
			g := newGate(t)
			ok := okServer(t)
			hook := newReceiver(t, nil)
			post := func(user, key, url string) (int, map[string]any) {
				return postJobs(t, e, selfJob(map[string]any{"user_id": user, "idempotent_key": key, "url": url, "method": "GET", "webhook_url": hook.URL}))
			}
			// Finished jobs never count, dropped or not.
			for i := range 3 {
				code, m := post("u", fmt.Sprint("done", i), ok.URL)
				require.Equal(t, http.StatusCreated, code)
				waitJob(t, e, m["job_id"].(string))
				requireIndexExact(t, e)
			}
			code, a := post("u", "a", g.URL)
			require.Equal(t, http.StatusCreated, code)
			code, _ = post("u", "b", g.URL)
			require.Equal(t, http.StatusCreated, code)
			requireIndexExact(t, e)
			code, m := post("u", "c", ok.URL)
			require.Equal(t, http.StatusTooManyRequests, code, "u has 2 unfinished jobs")
			assert.Contains(t, m["error"], "has 2 unfinished jobs (limit 2)")
			code, _ = post("u", "a", g.URL)
			assert.Equal(t, http.StatusOK, code, "a duplicate is always answered")
			code, _ = post("other", "c", ok.URL)
			assert.Equal(t, http.StatusCreated, code, "users are counted apart")
			// A Cloud customer with the same name is another owner.
			_, err := e.submit(ezclient.DialectCloud, "u", "cloud-1", &ezclient.Job{URL: g.URL}, "", "")
			require.NoError(t, err)
			code, _ = post("u", "c", ok.URL)
			require.Equal(t, http.StatusTooManyRequests, code)
			requireIndexExact(t, e)

			g.open() // a and b (and the Cloud job) finish
			waitJob(t, e, a["job_id"].(string))
			require.NoError(t, e.WaitIdle(context.Background()))
			requireIndexExact(t, e)
			e.mu.Lock()
			assert.Empty(t, e.unfinished, "no entry is left for owners without unfinished jobs")
			e.mu.Unlock()
			code, m = post("u", "c", ok.URL)
			require.Equal(t, http.StatusCreated, code, "finished jobs free their places")
			waitJob(t, e, m["job_id"].(string))
			requireIndexExact(t, e)
		})
	}
}

// The check and the registration are one step: concurrent submissions
// never admit more than the limit.
func TestAdmissionLimitHoldsUnderConcurrentSubmissions(t *testing.T) {
	const limit, n = 5, 40
	e, _ := startEngine(t, WithAdmissionLimit(limit, time.Second))
	g := newGate(t)
	hook := newReceiver(t, nil)
	codes := make(chan int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			body := selfJob(map[string]any{"user_id": "u", "idempotent_key": fmt.Sprint("k", i), "url": g.URL, "method": "GET", "webhook_url": hook.URL})
			resp, err := http.Post(e.URL()+"/jobs", "application/json", strings.NewReader(body))
			if !assert.NoError(t, err) {
				return
			}
			_ = resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	assert.Equal(t, map[int]int{http.StatusCreated: limit, http.StatusTooManyRequests: n - limit}, count)
	requireIndexExact(t, e)
	g.open()
	require.NoError(t, e.WaitIdle(context.Background()))
	requireIndexExact(t, e)
}

// pausingClock is an instant clock whose first Now after arm blocks until
// release: it stops a submission between its admission check and the
// registration of its job (the old code checked, unlocked, then read the
// clock and registered).
type pausingClock struct {
	*testClock
	mu      sync.Mutex
	armed   bool
	paused  chan struct{}
	release chan struct{}
}

func (c *pausingClock) arm() {
	c.mu.Lock()
	c.armed, c.paused, c.release = true, make(chan struct{}), make(chan struct{})
	c.mu.Unlock()
}

func (c *pausingClock) Now() time.Time {
	c.mu.Lock()
	armed := c.armed
	c.armed = false
	paused, release := c.paused, c.release
	c.mu.Unlock()
	if armed {
		close(paused)
		<-release
	}
	return c.testClock.Now()
}

// A submission paused on its way to registration does not let another one
// pass the same place in the limit: whichever registers second is refused.
func TestAdmissionCheckAndRegistrationAreOneStep(t *testing.T) {
	clk := &pausingClock{testClock: newTestClock()}
	e, err := Start(WithClock(clk), WithAdmissionLimit(1, time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	g := newGate(t)
	hook := newReceiver(t, nil)
	post := func(key string) int {
		body := selfJob(map[string]any{"user_id": "u", "idempotent_key": key, "url": g.URL, "method": "GET", "webhook_url": hook.URL})
		resp, err := http.Post(e.URL()+"/jobs", "application/json", strings.NewReader(body))
		if !assert.NoError(t, err) {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	clk.arm()
	first := make(chan int, 1)
	go func() { first <- post("first") }()
	<-clk.paused // the first submission is on its way, not registered yet
	assert.Equal(t, http.StatusCreated, post("second"))
	close(clk.release)
	assert.Equal(t, http.StatusTooManyRequests, <-first, "the limit of 1 admitted two jobs")
	assert.Len(t, e.Jobs(), 1)
	requireIndexExact(t, e)
}

// BenchmarkSelfHostedAdmission measures the admission check of a POST /jobs
// (the request refused with 429: the check runs in full, no job is created)
// on an engine holding 2,000 and 20,000 finished jobs. The cost must not
// grow with the number of jobs.
//
//	go test -run '^$' -bench SelfHostedAdmission -benchtime 20000x ./ezlocal/
func BenchmarkSelfHostedAdmission(b *testing.B) {
	for _, n := range []int{2000, 20000} {
		b.Run(fmt.Sprintf("jobs=%d", n), func(b *testing.B) {
			okSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			defer okSrv.Close()
			hold := make(chan struct{})
			holdSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-hold:
				case <-r.Context().Done():
				}
			}))
			defer holdSrv.Close()
			defer close(hold)
			e, err := New(WithClock(instantClock{}), WithDefaultPace(1e6, 64), WithAdmissionLimit(1, time.Second))
			require.NoError(b, err)
			defer e.Close()
			for i := range n {
				if _, err := e.submit(ezclient.DialectSelfHosted, fmt.Sprint("user", i%50), fmt.Sprint(i), &ezclient.Job{URL: okSrv.URL}, "", ""); err != nil {
					b.Fatal(err)
				}
			}
			require.NoError(b, e.WaitIdle(context.Background()))
			// u has one unfinished job: every POST below is refused.
			_, err = e.submit(ezclient.DialectSelfHosted, "u", "held", &ezclient.Job{URL: holdSrv.URL}, "", "")
			require.NoError(b, err)
			body := selfJob(map[string]any{"user_id": "u", "idempotent_key": "new", "url": okSrv.URL, "method": "GET", "webhook_url": okSrv.URL})
			h := e.Handler()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/jobs", strings.NewReader(body))
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusTooManyRequests {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
