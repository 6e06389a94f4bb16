package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dedupBody is a self-hosted payload for job id.
func dedupBody(id string) string {
	return `{"job_id":"` + id + `","status":"completed","response_status":200,"body":"ok"}`
}

// dedupPost is one delivery: body with a signature header as captured.
func dedupPost(h http.Handler, body, header string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(body))
	if header != "" {
		req.Header.Set(SignatureHeader, header)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// dedupCounter counts callback runs per job ID.
type dedupCounter struct {
	mu    sync.Mutex
	calls map[string]int
	total atomic.Int64
}

func newDedupCounter() *dedupCounter { return &dedupCounter{calls: map[string]int{}} }

func (c *dedupCounter) fn(_ context.Context, r Result) {
	c.mu.Lock()
	c.calls[r.JobID]++
	c.mu.Unlock()
	c.total.Add(1)
}

func (c *dedupCounter) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// TestReplayRefusedForWholeTolerance replays a captured, validly signed
// delivery byte for byte at every moment its signature still verifies,
// after thousands of other deliveries and long clock advances, under
// result-store settings that used to end the protection early (a small
// result bound, a short TTL, a short de-duplication window, a long
// tolerance) and with a sender's clock ahead or behind. The callback runs
// once; the replay is answered as a duplicate until the signature expires
// (401 after that).
func TestReplayRefusedForWholeTolerance(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		tol  time.Duration
		skew time.Duration // sender's clock minus receiver's
	}{
		{name: "defaults", tol: DefaultTolerance},
		{name: "result bound 1", opts: []Option{WithMaxResults(1)}, tol: DefaultTolerance},
		{name: "TTL 1m", opts: []Option{WithTTL(time.Minute)}, tol: DefaultTolerance},
		{name: "TTL 1m, bound 1, window 1m", opts: []Option{WithTTL(time.Minute), WithMaxResults(1), WithDedupWindow(time.Minute)}, tol: DefaultTolerance},
		{name: "sender clock ahead by the tolerance", opts: []Option{WithTTL(time.Minute), WithDedupWindow(time.Minute)}, tol: DefaultTolerance, skew: DefaultTolerance},
		{name: "sender clock behind by the tolerance", opts: []Option{WithTTL(time.Minute)}, tol: DefaultTolerance, skew: -DefaultTolerance},
		{name: "tolerance 1h beyond the window", opts: []Option{WithTolerance(time.Hour), WithMaxResults(10)}, tol: time.Hour, skew: time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			cb := newDedupCounter()
			opts := append([]Option{WithSecret(testSecret), WithClock(clk.Now), WithCallback(cb.fn)}, tc.opts...)
			h, err := NewHandler(opts...)
			require.NoError(t, err)
			defer h.Close()

			body := dedupBody("job_captured")
			signedAt := clk.Now().Add(tc.skew)
			header := Sign(testSecret, signedAt, []byte(body))
			rec := dedupPost(h, body, header)
			require.Equal(t, 200, rec.Code, rec.Body.String())
			require.False(t, decodeReply(t, rec).Duplicate)

			expires := signedAt.Add(tc.tol) // the last instant the signature verifies
			other := 0
			for clk.Now().Before(expires) {
				// Push the captured result out of the result store.
				for range 50 {
					other++
					b := dedupBody(fmt.Sprint("job_other_", other))
					require.Equal(t, 200, dedupPost(h, b, Sign(testSecret, clk.Now(), []byte(b))).Code)
				}
				rec := dedupPost(h, body, header)
				require.Equal(t, 200, rec.Code, "replay at %s: %s", clk.Now().Sub(signedAt), rec.Body.String())
				require.True(t, decodeReply(t, rec).Duplicate, "replay at %s after signing is a duplicate", clk.Now().Sub(signedAt))
				clk.Advance(min(tc.tol/7, expires.Sub(clk.Now())))
			}
			rec = dedupPost(h, body, header) // exactly at timestamp + tolerance
			require.Equal(t, 200, rec.Code)
			require.True(t, decodeReply(t, rec).Duplicate, "replay at the last instant the signature verifies")
			clk.Advance(time.Second)
			rec = dedupPost(h, body, header)
			require.Equal(t, http.StatusUnauthorized, rec.Code, "then the signature has expired")

			require.NoError(t, h.Close())
			assert.Equal(t, 1, cb.count("job_captured"), "the callback ran once")
			assert.EqualValues(t, other+1, cb.total.Load())
		})
	}
}

// TestDuplicatesDetectedForWholeWindow redelivers (freshly signed, as the
// engine does) results accepted earlier, after many more results than the
// store keeps and up to the last instant of the window: every redelivery
// is a duplicate, whatever the result bound and TTL; at the end of the
// window the job ID is forgotten.
func TestDuplicatesDetectedForWholeWindow(t *testing.T) {
	tests := []struct {
		name   string
		opts   []Option
		window time.Duration
	}{
		{name: "defaults", window: DefaultDedupWindow},
		{name: "result bound 3", opts: []Option{WithMaxResults(3)}, window: DefaultDedupWindow},
		{name: "TTL 1m", opts: []Option{WithTTL(time.Minute)}, window: DefaultDedupWindow},
		{name: "window 1h", opts: []Option{WithDedupWindow(time.Hour), WithMaxResults(3)}, window: time.Hour},
		{name: "TTL 2h longer than the window", opts: []Option{WithTTL(2 * time.Hour), WithMaxResults(3)}, window: 2 * time.Hour},
		{name: "window below the minimum is raised", opts: []Option{WithDedupWindow(time.Second), WithTTL(time.Second)}, window: MinDedupWindow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			cb := newDedupCounter()
			opts := append([]Option{WithSecret(testSecret), WithClock(clk.Now), WithCallback(cb.fn)}, tc.opts...)
			h, err := NewHandler(opts...)
			require.NoError(t, err)
			defer h.Close()
			deliver := func(id string) reply {
				b := dedupBody(id)
				rec := dedupPost(h, b, Sign(testSecret, clk.Now(), []byte(b)))
				require.Equal(t, 200, rec.Code, rec.Body.String())
				return decodeReply(t, rec)
			}

			const n, step = 300, 10 * time.Millisecond
			start := clk.Now()
			for i := range n {
				require.False(t, deliver(fmt.Sprint("job_", i)).Duplicate)
				clk.Advance(step) // job_i accepted at start + i*step
			}
			// Late redeliveries across the window, the last one at its
			// last instant.
			for _, at := range []time.Duration{time.Second, 15 * time.Second, tc.window / 2, tc.window - n*step} {
				clk.Advance(start.Add(at).Sub(clk.Now()))
				for i := range n {
					require.True(t, deliver(fmt.Sprint("job_", i)).Duplicate, "job_%d redelivered %s later", i, at)
				}
			}
			// Forgotten once the window has passed, and (with a secret) the
			// signature it was accepted with has expired.
			forget := tc.window
			if forget <= DefaultTolerance {
				forget = DefaultTolerance + time.Nanosecond
			}
			clk.Advance(start.Add(forget - time.Nanosecond).Sub(clk.Now()))
			assert.True(t, deliver("job_0").Duplicate, "remembered to the last instant")
			clk.Advance(time.Nanosecond)
			assert.False(t, deliver("job_0").Duplicate, "forgotten once the window has passed")
			assert.True(t, deliver(fmt.Sprint("job_", n-1)).Duplicate, "a later job is still remembered")
			require.NoError(t, h.Close())
			assert.EqualValues(t, n+1, cb.total.Load())
		})
	}
}

// TestDedupCapacityRefusesRatherThanForgets fills the set of remembered
// job IDs: further new deliveries get 503 with Retry-After, and none of
// the remembered IDs is forgotten; room comes back as the oldest expire.
func TestDedupCapacityRefusesRatherThanForgets(t *testing.T) {
	clk := newFakeClock()
	h, err := NewHandler(WithClock(clk.Now), WithMaxSeenIDs(5), WithDedupWindow(time.Hour), WithTTL(time.Minute))
	require.NoError(t, err)
	defer h.Close()
	deliver := func(id string) *httptest.ResponseRecorder { return dedupPost(h, dedupBody(id), "") }

	for i := range 5 {
		require.Equal(t, 200, deliver(fmt.Sprint("job_", i)).Code)
		clk.Advance(10 * time.Minute)
	}
	rec := deliver("job_5")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, "dedup_full", decodeReply(t, rec).Code)
	// job_0 was accepted 50 min ago and is remembered for 1 h (the
	// bucket it lives in ends within 1/32 of the window after that).
	ra := rec.Header().Get("Retry-After")
	assert.NotEmpty(t, ra)
	var secs int
	_, err = fmt.Sscan(ra, &secs)
	require.NoError(t, err)
	assert.InDelta(t, 10*60, secs, float64(time.Hour/seenBuckets/time.Second)+1)
	for i := range 5 {
		rec := deliver(fmt.Sprint("job_", i))
		require.Equal(t, 200, rec.Code)
		assert.True(t, decodeReply(t, rec).Duplicate, "job_%d still remembered at the bound", i)
	}
	_, err = h.Store().Add(res("job_5", ""))
	assert.ErrorIs(t, err, ErrDedupFull)
	var ce *CapacityError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, 5, ce.Limit)

	clk.Advance(time.Duration(secs) * time.Second)
	rec = deliver("job_5")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	assert.False(t, decodeReply(t, rec).Duplicate)
	rec = deliver("job_0")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, "full again; job_0 is forgotten, not re-admitted by evicting another")
}

// TestHandlerBackpressure: a delivery that finds the callback queue full
// waits for room and is acknowledged only once its result is queued; one
// that cannot wait any longer (its request ends, or the Handler closes)
// is refused and leaves nothing behind.
func TestHandlerBackpressure(t *testing.T) {
	release := make(chan struct{})
	got := make(chan string, 10)
	h, err := NewHandler(WithCallbackConcurrency(1, 1), WithCallbackWait(time.Hour), WithCallback(func(ctx context.Context, r Result) {
		got <- r.JobID
		if r.JobID == "block" {
			<-release
		}
	}))
	require.NoError(t, err)
	defer h.Close()
	require.Equal(t, 200, dedupPost(h, dedupBody("block"), "").Code)
	require.Equal(t, "block", <-got)
	require.Equal(t, 200, dedupPost(h, dedupBody("queued"), "").Code)

	// Its request ends while it waits: 503, nothing kept.
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(dedupBody("gone"))).WithContext(ctx)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { h.ServeHTTP(rec, req); close(done) }()
	require.Eventually(t, func() bool { return dedupPending(h.Store()) == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	<-done
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
	assert.Zero(t, dedupPending(h.Store()))

	// A concurrent duplicate waits for the first delivery's decision.
	recs := make([]*httptest.ResponseRecorder, 3)
	var wg sync.WaitGroup
	for i := range recs {
		wg.Add(1)
		go func() { defer wg.Done(); recs[i] = dedupPost(h, dedupBody("waits"), "") }()
	}
	require.Eventually(t, func() bool { return dedupPending(h.Store()) == 1 }, 10*time.Second, time.Millisecond)
	close(release) // room in the queue
	wg.Wait()
	fresh := 0
	for _, rec := range recs {
		require.Equal(t, 200, rec.Code)
		if !decodeReply(t, rec).Duplicate {
			fresh++
		}
	}
	assert.Equal(t, 1, fresh, "one acknowledged as new, the others as duplicates")
	assert.Equal(t, "queued", <-got)
	assert.Equal(t, "waits", <-got)
	_, ok := h.Store().Lookup(Key{JobID: "gone"})
	assert.False(t, ok)
	rec = dedupPost(h, dedupBody("gone"), "")
	require.Equal(t, 200, rec.Code)
	assert.False(t, decodeReply(t, rec).Duplicate, "the abandoned delivery was not remembered")
	assert.Equal(t, "gone", <-got)
}

// TestHandlerCloseWhileWaitingForRoom: Close ends a wait for room at once
// with 503 and still hands the queued results to the callback.
func TestHandlerCloseWhileWaitingForRoom(t *testing.T) {
	release := make(chan struct{})
	cb := newDedupCounter()
	h, err := NewHandler(WithCallbackConcurrency(1, 1), WithCallbackWait(time.Hour), WithCallback(func(ctx context.Context, r Result) {
		if r.JobID == "block" {
			<-release
		}
		cb.fn(ctx, r)
	}))
	require.NoError(t, err)
	require.Equal(t, 200, dedupPost(h, dedupBody("block"), "").Code)
	require.Eventually(t, func() bool { return len(h.slots) == 0 }, 10*time.Second, time.Millisecond)
	require.Equal(t, 200, dedupPost(h, dedupBody("queued"), "").Code)
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- dedupPost(h, dedupBody("waiting"), "") }()
	require.Eventually(t, func() bool { return dedupPending(h.Store()) == 1 }, 10*time.Second, time.Millisecond)
	closed := make(chan error)
	go func() { closed <- h.Close() }()
	rec := <-done
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, "closed", decodeReply(t, rec).Code)
	close(release)
	require.NoError(t, <-closed)
	assert.Equal(t, 1, cb.count("queued"), "a queued result is still handed over on Close")
	assert.Equal(t, 0, cb.count("waiting"))
}

func dedupPending(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen.pending)
}

// TestHandlerLoadExactlyOnce: many senders deliver unique results at full
// speed to a Handler whose callback is slower than they are and whose queue
// is small; like an engine, a sender redelivers what is refused with 503.
// Every result reaches the callback exactly once, whatever the timing, and
// redeliveries of all of them, late in the window, are all duplicates.
// (BenchmarkHandlerLoad measures the same at 25,000 results with a 1 ms
// callback.)
func TestHandlerLoadExactlyOnce(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 1000
	}
	clk := newFakeClock()
	cb := newDedupCounter()
	h, err := NewHandler(WithSecret(testSecret), WithClock(clk.Now), WithMaxResults(100),
		WithCallbackConcurrency(2, 8), WithCallbackWait(time.Millisecond),
		WithCallback(func(ctx context.Context, r Result) {
			time.Sleep(50 * time.Microsecond)
			cb.fn(ctx, r)
		}))
	require.NoError(t, err)
	defer h.Close()

	st := dedupLoad(h, clk.Now, n, 32, "job_")
	require.Zero(t, st.failed, "every delivery was eventually acknowledged")
	assert.Equal(t, n, st.fresh)
	clk.Advance(DefaultDedupWindow - time.Second)
	late := dedupLoad(h, clk.Now, n, 32, "job_")
	assert.Equal(t, 0, late.fresh, "every late redelivery is a duplicate")
	assert.Equal(t, n, late.dups)
	require.NoError(t, h.Close())
	assert.EqualValues(t, n, cb.total.Load())
	cb.mu.Lock()
	defer cb.mu.Unlock()
	assert.Len(t, cb.calls, n)
	for id, c := range cb.calls {
		if c != 1 {
			t.Errorf("%s: callback ran %d times", id, c)
		}
	}
}

type dedupLoadStats struct {
	fresh, dups, refused, failed int
}

// dedupLoad delivers n unique results (prefix + i) from senders goroutines,
// redelivering each one refused with 503 (at once, not after Retry-After:
// the test is about what is lost, not about pacing).
func dedupLoad(h http.Handler, now func() time.Time, n, senders int, prefix string) dedupLoadStats {
	var (
		mu   sync.Mutex
		st   dedupLoadStats
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local dedupLoadStats
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					break
				}
				b := dedupBody(fmt.Sprint(prefix, i))
				giveUp := time.Now().Add(time.Minute) // a safety net, not a timing assumption
				for {
					rec := dedupPost(h, b, Sign(testSecret, now(), []byte(b)))
					if rec.Code == http.StatusServiceUnavailable && time.Now().Before(giveUp) {
						local.refused++
						continue
					}
					switch {
					case rec.Code != 200:
						local.failed++
					case strings.Contains(rec.Body.String(), `"duplicate":true`):
						local.dups++
					default:
						local.fresh++
					}
					break
				}
			}
			mu.Lock()
			st.fresh += local.fresh
			st.dups += local.dups
			st.refused += local.refused
			st.failed += local.failed
			mu.Unlock()
		}()
	}
	wg.Wait()
	return st
}

// TestSeenSetMemoryIsReleased: after a burst has expired, the set gives
// its memory back (buckets dropped, map reallocated).
func TestSeenSetMemoryIsReleased(t *testing.T) {
	clk := newFakeClock()
	s := NewStore(WithClock(clk.Now), WithMaxResults(10))
	defer s.Close()
	for i := range 20000 {
		_, err := s.Add(res(fmt.Sprint("burst_", i), ""))
		require.NoError(t, err)
	}
	s.mu.Lock()
	assert.Len(t, s.seen.ids, 20000)
	s.mu.Unlock()
	clk.Advance(DefaultDedupWindow + DefaultDedupWindow/seenBuckets)
	_, err := s.Add(res("later", ""))
	require.NoError(t, err)
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Len(t, s.seen.ids, 1)
	assert.Len(t, s.seen.buckets, 1)
	assert.Equal(t, 1, s.seen.peak, "map reallocated")
}

// TestSeenSetExpiryIsExact checks the set alone, with expiries out of
// insertion order (signatures from the future remembered longer).
func TestSeenSetExpiryIsExact(t *testing.T) {
	s := newSeenSet(time.Minute, 100)
	t0 := time.Unix(1_763_674_210, 123)
	a, b, c := s.hash("a"), s.hash("b"), s.hash("c")
	s.add(a, t0.Add(10*time.Minute))
	s.add(b, t0.Add(time.Minute))
	s.add(c, t0.Add(5*time.Minute))
	for _, tc := range []struct {
		at      time.Duration
		a, b, c bool
	}{
		{0, true, true, true},
		{time.Minute - 1, true, true, true},
		{time.Minute, true, false, true},
		{5*time.Minute - 1, true, false, true},
		{5 * time.Minute, true, false, false},
		{10*time.Minute - 1, true, false, false},
		{10 * time.Minute, false, false, false},
	} {
		now := t0.Add(tc.at)
		s.sweep(now)
		assert.Equal(t, tc.a, s.seen(a, now), "a at %s", tc.at)
		assert.Equal(t, tc.b, s.seen(b, now), "b at %s", tc.at)
		assert.Equal(t, tc.c, s.seen(c, now), "c at %s", tc.at)
	}
	s.sweep(t0.Add(11 * time.Minute))
	assert.Empty(t, s.ids)
	assert.Empty(t, s.buckets)

	// An expiry beyond int64 nanoseconds does not wrap into the past.
	far := s.hash("far")
	s.add(far, t0.Add(math.MaxInt64).Add(math.MaxInt64))
	s.sweep(t0.Add(time.Hour))
	assert.True(t, s.seen(far, t0.Add(100*365*24*time.Hour)))
	assert.NotEqual(t, s.hash("a"), s.hash("b"))
	assert.NotEqual(t, newSeenSet(time.Minute, 1).hash("a"), s.hash("a"), "seeds are per set")
}

// TestHandlerWarnsOfSmallDedupCapacity: settings under which deliveries
// would be refused at a modest rate are reported when the Handler is made.
func TestHandlerWarnsOfSmallDedupCapacity(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		warn bool
	}{
		{name: "defaults"},
		{name: "defaults with a secret", opts: []Option{WithSecret(testSecret)}},
		{name: "small bound", opts: []Option{WithMaxSeenIDs(1000)}, warn: true},
		{name: "long tolerance", opts: []Option{WithSecret(testSecret), WithTolerance(24 * time.Hour)}, warn: true},
		{name: "long tolerance without a secret is irrelevant", opts: []Option{WithTolerance(24 * time.Hour)}},
		{name: "long window", opts: []Option{WithDedupWindow(7 * 24 * time.Hour)}, warn: true},
		{name: "shared store with a small bound", opts: []Option{WithStore(NewStore(WithMaxSeenIDs(10)))}, warn: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			var mu sync.Mutex
			logger := slog.New(slog.NewTextHandler(dedupLogWriter{&mu, &logs}, nil))
			h, err := NewHandler(append([]Option{WithLogger(logger)}, tc.opts...)...)
			require.NoError(t, err)
			require.NoError(t, h.Close())
			mu.Lock()
			defer mu.Unlock()
			if tc.warn {
				assert.Contains(t, logs.String(), "de-duplication capacity is small")
			} else {
				assert.NotContains(t, logs.String(), "de-duplication capacity")
			}
		})
	}
}

type dedupLogWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l dedupLogWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
