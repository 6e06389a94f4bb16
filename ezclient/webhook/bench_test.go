package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

func BenchmarkVerify(b *testing.B) {
	body := []byte(cloudSuccess)
	v := Verifier{Primary: testSecret}
	h := Sign(testSecret, time.Now(), body)
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(h, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(cloudSuccess)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandler measures one signed delivery through ServeHTTP, each a
// new job (so every delivery is stored).
func BenchmarkHandler(b *testing.B) {
	h, err := NewHandler(WithSecret(testSecret), WithMaxResults(1000))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		body := strings.Replace(selfCompleted, "0123456789abcdef", fmt.Sprintf("%016x", i), 1)
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set(SignatureHeader, Sign(testSecret, now, []byte(body)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code, rec.Body.String())
		}
	}
}

// BenchmarkStoreAddWait adds a new result and waits for it, in steady
// state: one result per millisecond of the Store's clock, so that the
// results (1,000 kept) and the remembered job IDs (a 1 min window: 60,000)
// expire as fast as they arrive.
func BenchmarkStoreAddWait(b *testing.B) {
	clk := newFakeClock()
	s := NewStore(WithMaxResults(1000), WithClock(clk.Now), WithDedupWindow(time.Minute), WithTTL(time.Minute))
	defer s.Close()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		clk.Advance(time.Millisecond)
		id := fmt.Sprint("job_", i)
		if _, err := s.Add(res(id, "")); err != nil {
			b.Fatal(err)
		}
		if _, err := s.WaitJob(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandlerLoad delivers 25,000 unique signed results at full speed
// (256 senders that never pause, like an engine draining a backlog) to a
// Handler whose callback takes 1 ms; a sender redelivers at once what is
// refused with 503. It then redelivers all 25,000 again, 14 min 59 s later
// on the Handler's clock (freshly signed, as an engine's late retry).
// Every result must reach the callback exactly once and every late
// redelivery must be a duplicate; the benchmark fails otherwise. Metrics:
// results/s acknowledged (the first 25,000; each acknowledged result is in
// the callback's queue), 503 answers per run (refused-503), late
// duplicates detected (late-dups-detected). Run with -benchtime 1x.
func BenchmarkHandlerLoad(b *testing.B) {
	const n = 25000
	for _, workers := range []int{DefaultCallbackWorkers, 64} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			var refused, detected int
			var took time.Duration
			for b.Loop() {
				clk := newFakeClock()
				cb := newDedupCounter()
				h, err := NewHandler(WithSecret(testSecret), WithClock(clk.Now), WithCallbackConcurrency(workers, 0),
					WithCallback(func(ctx context.Context, r Result) {
						time.Sleep(time.Millisecond)
						cb.fn(ctx, r)
					}))
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				st := dedupLoad(h, clk.Now, n, 256, "job_")
				took += time.Since(start)
				clk.Advance(DefaultDedupWindow - time.Second)
				late := dedupLoad(h, clk.Now, n, 256, "job_")
				if err := h.Close(); err != nil { // waits for the queued callbacks
					b.Fatal(err)
				}
				refused += st.refused
				detected += late.dups
				cb.mu.Lock()
				twice := 0
				for _, c := range cb.calls {
					if c > 1 {
						twice++
					}
				}
				cb.mu.Unlock()
				if st.failed != 0 || st.fresh != n || len(cb.calls) != n || twice != 0 || late.dups != n {
					b.Fatalf("accepted %d of %d (%d failed); callback saw %d unique, %d more than once; %d of %d late duplicates detected",
						st.fresh, n, st.failed, len(cb.calls), twice, late.dups, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "results/s")
			b.ReportMetric(float64(refused)/float64(b.N), "refused-503")
			b.ReportMetric(float64(detected)/float64(b.N), "late-dups-detected")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkSeenIDs measures the memory the de-duplication set takes per
// remembered job ID (bytes/ID), with 1,000,000 IDs of Cloud's form.
func BenchmarkSeenIDs(b *testing.B) {
	const n = 1_000_000
	var perID float64
	for b.Loop() {
		clk := newFakeClock()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := newSeenSet(DefaultDedupWindow, n)
		for i := range n {
			s.add(s.hash(fmt.Sprintf("job_1763674210055_%06d", i)), clk.Now().Add(DefaultDedupWindow))
			if i%1000 == 999 {
				clk.Advance(time.Second)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perID = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perID, "bytes/ID")
}
