// Package pacing benchmarks how exactly the Transport keeps a host's rate,
// with golang.org/x/time/rate measured the same way in the same run as the
// reference. It is a module of its own so that the root module does not
// depend on x/time/rate.
//
// Run it with:
//
//	cd bench/pacing && go test -run '^$' -bench Pacing
//
// Each case sends requests over loopback to an httptest server, which
// records when each arrives; 8 goroutines per host keep a backlog, the
// host's limit is R requests per second with a burst of 1 and no cap in
// flight. The achieved rate of a host is (arrivals − 1) / (last arrival −
// first arrival); "err-%" is its deviation from R, in percent ("worst-err-%"
// is the host furthest from R when there are several).
package pacing

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

const goroutinesPerHost = 8

// recorder records the arrival times of requests, per Host header.
type recorder struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	r.mu.Lock()
	r.at[req.Host] = append(r.at[req.Host], now)
	r.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.at = map[string][]time.Time{}
	r.mu.Unlock()
}

// achieved returns the rate at which requests arrived for host, and how
// many arrived.
func (r *recorder) achieved(host string) (float64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := slices.Clone(r.at[host])
	if len(at) < 2 {
		return 0, len(at)
	}
	slices.SortFunc(at, time.Time.Compare)
	return float64(len(at)-1) / at[len(at)-1].Sub(at[0]).Seconds(), len(at)
}

// loopback returns the server and a base transport that sends every host
// name to it (so that many hosts share one listener, over loopback only).
func loopback(b *testing.B) (*recorder, *http.Transport) {
	rec := &recorder{at: map[string][]time.Time{}}
	srv := httptest.NewServer(rec)
	b.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	base := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: goroutinesPerHost,
	}
	b.Cleanup(base.CloseIdleConnections)
	return rec, base
}

// xrate is the reference: one x/time/rate limiter per host, waited for
// before the request is sent.
type xrate struct {
	base http.RoundTripper
	lim  map[string]*rate.Limiter
}

func (x xrate) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := x.lim[req.URL.Host].Wait(req.Context()); err != nil {
		return nil, err
	}
	return x.base.RoundTrip(req)
}

type limiterCase struct {
	name string
	rt   func(b *testing.B, base http.RoundTripper, hosts []string, r float64) http.RoundTripper
}

var limiters = []limiterCase{
	{"ezthrottle", func(b *testing.B, base http.RoundTripper, _ []string, r float64) http.RoundTripper {
		tr, err := ezthrottle.New(ezthrottle.WithBase(base), ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: r, Burst: 1}))
		if err != nil {
			b.Fatal(err)
		}
		return tr
	}},
	{"x-time-rate", func(_ *testing.B, base http.RoundTripper, hosts []string, r float64) http.RoundTripper {
		x := xrate{base: base, lim: map[string]*rate.Limiter{}}
		for _, h := range hosts {
			x.lim[h] = rate.NewLimiter(rate.Limit(r), 1)
		}
		return x
	}},
}

// run sends perHost requests to each host through rt, from
// goroutinesPerHost goroutines per host.
func run(b *testing.B, rt http.RoundTripper, hosts []string, perHost int) {
	var wg sync.WaitGroup
	for _, h := range hosts {
		var n atomic.Int64
		url := "http://" + h + "/"
		for range goroutinesPerHost {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n.Add(1) <= int64(perHost) {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			}()
		}
	}
	wg.Wait()
}

// warm opens the base's connections to every host, so that connection
// set-up does not delay the first measured arrivals.
func warm(b *testing.B, base http.RoundTripper, hosts []string) {
	run(b, base, hosts, goroutinesPerHost)
}

// measure runs b.N windows of perHost requests per host at rate r and
// reports the mean achieved rate and the worst deviation from r.
func measure(b *testing.B, lc limiterCase, hosts []string, r float64, perHost int) {
	rec, base := loopback(b)
	var sum, worst float64
	var n int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		warm(b, base, hosts)
		rec.reset()
		rt := lc.rt(b, base, hosts, r)
		b.StartTimer()
		run(b, rt, hosts, perHost)
		b.StopTimer()
		for _, h := range hosts {
			got, arrived := rec.achieved(h)
			if arrived != perHost {
				b.Fatalf("%s: %d arrivals, want %d", h, arrived, perHost)
			}
			sum += got
			n++
			if e := (got/r - 1) * 100; math.Abs(e) > math.Abs(worst) {
				worst = e
			}
		}
	}
	mean := sum / float64(n)
	if len(hosts) == 1 {
		b.ReportMetric(mean, "rps")
		b.ReportMetric((mean/r-1)*100, "err-%")
	} else {
		b.ReportMetric(mean, "mean-rps")
		b.ReportMetric(worst, "worst-err-%")
	}
	b.ReportMetric(0, "ns/op") // the window is fixed by the rate
}

// BenchmarkPacing measures the achieved rate of one host at R requests per
// second (burst 1, 8 goroutines), over a window of about 2 seconds, and of
// 100 hosts at 10 requests per second each (8 goroutines per host, 4 s).
func BenchmarkPacing(b *testing.B) {
	const window = 2 // seconds of requests per measurement
	for _, r := range []float64{2, 20, 200, 1000} {
		for _, lc := range limiters {
			b.Run(fmt.Sprintf("R=%v/%s", r, lc.name), func(b *testing.B) {
				measure(b, lc, []string{"api.example.test"}, r, 1+int(r)*window)
			})
		}
	}
	hosts := make([]string, 100)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d.example.test", i)
	}
	for _, lc := range limiters {
		b.Run("hosts=100xR=10/"+lc.name, func(b *testing.B) {
			measure(b, lc, hosts, 10, 1+10*4)
		})
	}
}
