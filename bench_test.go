package ezthrottle_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// benchBase is an in-process RoundTripper: it consumes the request body and
// returns a small response, as a fast upstream would.
type benchBase struct{}

var benchHeader = http.Header{"Content-Type": {"application/json"}}

type benchBody struct{ r strings.Reader }

func (b *benchBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *benchBody) Close() error               { return nil }

func (benchBase) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	body := &benchBody{}
	body.r.Reset(`{"ok":true}`)
	return &http.Response{StatusCode: 200, Header: benchHeader, Body: body, ContentLength: 11, Request: r}, nil
}

// benchLimit exercises the whole limiter (bucket and in-flight cap) without
// ever making a request wait.
var benchLimit = ezthrottle.Limit{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1 << 20}

type nopSubmitter struct{}

func (nopSubmitter) Submit(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
	return &ezclient.Submission{JobID: "job"}, nil
}

func benchTransport(b *testing.B, opts ...ezthrottle.Option) http.RoundTripper {
	tr, err := ezthrottle.New(append([]ezthrottle.Option{ezthrottle.WithBase(benchBase{}), ezthrottle.WithDefaultLimit(benchLimit)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	return tr
}

func BenchmarkGET(b *testing.B) {
	for _, bc := range []struct {
		name string
		rt   func(*testing.B) http.RoundTripper
	}{
		{"bare", func(*testing.B) http.RoundTripper { return benchBase{} }},
		{"transport", func(b *testing.B) http.RoundTripper { return benchTransport(b) }},
		{"transport+forwarding", func(b *testing.B) http.RoundTripper {
			return benchTransport(b, ezthrottle.WithForwarding(nopSubmitter{}))
		}},
		{"transport+live", func(b *testing.B) http.RoundTripper { // the live view on (LiveHandler)
			tr := benchTransport(b).(*ezthrottle.Transport)
			tr.EnableLive()
			return tr
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := bc.rt(b)
			req, _ := http.NewRequest("GET", "https://api.example.com/v1/items?limit=10", nil)
			req.Header.Set("Authorization", "Bearer k")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}

// resetBody is a request body that can be rewound without allocating.
type resetBody struct{ bytes.Reader }

func (*resetBody) Close() error { return nil }

func BenchmarkPOST1KiB(b *testing.B) {
	payload := bytes.Repeat([]byte("a"), 1024)
	for _, bc := range []struct {
		name    string
		getBody bool
		rt      func(*testing.B) http.RoundTripper
	}{
		{"bare", true, func(*testing.B) http.RoundTripper { return benchBase{} }},
		{"transport", true, func(b *testing.B) http.RoundTripper { return benchTransport(b) }},
		{"transport+forwarding/GetBody", true, func(b *testing.B) http.RoundTripper {
			return benchTransport(b, ezthrottle.WithForwarding(nopSubmitter{}))
		}},
		{"transport+forwarding/capture", false, func(b *testing.B) http.RoundTripper {
			return benchTransport(b, ezthrottle.WithForwarding(nopSubmitter{}))
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := bc.rt(b)
			body := &resetBody{}
			req, _ := http.NewRequest("POST", "https://api.example.com/v1/items", nil)
			req.Header.Set("Content-Type", "application/json")
			req.Body = body
			req.ContentLength = int64(len(payload))
			if bc.getBody {
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				body.Reset(payload)
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}

func BenchmarkParallel(b *testing.B) {
	for _, hosts := range []int{1, 64, 1000, 10000, 100000} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			rt := benchTransport(b)
			reqs := make([]*http.Request, hosts)
			for i := range reqs {
				reqs[i], _ = http.NewRequest("GET", fmt.Sprintf("https://h%d.example.com/x", i), nil)
			}
			for _, r := range reqs { // steady state: every host already tracked
				resp, err := rt.RoundTrip(r)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(seq.Add(7919))
				for pb.Next() {
					i++
					resp, err := rt.RoundTrip(reqs[i%hosts])
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkMemoryPerHost reports the heap kept per tracked host (limiter
// state plus the Transport's host-key cache entry).
func BenchmarkMemoryPerHost(b *testing.B) {
	const hosts = 10000
	reqs := make([]*http.Request, hosts)
	for i := range reqs {
		reqs[i], _ = http.NewRequest("GET", fmt.Sprintf("https://h%d.example.com/x", i), nil)
	}
	var perHost float64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		rt := benchTransport(b, ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 2}))
		for _, r := range reqs {
			resp, err := rt.RoundTrip(r)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perHost = float64(after.HeapAlloc-before.HeapAlloc) / hosts
		runtime.KeepAlive(rt)
	}
	b.ReportMetric(perHost, "B/host")
}

// BenchmarkGETOverhead measures what the Transport adds to a pass-through
// GET by alternating short runs through the bare base and through the
// Transport in one loop, so that both see the same machine state (a shared
// VM's noise moves both), and reports the medians per run and their
// difference ("overhead-ns/op"). Garbage collection lands in some runs and
// the medians leave those out, so this figure excludes the collector's
// amortized cost of the one extra allocation, which BenchmarkGET includes.
func BenchmarkGETOverhead(b *testing.B) {
	mb, mt := alternateGET(b, benchBase{}, benchTransport(b))
	b.ReportMetric(mb, "bare-ns/op")
	b.ReportMetric(mt, "transport-ns/op")
	b.ReportMetric(mt-mb, "overhead-ns/op")
}

// alternateGET alternates runs of 128 plain GETs through x and through y
// for b.N requests in all, and returns the medians of their per-request
// times in ns: both see the same machine state, so a shared VM's noise
// moves both alike.
func alternateGET(b *testing.B, x, y http.RoundTripper) (mx, my float64) {
	const chunk = 128
	req, _ := http.NewRequest("GET", "https://api.example.com/v1/items?limit=10", nil)
	req.Header.Set("Authorization", "Bearer k")
	run := func(rt http.RoundTripper) float64 {
		start := time.Now()
		for range chunk {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
		return float64(time.Since(start)) / chunk
	}
	var xs, ys []float64
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += 2 * chunk {
		xs = append(xs, run(x))
		ys = append(ys, run(y))
	}
	b.StopTimer()
	return median(xs), median(ys)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkManyHosts measures the per-request cost with many active hosts
// (every request to the next host, round robin) against the cost with
// 1,000, alternating short runs of both in one loop so that a shared VM's
// noise moves both alike, and reports the medians per run and their ratio
// (the goal: at most 1.5 at 100,000 hosts, with no added allocation).
//
// As in a real client, each request is a recent object with a freshly made
// host string (not the string the host's cache entry was made from): the
// requests are a few reused objects whose URL's host is set, before each
// round trip, from copies of the host names made after the warm-up.
//
// The hosts are called in the order they were first called, as a client
// that polls a list of hosts does; BenchmarkManyHostsRandomOrder calls them
// in a random order.
func BenchmarkManyHosts(b *testing.B) {
	for _, hosts := range []int{10000, 20000, 100000} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) { benchManyHosts(b, hosts, false) })
	}
}

// BenchmarkManyHostsRandomOrder is BenchmarkManyHosts with the hosts called
// in a random order: nothing of a host's data is near the previous host's,
// and every request waits for the memory at least once (see README,
// Performance).
func BenchmarkManyHostsRandomOrder(b *testing.B) {
	b.Run("hosts=100000", func(b *testing.B) { benchManyHosts(b, 100000, true) })
}

func benchManyHosts(b *testing.B, hosts int, random bool) {
	const chunk = 256
	type set struct {
		rt    http.RoundTripper
		names []string
		reqs  [8]*http.Request
		i     int
	}
	mk := func(n int) *set {
		s := &set{rt: benchTransport(b), names: make([]string, n)}
		if os.Getenv("EZTHROTTLE_BENCH_BARE") != "" {
			s.rt = benchBase{}
		}
		for i := range s.reqs {
			s.reqs[i], _ = http.NewRequest("GET", "https://example.com/x", nil)
		}
		for range 2 { // every host tracked, and the cache settled
			for i := range s.names {
				r := s.reqs[0]
				r.URL.Host = fmt.Sprintf("h%d.example.com", i)
				resp, err := s.rt.RoundTrip(r)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		}
		// The names are made in the order they will be called, so
		// that, as a request's freshly parsed host in a real client,
		// each is near the last in memory.
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		if random {
			r := rand.New(rand.NewPCG(1, 2))
			r.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		for k, i := range order {
			s.names[k] = fmt.Sprintf("h%d.example.com", i)
		}
		return s
	}
	small, large := mk(1000), mk(hosts)
	run := func(s *set) time.Duration {
		start := time.Now()
		for range chunk {
			s.i++
			r := s.reqs[s.i%len(s.reqs)]
			r.URL.Host = s.names[s.i%len(s.names)]
			resp, err := s.rt.RoundTrip(r)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
		return time.Since(start)
	}
	var smallNs, largeNs []float64
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += 2 * chunk {
		smallNs = append(smallNs, float64(run(small))/chunk)
		largeNs = append(largeNs, float64(run(large))/chunk)
	}
	b.StopTimer()
	ms, ml := median(smallNs), median(largeNs)
	b.ReportMetric(ms, "1k-hosts-ns/op")
	b.ReportMetric(ml, "many-hosts-ns/op")
	b.ReportMetric(ml/ms, "ratio")
}

// BenchmarkGETLiveOverhead measures what the live view adds to a plain GET
// once it is on (LiveHandler / EnableLive), the way BenchmarkGETOverhead
// measures the Transport: it alternates runs of 128 requests through a
// Transport with the live view off and one with it on, and reports the
// medians and their difference ("live-ns/op").
func BenchmarkGETLiveOverhead(b *testing.B) {
	on := benchTransport(b).(*ezthrottle.Transport)
	on.EnableLive()
	mo, ml := alternateGET(b, benchTransport(b), on)
	b.ReportMetric(mo, "off-ns/op")
	b.ReportMetric(ml, "on-ns/op")
	b.ReportMetric(ml-mo, "live-ns/op")
}

// BenchmarkMemoryLatency measures the machine, not the library: the time of
// one dependent load (a pointer chase in a random cycle, one cache line per
// step) over working sets of several sizes. It is what bounds
// BenchmarkManyHostsRandomOrder: once the hosts' state outgrows the CPU's
// caches, every request waits about this long for it at least once.
func BenchmarkMemoryLatency(b *testing.B) {
	for _, mib := range []int{1, 4, 16, 64, 256} {
		b.Run(fmt.Sprintf("set=%dMiB", mib), func(b *testing.B) {
			const line = 8 // int64s per cache line
			n := mib << 20 / (line * 8)
			perm := rand.New(rand.NewPCG(3, 4)).Perm(n)
			next := make([]int64, n*line)
			for i := range n {
				next[perm[i]*line] = int64(perm[(i+1)%n] * line)
			}
			p := int64(0)
			b.ResetTimer()
			for range b.N {
				p = next[p]
			}
			chaseSink = p
		})
	}
}

var chaseSink int64
