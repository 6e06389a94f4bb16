package ezlocal

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/testnet"
)

// scripted answers the n-th request (1-based) with codes[n-1], then the
// last code forever.
func scripted(t *testing.T, codes ...int) (url string, hits *atomic.Int32) {
	hits = new(atomic.Int32)
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		n := int(hits.Add(1))
		code := codes[min(n, len(codes))-1]
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "reply "+strconv.Itoa(n))
	})
	return s.URL, hits
}

// byRegion answers with the code of the region the engine says it runs in
// (X-EZThrottle-Region); regions not listed block until cancelled.
func byRegion(t *testing.T, codes map[string]int) (url string, seen func() map[string]int) {
	var mu sync.Mutex
	count := map[string]int{}
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		region := r.Header.Get("X-EZThrottle-Region")
		mu.Lock()
		count[region]++
		mu.Unlock()
		code, ok := codes[region]
		if !ok {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "from "+region)
	})
	return s.URL, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range count {
			out[k] = v
		}
		return out
	}
}

// blocking never answers until the request is cancelled.
func blocking(t *testing.T) string {
	return server(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }).URL
}

func TestRetryPolicyRetryCodes(t *testing.T) {
	e, clk := startEngine(t, WithRetryDelay(250*time.Millisecond))
	t.Run("retried until success", func(t *testing.T) {
		url, hits := scripted(t, 503, 503, 200)
		info := submitWait(t, e, &ezclient.Job{URL: url, RetryPolicy: &ezclient.RetryPolicy{MaxRetries: 3, RetryCodes: []int{503}}})
		assert.Equal(t, ezclient.StatusCompleted, info.Status, "%v", info.Events)
		assert.EqualValues(t, 3, hits.Load())
		retried := info.EventsOf(EventRetried)
		require.Len(t, retried, 2)
		for _, ev := range retried {
			assert.Equal(t, "iad", ev.Region, "retries stay in the same region")
			assert.Equal(t, 503, ev.StatusCode)
		}
		assert.Equal(t, []time.Duration{250 * time.Millisecond, 500 * time.Millisecond}, []time.Duration{retried[0].Delay, retried[1].Delay})
		assert.Empty(t, info.EventsOf(EventRerouted))
		assert.Equal(t, "reply 3", info.Result.Body)
	})
	t.Run("max_retries exhausted", func(t *testing.T) {
		url, hits := scripted(t, 503)
		info := submitWait(t, e, &ezclient.Job{URL: url, RetryPolicy: &ezclient.RetryPolicy{MaxRetries: 1, RetryCodes: []int{503}}})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.EqualValues(t, 2, hits.Load())
		assert.Equal(t, 503, info.Result.StatusCode)
		assert.Contains(t, info.Reason, "503")
	})
	t.Run("code not in retry_codes", func(t *testing.T) {
		url, hits := scripted(t, 500, 200)
		info := submitWait(t, e, &ezclient.Job{URL: url, RetryPolicy: &ezclient.RetryPolicy{MaxRetries: 3, RetryCodes: []int{503}}})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.EqualValues(t, 1, hits.Load())
	})
	t.Run("Retry-After honoured", func(t *testing.T) {
		var n atomic.Int32
		s := server(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.WriteHeader(http.StatusOK)
		})
		before := len(clk.Sleeps())
		info := submitWait(t, e, &ezclient.Job{URL: s.URL}) // default policy retries 429
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		retried := info.EventsOf(EventRetried)
		require.Len(t, retried, 1)
		assert.Equal(t, 7*time.Second, retried[0].Delay)
		assert.Contains(t, clk.Sleeps()[before:], 7*time.Second)
	})
}

func TestRetryPolicyRerouteCodes(t *testing.T) {
	e, _ := startEngine(t)
	url, seen := byRegion(t, map[string]int{"iad": 500, "lax": 200, "ord": 500})
	info := submitWait(t, e, &ezclient.Job{URL: url, RetryPolicy: &ezclient.RetryPolicy{MaxReroutes: 2, RerouteCodes: []int{500}}})
	assert.Equal(t, ezclient.StatusCompleted, info.Status, "%v", info.Events)
	assert.Equal(t, "lax", info.Result.Region)
	rr := info.EventsOf(EventRerouted)
	require.Len(t, rr, 1)
	assert.Equal(t, "iad", rr[0].FromRegion)
	assert.Equal(t, "lax", rr[0].Region)
	assert.Equal(t, 500, rr[0].StatusCode)
	assert.Equal(t, map[string]int{"iad": 1, "lax": 1}, seen())

	t.Run("max_reroutes exhausted", func(t *testing.T) {
		url, seen := byRegion(t, map[string]int{"iad": 500, "lax": 500, "ord": 500, "ams": 200})
		info := submitWait(t, e, &ezclient.Job{URL: url, RetryPolicy: &ezclient.RetryPolicy{MaxReroutes: 2, RerouteCodes: []int{500}}})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.Len(t, info.EventsOf(EventRerouted), 2)
		assert.Equal(t, map[string]int{"iad": 1, "lax": 1, "ord": 1}, seen())
	})
	t.Run("strict reroutes only within the job's regions", func(t *testing.T) {
		url, seen := byRegion(t, map[string]int{"iad": 500, "lax": 200})
		info := submitWait(t, e, &ezclient.Job{URL: url, Regions: []ezclient.Region{"iad"}, RegionPolicy: ezclient.RegionPolicyStrict,
			RetryPolicy: &ezclient.RetryPolicy{MaxReroutes: 2, RerouteCodes: []int{500}}})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.Equal(t, map[string]int{"iad": 1}, seen())
	})
	t.Run("retry then reroute", func(t *testing.T) {
		url, seen := byRegion(t, map[string]int{"iad": 503, "lax": 200})
		info := submitWait(t, e, &ezclient.Job{URL: url, RetryPolicy: &ezclient.RetryPolicy{
			MaxRetries: 1, RetryCodes: []int{503}, MaxReroutes: 1, RerouteCodes: []int{503}}})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		assert.Equal(t, map[string]int{"iad": 2, "lax": 1}, seen())
		assert.Equal(t, []EventType{EventRetried, EventRerouted}, types(info.EventsOf(EventRetried, EventRerouted)))
	})
}

func TestRegionPolicy(t *testing.T) {
	e, _ := startEngine(t)
	url, seen := byRegion(t, map[string]int{"iad": 200, "lax": 200, "ord": 200, "ams": 200})
	require.NoError(t, e.SetRegionDown("iad", true))
	require.ErrorIs(t, e.SetRegionDown("mars", true), ErrUnknownRegion)

	t.Run("fallback routes around a down region", func(t *testing.T) {
		info := submitWait(t, e, &ezclient.Job{URL: url + "/fb", Regions: []ezclient.Region{"iad"}})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		assert.Equal(t, "lax", info.Result.Region)
		assert.True(t, info.Has(EventRegionDown))
		rr := info.EventsOf(EventRerouted)
		require.Len(t, rr, 1)
		assert.Equal(t, "iad", rr[0].FromRegion)
	})
	t.Run("strict fails instead", func(t *testing.T) {
		before := seen()
		info := submitWait(t, e, &ezclient.Job{URL: url + "/strict", Regions: []ezclient.Region{"iad"}, RegionPolicy: ezclient.RegionPolicyStrict})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.Contains(t, info.Reason, "strict")
		assert.Equal(t, before, seen(), "no request may be made")
	})
	t.Run("strict race runs in the requested regions that are up", func(t *testing.T) {
		info := submitWait(t, e, &ezclient.Job{URL: url + "/sr", Regions: []ezclient.Region{"iad", "ord"}, RegionPolicy: ezclient.RegionPolicyStrict})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		assert.Equal(t, "ord", info.Result.Region)
	})
	t.Run("back up", func(t *testing.T) {
		require.NoError(t, e.SetRegionDown("iad", false))
		info := submitWait(t, e, &ezclient.Job{URL: url + "/up", Regions: []ezclient.Region{"iad"}, RegionPolicy: ezclient.RegionPolicyStrict})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		assert.Equal(t, "iad", info.Result.Region)
	})
	t.Run("every region down", func(t *testing.T) {
		e2, _ := startEngine(t, WithRegions(RegionConfig{Name: "iad", Down: true}, RegionConfig{Name: "lax", Down: true}))
		info := submitWait(t, e2, &ezclient.Job{URL: url + "/none"})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.Contains(t, info.Reason, "every region is down")
	})
}

func TestRaceFirstCompletionWins(t *testing.T) {
	e, _ := startEngine(t)
	// iad and ord hang; lax answers: lax wins and the others are cancelled.
	url, seen := byRegion(t, map[string]int{"lax": 200})
	sub, err := cloudClient(t, e).Submit(context.Background(), &ezclient.Job{URL: url, Regions: []ezclient.Region{"iad", "lax", "ord"}})
	require.NoError(t, err)
	assert.Equal(t, ezclient.StatusRacing, sub.Status)
	info := waitJob(t, e, sub.JobID)
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	assert.Equal(t, "lax", info.Result.Region)
	assert.Equal(t, "from lax", info.Result.Body)
	won := info.EventsOf(EventRaceWon)
	require.Len(t, won, 1)
	assert.Equal(t, "lax", won[0].Region)
	var cancelled []string
	for _, ev := range info.EventsOf(EventCancelled) {
		cancelled = append(cancelled, ev.Region)
	}
	assert.ElementsMatch(t, []string{"iad", "ord"}, cancelled)
	assert.Equal(t, 1, seen()["lax"])

	t.Run("all regions fail", func(t *testing.T) {
		url, _ := byRegion(t, map[string]int{"iad": 500, "lax": 404})
		info := submitWait(t, e, &ezclient.Job{URL: url, Regions: []ezclient.Region{"iad", "lax"}})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.False(t, info.Has(EventRaceWon))
	})
	t.Run("region latency", func(t *testing.T) {
		require.NoError(t, e.SetRegionLatency("nrt", 80*time.Millisecond))
		url, _ := byRegion(t, map[string]int{"nrt": 200})
		_, clk := e, e.cfg.clock.(*testClock)
		before := len(clk.Sleeps())
		info := submitWait(t, e, &ezclient.Job{URL: url, Regions: []ezclient.Region{"nrt"}})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		assert.Contains(t, clk.Sleeps()[before:], 80*time.Millisecond)
	})
}

func TestFanoutEveryRegionExecutes(t *testing.T) {
	e, _ := startEngine(t)
	url, seen := byRegion(t, map[string]int{"iad": 200, "lax": 200, "ord": 200})
	info := submitWait(t, e, &ezclient.Job{URL: url, Regions: []ezclient.Region{"iad", "lax", "ord"}, ExecutionMode: ezclient.ExecutionFanout})
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	assert.Equal(t, map[string]int{"iad": 1, "lax": 1, "ord": 1}, seen())
	assert.Len(t, info.EventsOf(EventDispatched), 3)
	assert.False(t, info.Has(EventRaceWon))

	t.Run("one region failing fails the job", func(t *testing.T) {
		url, seen := byRegion(t, map[string]int{"iad": 200, "lax": 404})
		info := submitWait(t, e, &ezclient.Job{URL: url, Regions: []ezclient.Region{"iad", "lax"}, ExecutionMode: ezclient.ExecutionFanout})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.Equal(t, 404, info.Result.StatusCode)
		assert.Equal(t, map[string]int{"iad": 1, "lax": 1}, seen())
	})
}

func TestFallbackChainOnError(t *testing.T) {
	e, _ := startEngine(t)
	primary, ph := scripted(t, 500)
	second, sh := scripted(t, 503)
	third, th := scripted(t, 200)
	never, nh := scripted(t, 200)
	job := &ezclient.Job{
		URL:         primary,
		RetryPolicy: &ezclient.RetryPolicy{},
		Fallback: &ezclient.Fallback{Trigger: ezclient.OnError(500, 502), Job: &ezclient.Job{
			URL:         second,
			RetryPolicy: &ezclient.RetryPolicy{},
			Fallback: &ezclient.Fallback{Trigger: ezclient.OnError(503), Job: &ezclient.Job{
				URL:      third,
				Fallback: &ezclient.Fallback{Trigger: ezclient.OnError(500), Job: &ezclient.Job{URL: never}},
			}},
		}},
	}
	info := submitWait(t, e, job)
	assert.Equal(t, ezclient.StatusCompleted, info.Status, "%v", info.Events)
	assert.Equal(t, third, info.Result.URL)
	fb := info.EventsOf(EventFallbackTriggered)
	require.Len(t, fb, 2)
	assert.Equal(t, second, fb[0].URL)
	assert.Equal(t, 500, fb[0].StatusCode)
	assert.Equal(t, third, fb[1].URL)
	assert.Equal(t, 503, fb[1].StatusCode)
	assert.EqualValues(t, []int32{1, 1, 1, 0}, []int32{ph.Load(), sh.Load(), th.Load(), nh.Load()})

	t.Run("code not in trigger", func(t *testing.T) {
		primary, _ := scripted(t, 404)
		backup, bh := scripted(t, 200)
		info := submitWait(t, e, &ezclient.Job{URL: primary, Fallback: &ezclient.Fallback{Trigger: ezclient.OnError(500), Job: &ezclient.Job{URL: backup}}})
		assert.Equal(t, ezclient.StatusFailed, info.Status)
		assert.False(t, info.Has(EventFallbackTriggered))
		assert.EqualValues(t, 0, bh.Load())
	})
	t.Run("no trigger: any failure", func(t *testing.T) {
		primary, _ := scripted(t, 404)
		backup, bh := scripted(t, 200)
		info := submitWait(t, e, &ezclient.Job{URL: primary, Fallback: &ezclient.Fallback{Job: &ezclient.Job{URL: backup}}})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		assert.EqualValues(t, 1, bh.Load())
	})
	t.Run("transport error counts as 502", func(t *testing.T) {
		deadURL := "http://" + testnet.RefusedAddr(t)
		backup, bh := scripted(t, 200)
		info := submitWait(t, e, &ezclient.Job{URL: deadURL, RetryPolicy: &ezclient.RetryPolicy{},
			Fallback: &ezclient.Fallback{Trigger: ezclient.OnError(502), Job: &ezclient.Job{URL: backup}}})
		assert.Equal(t, ezclient.StatusCompleted, info.Status, "%v", info.Events)
		assert.EqualValues(t, 1, bh.Load())
	})
}

func TestFallbackOnTimeout(t *testing.T) {
	e, _ := startEngine(t)
	slow := blocking(t)
	backup, bh := scripted(t, 200)
	info := submitWait(t, e, &ezclient.Job{URL: slow, Fallback: &ezclient.Fallback{
		Trigger: ezclient.OnTimeout(500 * time.Millisecond), Job: &ezclient.Job{URL: backup}}})
	assert.Equal(t, ezclient.StatusCompleted, info.Status, "%v", info.Events)
	assert.Equal(t, backup, info.Result.URL)
	fb := info.EventsOf(EventFallbackTriggered)
	require.Len(t, fb, 1)
	assert.Equal(t, 500*time.Millisecond, fb[0].Delay)
	assert.Contains(t, fb[0].Detail, "on_timeout")
	assert.EqualValues(t, 1, bh.Load())
}

func TestChildrenOnSuccessOnFailure(t *testing.T) {
	e, _ := startEngine(t)
	ok, _ := scripted(t, 200)
	bad, _ := scripted(t, 404)
	notify, notifyHits := scripted(t, 200)
	alert, alertHits := scripted(t, 200)

	info := submitWait(t, e, &ezclient.Job{URL: ok, OnSuccess: &ezclient.Job{URL: notify}, OnFailure: &ezclient.Job{URL: alert}})
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	require.Len(t, info.Children, 1)
	sp := info.EventsOf(EventChildSpawned)
	require.Len(t, sp, 1)
	assert.Equal(t, "on_success", sp[0].Detail)
	child := waitJob(t, e, info.Children[0])
	assert.Equal(t, info.ID, child.Parent)
	assert.Equal(t, "on_success", child.Role)
	assert.Equal(t, ezclient.StatusCompleted, child.Status)
	assert.EqualValues(t, 1, notifyHits.Load())
	assert.EqualValues(t, 0, alertHits.Load())

	info = submitWait(t, e, &ezclient.Job{URL: bad, OnSuccess: &ezclient.Job{URL: notify}, OnFailure: &ezclient.Job{URL: alert}})
	assert.Equal(t, ezclient.StatusFailed, info.Status)
	require.Len(t, info.Children, 1)
	child = waitJob(t, e, info.Children[0])
	assert.Equal(t, "on_failure", child.Role)
	assert.EqualValues(t, 1, alertHits.Load())
	assert.EqualValues(t, 1, notifyHits.Load())

	t.Run("nested children and a fallback's own child", func(t *testing.T) {
		c1, h1 := scripted(t, 200)
		c2, h2 := scripted(t, 200)
		fbChild, h3 := scripted(t, 200)
		primary, _ := scripted(t, 500)
		info := submitWait(t, e, &ezclient.Job{
			URL: primary, RetryPolicy: &ezclient.RetryPolicy{},
			Fallback:  &ezclient.Fallback{Trigger: ezclient.OnError(500), Job: &ezclient.Job{URL: ok, OnSuccess: &ezclient.Job{URL: fbChild}}},
			OnSuccess: &ezclient.Job{URL: c1, OnSuccess: &ezclient.Job{URL: c2}},
		})
		assert.Equal(t, ezclient.StatusCompleted, info.Status)
		require.Len(t, info.Children, 2)
		require.NoError(t, e.WaitIdle(context.Background()))
		assert.EqualValues(t, []int32{1, 1, 1}, []int32{h1.Load(), h2.Load(), h3.Load()})
	})
}

func TestOnFailureTimeout(t *testing.T) {
	e, _ := startEngine(t)
	slow := blocking(t)
	alert, alertHits := scripted(t, 200)
	info := submitWait(t, e, &ezclient.Job{URL: slow, OnFailureTimeout: 2 * time.Second, OnFailure: &ezclient.Job{URL: alert}})
	assert.Equal(t, ezclient.StatusFailed, info.Status)
	assert.True(t, info.Has(EventTimedOut))
	assert.Contains(t, info.Reason, "on_failure_timeout_ms")
	require.Len(t, info.Children, 1)
	assert.Equal(t, ezclient.StatusCompleted, waitJob(t, e, info.Children[0]).Status)
	assert.EqualValues(t, 1, alertHits.Load())
}

func TestRetryAtHonoured(t *testing.T) {
	e, clk := startEngine(t)
	url, hits := scripted(t, 200)
	at := clk.Now().Add(time.Hour)
	info := submitWait(t, e, &ezclient.Job{URL: url, RetryAt: at})
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	sch := info.EventsOf(EventScheduled)
	require.Len(t, sch, 1)
	assert.Equal(t, time.Hour, sch[0].Delay)
	att := info.EventsOf(EventAttempt)
	require.Len(t, att, 1)
	assert.False(t, att[0].Time.Before(at), "executed at %v, before retry_at %v", att[0].Time, at)
	assert.EqualValues(t, 1, hits.Load())
}

func TestPacing(t *testing.T) {
	clk := newTestClock()
	e, err := New(WithClock(clk))
	require.NoError(t, err)
	defer e.Close()
	ctx := context.Background()
	acquire := func(host string) func(http.Header) string {
		rel, err := e.acquire(ctx, "iad", host)
		require.NoError(t, err)
		return rel
	}

	// Default 2 rps: one start every 500 ms.
	for range 3 {
		acquire("api.test")(nil)
	}
	assert.Equal(t, []time.Duration{500 * time.Millisecond, 500 * time.Millisecond}, clk.Sleeps())
	// Another host has its own pace, and another region its own lane.
	acquire("other.test")(nil)
	rel, err := e.acquire(ctx, "lax", "api.test")
	require.NoError(t, err)
	rel(nil)
	assert.Len(t, clk.Sleeps(), 2)

	// The destination steers the pace; X-Aqueduct-* wins.
	h := http.Header{}
	h.Set("X-EZTHROTTLE-RPS", "5")
	h.Set("X-Aqueduct-Rps", "10")
	h.Set("X-EZTHROTTLE-MAX-CONCURRENT", "3")
	assert.Equal(t, "rps 2→10 max_concurrent 2→3", acquire("api.test")(h))
	rps, conc := e.Pace("api.test")
	assert.Equal(t, 10.0, rps)
	assert.Equal(t, 3, conc)
	acquire("api.test")(nil)
	sl := clk.Sleeps()
	assert.Equal(t, 100*time.Millisecond, sl[len(sl)-1])

	// At most maxConcurrent in flight: the fourth waits for a release.
	r1, r2, r3 := acquire("api.test"), acquire("api.test"), acquire("api.test")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = e.acquire(cctx, "iad", "api.test")
	require.ErrorIs(t, err, context.Canceled, "a fourth request must wait")
	got := make(chan error, 1)
	go func() {
		rel, err := e.acquire(ctx, "iad", "api.test")
		if err == nil {
			rel(nil)
		}
		got <- err
	}()
	r1(nil)
	require.NoError(t, <-got)
	r2(nil)
	r3(nil)
}

func TestParsePace(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		rps  float64
		rok  bool
		conc int
		cok  bool
	}{
		{"none", nil, 0, false, 0, false},
		{"ezthrottle", map[string]string{"X-EZTHROTTLE-RPS": "0.5", "X-EZTHROTTLE-MAX-CONCURRENT": "10"}, 0.5, true, 10, true},
		{"aqueduct wins", map[string]string{"X-EZTHROTTLE-RPS": "1", "X-Aqueduct-Rps": "3", "X-EZTHROTTLE-MAX-CONCURRENT": "1", "X-Aqueduct-Max-Concurrent": "4"}, 3, true, 4, true},
		{"garbage aqueduct falls back", map[string]string{"X-EZTHROTTLE-RPS": "1", "X-Aqueduct-Rps": "NaN"}, 1, true, 0, false},
		{"aquifer", map[string]string{"X-Aquifer-Rps": "0.25", "X-Aquifer-Max-Concurrent": "3"}, 0.25, true, 3, true},
		{"aquifer before ezthrottle", map[string]string{"X-EZTHROTTLE-RPS": "1", "X-Aquifer-Rps": "2", "X-EZTHROTTLE-MAX-CONCURRENT": "1", "X-Aquifer-Max-Concurrent": "5"}, 2, true, 5, true},
		{"aqueduct before aquifer", map[string]string{"X-Aquifer-Rps": "2", "X-Aqueduct-Rps": "3"}, 3, true, 0, false},
		{"garbage aquifer falls back", map[string]string{"X-EZTHROTTLE-RPS": "1", "X-Aquifer-Rps": "fast"}, 1, true, 0, false},
		{"zero ignored", map[string]string{"X-EZTHROTTLE-RPS": "0", "X-EZTHROTTLE-MAX-CONCURRENT": "0"}, 0, false, 0, false},
		{"negative ignored", map[string]string{"X-EZTHROTTLE-RPS": "-1", "X-EZTHROTTLE-MAX-CONCURRENT": "-2"}, 0, false, 0, false},
		{"huge ignored", map[string]string{"X-EZTHROTTLE-RPS": "1e9", "X-EZTHROTTLE-MAX-CONCURRENT": "99999999"}, 0, false, 0, false},
		{"inf ignored", map[string]string{"X-EZTHROTTLE-RPS": "+Inf"}, 0, false, 0, false},
		{"empty ignored", map[string]string{"X-EZTHROTTLE-RPS": " ", "X-EZTHROTTLE-MAX-CONCURRENT": ""}, 0, false, 0, false},
		{"fractional concurrency ignored", map[string]string{"X-EZTHROTTLE-MAX-CONCURRENT": "2.5"}, 0, false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.hdr {
				h.Set(k, v)
			}
			rps, rok, conc, cok := parsePace(h)
			assert.Equal(t, tc.rok, rok)
			assert.Equal(t, tc.cok, cok)
			assert.Equal(t, tc.rps, rps)
			assert.Equal(t, tc.conc, conc)
		})
	}
}

func TestPaceSteeredByDestination(t *testing.T) {
	e, _ := startEngine(t)
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-EZTHROTTLE-RPS", "0.5")
		w.Header().Set("X-EZTHROTTLE-MAX-CONCURRENT", "1")
		w.WriteHeader(http.StatusOK)
	})
	info := submitWait(t, e, &ezclient.Job{URL: s.URL})
	pc := info.EventsOf(EventPaceChanged)
	require.Len(t, pc, 1)
	assert.Contains(t, pc[0].Detail, "rps 2→0.5")
	rps, conc := e.Pace(s.Listener.Addr().String())
	assert.Equal(t, 0.5, rps)
	assert.Equal(t, 1, conc)
}

func TestEventHook(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]EventType{}
	e, _ := startEngine(t, WithEventHook(func(id string, ev Event) {
		mu.Lock()
		defer mu.Unlock()
		seen[id] = append(seen[id], ev.Type)
	}))
	url, _ := scripted(t, 503, 200)
	hook := newReceiver(t, nil)
	info := submitWait(t, e, &ezclient.Job{URL: url, Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, types(info.Events), seen[info.ID])
	assert.Equal(t, []EventType{EventQueued, EventDispatched, EventAttempt, EventRetried, EventAttempt, EventCompleted,
		EventWebhookDelivered, EventQuorumReached}, seen[info.ID])
}

// WaitJob reports a settled job as settled, even once the engine is closed
// (it used to pick ErrClosed or the result at random).
func TestWaitJobSettledAfterClose(t *testing.T) {
	e, _ := startEngine(t)
	dest := okServer(t)
	info := submitWait(t, e, &ezclient.Job{URL: dest.URL})
	require.NoError(t, e.Close())
	for range 50 {
		got, err := e.WaitJob(context.Background(), info.ID)
		require.NoError(t, err)
		require.True(t, got.Settled)
	}
}
