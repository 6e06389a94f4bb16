package redislimit

import (
	"context"
	"math"
	"testing"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// BenchmarkDecisions measures admission decisions per second against the
// local Redis (one script call each), for one host and for many hosts, and
// with a lease in flight (one more round trip to release it).
func BenchmarkDecisions(b *testing.B) {
	addr := redisAddr(b)
	cases := []struct {
		name     string
		limit    ezthrottle.Limit
		parallel bool
		hosts    int
	}{
		{"rate/serial", ezthrottle.Limit{Rate: 1e6, Burst: 1_000_000}, false, 1},
		{"rate/parallel-hosts", ezthrottle.Limit{Rate: 1e6, Burst: 1_000_000}, true, 64},
		{"rate+lease/serial", ezthrottle.Limit{Rate: 1e6, Burst: 1_000_000, MaxInFlight: 1_000_000}, false, 1},
		{"unlimited/parallel-hosts", ezthrottle.Limit{Rate: math.Inf(1)}, true, 64},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			rdb := newClient(b, addr)
			l := newTestLimiter(b, rdb, WithPrefix(testPrefix(b)))
			keys := make([]string, c.hosts)
			for i := range keys {
				keys[i] = "https://host" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example:443"
			}
			ctx := context.Background()
			acquire := func(i int) {
				p, err := l.Acquire(ctx, ezthrottle.Admission{Key: keys[i%len(keys)], Limit: c.limit})
				if err != nil {
					b.Fatal(err)
				}
				p.Release()
			}
			b.ResetTimer()
			if c.parallel {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						acquire(i)
						i++
					}
				})
			} else {
				for i := 0; i < b.N; i++ {
					acquire(i)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
			b.ReportMetric(float64(l.Stats().RoundTrips)/float64(b.N), "roundtrips/decision")
			if s := l.Stats(); s.Errors > 0 || s.FallbackAcquires > 0 {
				b.Fatalf("Redis failed during the benchmark: %+v", s)
			}
		})
	}
}
