package ezthrottle_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// liveUpstream answers by path: /pace teaches a pace and a cap, /limited
// is a 429 with Retry-After: 30, /quota an exhausted quota, anything else
// a 200.
func liveUpstream(clk *fakeClock) http.RoundTripper {
	return rtFunc(func(r *http.Request) (*http.Response, error) {
		switch r.URL.Path {
		case "/pace":
			return respond(r, 200, "ok", "X-EZTHROTTLE-RPS", "5", "X-EZTHROTTLE-MAX-CONCURRENT", "3"), nil
		case "/aqueduct":
			return respond(r, 200, "ok", "X-Aqueduct-Rps", "7"), nil
		case "/limited":
			return respond(r, 429, "slow down", "Retry-After", "30"), nil
		case "/quota":
			reset := clk.Now().Add(40 * time.Second).Unix()
			return respond(r, 200, "ok", "X-RateLimit-Limit", "100", "X-RateLimit-Remaining", "0",
				"X-RateLimit-Reset", itoa64(reset)), nil
		}
		return respond(r, 200, "ok"), nil
	})
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

func liveGet(t *testing.T, rt http.RoundTripper, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	resp, err := rt.RoundTrip(req)
	if resp != nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

func hostOf(t *testing.T, s ezthrottle.LiveSnapshot, key string) ezthrottle.LiveHost {
	t.Helper()
	for _, h := range s.Hosts {
		if h.Key == key {
			return h
		}
	}
	t.Fatalf("host %s not in the snapshot: %+v", key, s.Hosts)
	return ezthrottle.LiveHost{}
}

func eventsOf(s ezthrottle.LiveSnapshot, host string, kind ezthrottle.LiveEventKind) []ezthrottle.LiveEvent {
	var out []ezthrottle.LiveEvent
	for _, e := range s.Events {
		if e.Host == host && e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func TestLiveSnapshotRecordsOutcomes(t *testing.T) {
	clk := newFakeClock()
	sub := &fakeSubmitter{}
	tr, err := ezthrottle.New(ezthrottle.WithBase(liveUpstream(clk)), ezthrottle.WithClock(clk),
		ezthrottle.WithForwarding(sub), ezthrottle.WithPauseJitter(0), ezthrottle.WithMaxWait(5*time.Second),
		ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
		ezthrottle.WithHostLimit("slow.test", ezthrottle.Limit{Rate: 1, Burst: 1}))
	require.NoError(t, err)
	tr.EnableLive()

	// A pace and a cap, learned once however often they are repeated.
	for range 3 {
		_, err = liveGet(t, tr, "https://pace.test/pace")
		require.NoError(t, err)
		clk.Advance(time.Second) // the learned pace's next token
	}
	_, err = liveGet(t, tr, "https://aq.test/aqueduct")
	require.NoError(t, err)
	// A 429 with Retry-After: forwarded, and the host paused.
	resp, err := liveGet(t, tr, "https://limited.test/limited")
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	pausedAt := clk.Now()
	// The next call cannot wait 30 s (max wait 5 s): refused, then
	// forwarded as an overflow.
	resp, err = liveGet(t, tr, "https://limited.test/other")
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	// An exhausted quota pauses too.
	_, err = liveGet(t, tr, "https://quota.test/quota")
	require.NoError(t, err)
	// A wait: the second call to slow.test waits a second for its token.
	_, err = liveGet(t, tr, "https://slow.test/a")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { _, err := liveGet(t, tr, "https://slow.test/b"); done <- err }()
	waitFor(t, "the second call to wait", func() bool { return clk.Timers() > 0 })
	clk.Advance(time.Second)
	require.NoError(t, <-done)
	// A forward that fails: the caller gets the 429 back.
	sub.mu.Lock()
	sub.err = errors.New("engine down")
	sub.mu.Unlock()
	resp, err = liveGet(t, tr, "https://failing.test/limited")
	require.NoError(t, err)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)

	s := tr.LiveSnapshot()
	assert.True(t, s.Recording)
	assert.Equal(t, "memory", s.Limiter)

	pace := hostOf(t, s, "https://pace.test:443")
	assert.Equal(t, 5.0, pace.LearnedRate)
	assert.Equal(t, ezthrottle.HeaderEZThrottleRPS, pace.LearnedRateHeader)
	assert.Equal(t, 3, pace.LearnedMaxInFlight)
	assert.Equal(t, ezthrottle.HeaderEZThrottleMaxConcurrent, pace.LearnedMaxInFlightBy)
	assert.False(t, pace.LearnedRateAt.IsZero())
	assert.Equal(t, 5.0, pace.InForce.Rate)
	assert.Equal(t, 3, pace.InForce.MaxInFlight)
	assert.True(t, math.IsInf(pace.Configured.Rate, 1))
	assert.Equal(t, int64(3), pace.Admitted)
	assert.Len(t, eventsOf(s, pace.Key, ezthrottle.LiveLearned), 2, "a repeated header is not a new event")

	aq := hostOf(t, s, "https://aq.test:443")
	assert.Equal(t, ezthrottle.HeaderAqueductRPS, aq.LearnedRateHeader)

	lim := hostOf(t, s, "https://limited.test:443")
	assert.True(t, lim.Paused)
	assert.Equal(t, pausedAt.Add(30*time.Second), lim.PausedUntil)
	require.NotNil(t, lim.PauseCause)
	assert.Equal(t, "Retry-After", lim.PauseCause.Header)
	assert.Equal(t, 429, lim.PauseCause.Status)
	assert.Contains(t, lim.PauseCause.Detail, "Retry-After: 30")
	assert.Equal(t, int64(1), lim.Refused)
	assert.Equal(t, int64(2), lim.Forwarded)
	assert.Equal(t, int64(1), lim.Admitted)
	require.Len(t, eventsOf(s, lim.Key, ezthrottle.LiveRefused), 1)
	assert.Contains(t, eventsOf(s, lim.Key, ezthrottle.LiveRefused)[0].Detail, "throttled")
	fw := eventsOf(s, lim.Key, ezthrottle.LiveForwarded)
	require.Len(t, fw, 2)
	assert.Equal(t, ezthrottle.ReasonStatus, fw[0].Reason)
	assert.Equal(t, 429, fw[0].Status)
	assert.Equal(t, "job_1", fw[0].JobID)
	assert.Equal(t, ezthrottle.ReasonOverflow, fw[1].Reason)
	assert.Equal(t, "job_2", fw[1].JobID)
	require.Len(t, s.Forwarded, 2)
	assert.Equal(t, "job_1", s.Forwarded[0].JobID)
	assert.Equal(t, "job_2", s.Forwarded[1].JobID)

	q := hostOf(t, s, "https://quota.test:443")
	assert.True(t, q.Paused)
	require.NotNil(t, q.PauseCause)
	assert.Equal(t, "X-RateLimit", q.PauseCause.Header)
	assert.Contains(t, q.PauseCause.Detail, "quota exhausted")

	slow := hostOf(t, s, "https://slow.test:443")
	assert.Equal(t, int64(2), slow.Admitted)
	assert.Equal(t, int64(1), slow.Waited)
	assert.Equal(t, time.Second, slow.MaxWait)
	assert.Equal(t, time.Second, slow.WaitTotal)
	w := eventsOf(s, slow.Key, ezthrottle.LiveWaited)
	require.Len(t, w, 1)
	assert.Equal(t, time.Second, w[0].Wait)

	failing := hostOf(t, s, "https://failing.test:443")
	assert.Equal(t, int64(1), failing.ForwardFailed)
	ff := eventsOf(s, failing.Key, ezthrottle.LiveForwardFailed)
	require.Len(t, ff, 1)
	assert.Contains(t, ff[0].Detail, "engine down")
	assert.Equal(t, ezthrottle.ReasonStatus, ff[0].Reason)

	// Events are numbered and ordered.
	for i := 1; i < len(s.Events); i++ {
		assert.Less(t, s.Events[i-1].Seq, s.Events[i].Seq)
	}

	// The pause ends with the clock.
	clk.Advance(31 * time.Second)
	lim = hostOf(t, tr.LiveSnapshot(), lim.Key)
	assert.False(t, lim.Paused)
	assert.NotNil(t, lim.PauseCause, "the last pause's cause stays visible")
}

func TestLiveRecordingIsOffUntilEnabled(t *testing.T) {
	tr, err := ezthrottle.New(ezthrottle.WithBase(liveUpstream(newFakeClock())))
	require.NoError(t, err)
	_, err = liveGet(t, tr, "https://pace.test/pace")
	require.NoError(t, err)
	s := tr.LiveSnapshot()
	assert.False(t, s.Recording)
	h := hostOf(t, s, "https://pace.test:443") // the limiter's state is always readable
	assert.True(t, h.HasState)
	assert.Equal(t, 5.0, h.InForce.Rate)
	assert.Zero(t, h.Admitted)
	assert.Empty(t, s.Events)
}

func TestLiveEventRingIsBounded(t *testing.T) {
	clk := newFakeClock()
	tr, err := ezthrottle.New(ezthrottle.WithBase(liveUpstream(clk)), ezthrottle.WithClock(clk),
		ezthrottle.WithForwarding(&fakeSubmitter{}), ezthrottle.WithPauseJitter(0))
	require.NoError(t, err)
	tr.EnableLive()
	n := ezthrottle.LiveEvents + ezthrottle.LiveForwards + 10
	for i := range n {
		_, err := liveGet(t, tr, "https://h"+itoa64(int64(i))+".test/limited")
		require.NoError(t, err)
	}
	s := tr.LiveSnapshot()
	assert.Len(t, s.Events, ezthrottle.LiveEvents)
	assert.Len(t, s.Forwarded, ezthrottle.LiveForwards)
	last := s.Forwarded[len(s.Forwarded)-1]
	assert.Equal(t, "job_"+itoa64(int64(n)), last.JobID, "the newest are kept")
	assert.Equal(t, uint64(2*n), s.Events[len(s.Events)-1].Seq)
}

// countingLimiter is a Limiter that is not the MemoryLimiter (like
// redislimit's): the live view shows what this process saw.
type countingLimiter struct{ inner *ezthrottle.MemoryLimiter }

func (c countingLimiter) Acquire(ctx context.Context, a ezthrottle.Admission) (ezthrottle.Permit, error) {
	return c.inner.Acquire(ctx, a)
}
func (c countingLimiter) Learn(ctx context.Context, key string, s ezthrottle.Signals) {
	c.inner.Learn(ctx, key, s)
}

func TestLiveWithAnotherLimiter(t *testing.T) {
	clk := newFakeClock()
	tr, err := ezthrottle.New(ezthrottle.WithBase(liveUpstream(clk)), ezthrottle.WithClock(clk),
		ezthrottle.WithLimiter(countingLimiter{ezthrottle.NewMemoryLimiter(ezthrottle.MemoryLimiterConfig{Clock: clk})}),
		ezthrottle.WithPauseJitter(0))
	require.NoError(t, err)
	tr.EnableLive()
	_, err = liveGet(t, tr, "https://limited.test/limited")
	require.NoError(t, err)
	s := tr.LiveSnapshot()
	assert.Equal(t, "ezthrottle_test.countingLimiter", s.Limiter)
	h := hostOf(t, s, "https://limited.test:443")
	assert.False(t, h.HasState)
	assert.True(t, h.Paused, "the pause this process saw")
	assert.Equal(t, clk.Now().Add(30*time.Second), h.PausedUntil)
	assert.Equal(t, int64(1), h.Admitted)
	assert.True(t, math.IsNaN(h.Tokens))
}

func TestLiveHandler(t *testing.T) {
	clk := newFakeClock()
	tr, err := ezthrottle.New(ezthrottle.WithBase(liveUpstream(clk)), ezthrottle.WithClock(clk),
		ezthrottle.WithPauseJitter(0), ezthrottle.WithHostLimit("free.test", ezthrottle.Unlimited()))
	require.NoError(t, err)
	srv := httptest.NewServer(tr.LiveHandler())
	defer srv.Close()
	_, err = liveGet(t, tr, "https://limited.test/limited")
	require.NoError(t, err)
	_, err = liveGet(t, tr, "https://free.test/")
	require.NoError(t, err)

	decode := func(resp *http.Response) map[string]any {
		t.Helper()
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		var m map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		return m
	}
	for _, tc := range []struct {
		name   string
		path   string
		accept string
		json   bool
	}{
		{"query", "/?format=json", "", true},
		{"accept", "/", "application/json", true},
		{"browser", "/", "text/html,application/xhtml+xml,application/json;q=0.9", false},
		{"plain", "/", "", false},
		{"query wins", "/?format=html", "application/json", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			if tc.json {
				m := decode(resp)
				hosts := m["hosts"].([]any)
				require.Len(t, hosts, 2)
				free := hosts[0].(map[string]any)
				assert.Equal(t, "https://free.test:443", free["key"])
				assert.Nil(t, free["configured"].(map[string]any)["rate"], "unpaced is null")
				lim := hosts[1].(map[string]any)
				assert.Equal(t, true, lim["paused"])
				assert.Equal(t, "Retry-After", lim["pause_cause"].(map[string]any)["header"])
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
			csp := resp.Header.Get("Content-Security-Policy")
			assert.Contains(t, csp, "script-src 'sha256-")
			assert.NotContains(t, csp, "unsafe-inline")
			assert.Contains(t, string(body), "Transport live view")
			assert.NotContains(t, string(body), "innerHTML", "data is inserted as text only")
		})
	}
	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// The live view adds no allocation to a plain GET, and reading it while
// requests run is race-free.
func TestLiveHotPath(t *testing.T) {
	tr, err := ezthrottle.New(ezthrottle.WithBase(benchBase{}), ezthrottle.WithDefaultLimit(benchLimit))
	require.NoError(t, err)
	req, _ := http.NewRequest("GET", "https://api.example.com/v1/items", nil)
	run := func() {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	run()
	off := testing.AllocsPerRun(200, run)
	tr.EnableLive()
	run()
	on := testing.AllocsPerRun(200, run)
	assert.Equal(t, off, on, "allocations per request with the live view on")

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _ := http.NewRequest("GET", "https://api.example.com/v1/items", nil)
				resp, err := tr.RoundTrip(r)
				if err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	for range 50 {
		s := tr.LiveSnapshot()
		_, err := json.Marshal(s)
		require.NoError(t, err)
	}
	close(stop)
	wg.Wait()
	assert.Positive(t, hostOf(t, tr.LiveSnapshot(), "https://api.example.com:443").Admitted)
}

// Beyond LiveHosts hosts the oldest record is dropped; a dropped host that
// comes back gets a new record.
func TestLiveHostTableIsBounded(t *testing.T) {
	tr, err := ezthrottle.New(ezthrottle.WithBase(benchBase{}), ezthrottle.WithDefaultLimit(benchLimit))
	require.NoError(t, err)
	tr.EnableLive()
	for i := range ezthrottle.LiveHosts + 5 {
		_, err := liveGet(t, tr, "https://h"+itoa64(int64(i))+".test/")
		require.NoError(t, err)
	}
	s := tr.LiveSnapshot()
	recorded := 0
	for _, h := range s.Hosts {
		if h.HasConfigured {
			recorded++
		}
	}
	assert.Equal(t, ezthrottle.LiveHosts, recorded)
	_, err = liveGet(t, tr, "https://h0.test/")
	require.NoError(t, err)
	h := hostOf(t, tr.LiveSnapshot(), "https://h0.test:443")
	assert.True(t, h.HasConfigured)
	assert.Equal(t, int64(1), h.Admitted)
}

// Recording from many goroutines (pauses, learned limits, refusals,
// forwards) while snapshots are read is race-free.
func TestLiveConcurrentRecording(t *testing.T) {
	var n atomic.Int64
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if n.Add(1)%3 == 0 {
			return respond(r, 429, "slow down", "Retry-After", "1"), nil
		}
		return respond(r, 200, "ok", "X-EZTHROTTLE-RPS", itoa64(100+n.Load()%7)), nil
	})
	tr, err := ezthrottle.New(ezthrottle.WithBase(base), ezthrottle.WithForwarding(&fakeSubmitter{}),
		ezthrottle.WithMaxWait(time.Millisecond), ezthrottle.WithPauseJitter(0))
	require.NoError(t, err)
	tr.EnableLive()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				req, _ := http.NewRequest("GET", "https://h"+itoa64(int64((g+i)%3))+".test/", nil)
				if resp, err := tr.RoundTrip(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		s := tr.LiveSnapshot()
		_, err := json.Marshal(s)
		require.NoError(t, err)
		select {
		case <-done:
			s = tr.LiveSnapshot()
			var admitted, refused int64
			for _, h := range s.Hosts {
				admitted += h.Admitted
				refused += h.Refused
			}
			assert.Equal(t, int64(200), admitted+refused, "every request is counted once")
			return
		default:
		}
	}
}
