package ezthrottle_test

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

var now0 = time.Date(2025, 11, 27, 12, 0, 0, 0, time.UTC)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"5", 5, true}, {"0.5", 0.5, true}, {" 2 ", 2, true}, {"0", 0, true}, {"1e3", 1000, true},
		{"", 0, false}, {"-1", 0, false}, {"NaN", 0, false}, {"nan", 0, false}, {"Inf", 0, false},
		{"+Inf", 0, false}, {"1e7", 0, false}, {"abc", 0, false}, {"5rps", 0, false}, {"0x10", 0, false}, {"0x1p-2", 0, false}, {"1_0", 0, false},
		{"1e400", 0, false},
	}
	for _, tt := range tests {
		got, ok := ezthrottle.ParseRate(tt.in)
		assert.Equal(t, tt.ok, ok, "%q", tt.in)
		if tt.ok {
			assert.Equal(t, tt.want, got, "%q", tt.in)
		}
	}
}

func TestParseConcurrency(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"2", 2, true}, {"0", 0, true}, {"10 ", 10, true}, {"2.0", 2, true},
		{"2.5", 0, false}, {"-1", 0, false}, {"", 0, false}, {"NaN", 0, false}, {"99999999999", 0, false},
		{"1e300", 0, false}, {"two", 0, false},
	}
	for _, tt := range tests {
		got, ok := ezthrottle.ParseConcurrency(tt.in)
		assert.Equal(t, tt.ok, ok, "%q", tt.in)
		if tt.ok {
			assert.Equal(t, tt.want, got, "%q", tt.in)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 120 * time.Second, true},
		{"0", 0, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"Thu, 27 Nov 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Thu, 27 Nov 2025 12:00:30 UTC", 30 * time.Second, true},
		{"Thu, 27 Nov 2025 13:00:30 +0100", 30 * time.Second, true},
		{"Thursday, 27-Nov-25 12:01:00 GMT", time.Minute, true},
		{"Thu Nov 27 12:00:05 2025", 5 * time.Second, true},
		{"Thu, 27 Nov 2025 11:00:00 GMT", 0, true},  // past: no wait
		{"Thu, 27 Nov 2025 07:00:30 EST", 0, false}, // Go would read EST as +0000: never trusted
		{"Thu, 27 Nov 2025 12:00:30 AAA", 0, false},
		{"", 0, false}, {"-5", 0, false}, {"NaN", 0, false}, {"soon", 0, false},
		{"99999999999", 0, false}, // absurd
		{"Thu, 27 Nov 2099 12:00:00 GMT", 0, false},
		{"Mon, 01 Jan 1990 00:00:00 GMT", 0, false},
		{"12abc", 0, false},
	}
	for _, tt := range tests {
		got, ok := ezthrottle.ParseRetryAfter(tt.in, now0)
		assert.Equal(t, tt.ok, ok, "%q", tt.in)
		if tt.ok {
			assert.Equal(t, tt.want, got, "%q", tt.in)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	tests := []struct {
		name       string
		rl, policy string
		want       ezthrottle.Quota
		ok         bool
	}{
		{"structured", `"default";r=50;t=30`, `"default";q=100;w=60`,
			ezthrottle.Quota{Limit: 100, Remaining: 50, Reset: now0.Add(30 * time.Second), Source: "RateLimit"}, true},
		{"structured token name", `default;r=0;t=5`, ``,
			ezthrottle.Quota{Remaining: 0, Reset: now0.Add(5 * time.Second), Source: "RateLimit"}, true},
		{"several policies: exhausted wins", `"burst";r=10;t=1, "daily";r=0;t=3600`, `"burst";q=20;w=1, "daily";q=1000;w=86400`,
			ezthrottle.Quota{Limit: 1000, Remaining: 0, Reset: now0.Add(time.Hour), Source: "RateLimit"}, true},
		{"several policies: fewest remaining", `"a";r=10;t=1, "b";r=3;t=60`, ``,
			ezthrottle.Quota{Remaining: 3, Reset: now0.Add(time.Minute), Source: "RateLimit"}, true},
		{"flat draft 07", `limit=100, remaining=0, reset=30`, ``,
			ezthrottle.Quota{Limit: 100, Remaining: 0, Reset: now0.Add(30 * time.Second), Source: "RateLimit"}, true},
		{"flat with flat policy", `remaining=7, reset=2`, `100;w=60`,
			ezthrottle.Quota{Limit: 100, Remaining: 7, Reset: now0.Add(2 * time.Second), Source: "RateLimit"}, true},
		{"quoted comma", `"a,b";r=4;t=1`, ``,
			ezthrottle.Quota{Remaining: 4, Reset: now0.Add(time.Second), Source: "RateLimit"}, true},
		{"policy only", ``, `"default";q=100;w=60`,
			ezthrottle.Quota{Limit: 100, Remaining: 100, Source: "RateLimit"}, true},
		{"garbage remaining", `"default";r=-1;t=30`, ``, ezthrottle.Quota{}, false},
		{"garbage reset", `"default";r=0;t=NaN`, ``,
			ezthrottle.Quota{Remaining: 0, Source: "RateLimit"}, true},
		{"absurd reset ignored", `"default";r=0;t=999999999999`, ``,
			ezthrottle.Quota{Remaining: 0, Source: "RateLimit"}, true},
		{"empty", ``, ``, ezthrottle.Quota{}, false},
		{"junk", `;;;,,,"`, `===`, ezthrottle.Quota{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ezthrottle.ParseRateLimit(tt.rl, tt.policy, now0)
			assert.Equal(t, tt.ok, ok)
			if tt.ok {
				assert.Equal(t, tt.want, got)
			}
		})
	}
}

func TestParseRateLimitFields(t *testing.T) {
	tests := []struct {
		name                    string
		limit, remaining, reset string
		want                    ezthrottle.Quota
		ok                      bool
	}{
		{"delta seconds", "60", "0", "30", ezthrottle.Quota{Limit: 60, Remaining: 0, Reset: now0.Add(30 * time.Second), Source: "RateLimit"}, true},
		{"unix seconds (GitHub)", "5000", "4999", "1764244860", ezthrottle.Quota{Limit: 5000, Remaining: 4999, Reset: time.Unix(1764244860, 0), Source: "RateLimit"}, true},
		{"unix millis", "10", "0", "1764244860000", ezthrottle.Quota{Limit: 10, Remaining: 0, Reset: time.UnixMilli(1764244860000), Source: "RateLimit"}, true},
		{"unix past clamps to now", "10", "0", "1764244000", ezthrottle.Quota{Limit: 10, Remaining: 0, Reset: now0, Source: "RateLimit"}, true},
		{"http date", "10", "0", "Thu, 27 Nov 2025 12:00:10 GMT", ezthrottle.Quota{Limit: 10, Remaining: 0, Reset: now0.Add(10 * time.Second), Source: "RateLimit"}, true},
		{"http date in the past clamps to now", "10", "0", "Thu, 27 Nov 2025 11:00:00 GMT", ezthrottle.Quota{Limit: 10, Remaining: 0, Reset: now0, Source: "RateLimit"}, true},
		{"http date with an unknown zone ignored", "10", "0", "Thu, 27 Nov 2025 12:00:10 EST", ezthrottle.Quota{Limit: 10, Remaining: 0, Source: "RateLimit"}, true},
		{"policy suffix", "100, 100;w=60", "5", "7", ezthrottle.Quota{Limit: 100, Remaining: 5, Reset: now0.Add(7 * time.Second), Source: "RateLimit"}, true},
		{"no reset", "", "3", "", ezthrottle.Quota{Remaining: 3, Source: "RateLimit"}, true},
		{"garbage reset", "1", "0", "-4", ezthrottle.Quota{Limit: 1, Remaining: 0, Source: "RateLimit"}, true},
		{"unix far future ignored", "1", "0", "99999999999", ezthrottle.Quota{Limit: 1, Remaining: 0, Source: "RateLimit"}, true},
		{"no remaining", "10", "", "5", ezthrottle.Quota{}, false},
		{"negative remaining", "10", "-1", "5", ezthrottle.Quota{}, false},
		{"NaN remaining", "10", "NaN", "5", ezthrottle.Quota{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ezthrottle.ParseRateLimitFields(tt.limit, tt.remaining, tt.reset, now0)
			assert.Equal(t, tt.ok, ok)
			if tt.ok {
				assert.Equal(t, tt.want.Limit, got.Limit)
				assert.Equal(t, tt.want.Remaining, got.Remaining)
				assert.True(t, tt.want.Reset.Equal(got.Reset), "reset %v, want %v", got.Reset, tt.want.Reset)
			}
		})
	}
}

func TestParseOpenAI(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"6m0s": 6 * time.Minute, "1s": time.Second, "20ms": 20 * time.Millisecond,
		"1h2m3.5s": time.Hour + 2*time.Minute + 3500*time.Millisecond, "1.5": 1500 * time.Millisecond, "0s": 0,
	} {
		got, ok := ezthrottle.ParseOpenAIReset(in)
		assert.True(t, ok, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1s", "soon", "1000h", "NaN", "1e9"} {
		_, ok := ezthrottle.ParseOpenAIReset(in)
		assert.False(t, ok, in)
	}
	q, ok := ezthrottle.ParseOpenAIQuota("60", "0", "6m0s", now0)
	require.True(t, ok)
	assert.Equal(t, ezthrottle.Quota{Limit: 60, Remaining: 0, Reset: now0.Add(6 * time.Minute), Source: "OpenAI"}, q)
	assert.True(t, q.Exhausted())
	_, ok = ezthrottle.ParseOpenAIQuota("60", "x", "1s", now0)
	assert.False(t, ok)
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseSignals(t *testing.T) {
	t.Run("nothing", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("Content-Type", "text/plain", "X-Request-Id", "1"), 200, now0)
		assert.True(t, s.IsZero())
	})
	t.Run("pace: Aqueduct first", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("X-EZTHROTTLE-RPS", "5", "X-Aqueduct-Rps", "0.5",
			"X-EZTHROTTLE-MAX-CONCURRENT", "10", "X-Aqueduct-Max-Concurrent", "3"), 200, now0)
		assert.Equal(t, ezthrottle.Signals{RPS: 0.5, HasRPS: true, MaxConcurrent: 3, HasMaxConcurrent: true}, s)
	})
	t.Run("pace: EZThrottle when Aqueduct is garbage", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("X-EZTHROTTLE-RPS", "5", "X-Aqueduct-Rps", "NaN",
			"X-Ezthrottle-Max-Concurrent", "10"), 200, now0)
		assert.Equal(t, 5.0, s.RPS)
		assert.Equal(t, 10, s.MaxConcurrent)
	})
	t.Run("pace: the three families, first valid wins per value", func(t *testing.T) {
		tests := []struct {
			name    string
			h       http.Header
			rps     float64
			hasRPS  bool
			conc    int
			hasConc bool
		}{
			{"Aquifer alone", hdr("X-Aquifer-Rps", "0.25", "X-Aquifer-Max-Concurrent", "4"), 0.25, true, 4, true},
			{"Aquifer, lower case", http.Header{"x-aquifer-rps": {"3"}, "x-aquifer-max-concurrent": {"0"}}, 3, true, 0, true},
			{"Aquifer, upper case", http.Header{"X-AQUIFER-RPS": {"3"}, "X-AQUIFER-MAX-CONCURRENT": {"7"}}, 3, true, 7, true},
			{"Aquifer before EZThrottle", hdr("X-EZTHROTTLE-RPS", "5", "X-Aquifer-Rps", "1",
				"X-EZTHROTTLE-MAX-CONCURRENT", "9", "X-Aquifer-Max-Concurrent", "2"), 1, true, 2, true},
			{"Aqueduct before Aquifer", hdr("X-Aquifer-Rps", "1", "X-Aqueduct-Rps", "0.5",
				"X-Aquifer-Max-Concurrent", "2", "X-Aqueduct-Max-Concurrent", "3"), 0.5, true, 3, true},
			{"garbage Aqueduct falls through to Aquifer", hdr("X-Aqueduct-Rps", "NaN", "X-Aquifer-Rps", "2", "X-EZTHROTTLE-RPS", "5",
				"X-Aqueduct-Max-Concurrent", "-1", "X-Aquifer-Max-Concurrent", "6", "X-EZTHROTTLE-MAX-CONCURRENT", "8"), 2, true, 6, true},
			{"garbage Aquifer falls through to EZThrottle", hdr("X-Aquifer-Rps", "fast", "X-EZTHROTTLE-RPS", "5",
				"X-Aquifer-Max-Concurrent", "2.5", "X-EZTHROTTLE-MAX-CONCURRENT", "8"), 5, true, 8, true},
			{"families mixed per value", hdr("X-Aquifer-Rps", "4", "X-EZTHROTTLE-MAX-CONCURRENT", "8"), 4, true, 8, true},
			{"garbage everywhere", hdr("X-Aquifer-Rps", "Inf", "X-Aquifer-Max-Concurrent", "1e300"), 0, false, 0, false},
		}
		for _, tt := range tests {
			s := ezthrottle.ParseSignals(tt.h, 200, now0)
			assert.Equal(t, tt.hasRPS, s.HasRPS, tt.name)
			assert.Equal(t, tt.rps, s.RPS, tt.name)
			assert.Equal(t, tt.hasConc, s.HasMaxConcurrent, tt.name)
			assert.Equal(t, tt.conc, s.MaxConcurrent, tt.name)
		}
	})
	t.Run("non-canonical names", func(t *testing.T) {
		h := http.Header{"x-ezthrottle-rps": {"7"}, "retry-after": {"3"}}
		s := ezthrottle.ParseSignals(h, 429, now0)
		assert.Equal(t, 7.0, s.RPS)
		assert.Equal(t, now0.Add(3*time.Second), s.PauseUntil)
	})
	t.Run("garbage ignored", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("X-EZTHROTTLE-RPS", "-3", "X-EZTHROTTLE-MAX-CONCURRENT", "NaN",
			"Retry-After", "never", "X-RateLimit-Remaining", "lots"), 429, now0)
		assert.True(t, s.IsZero(), "%+v", s)
	})
	t.Run("Retry-After pauses only on 429 and 503", func(t *testing.T) {
		for status, pause := range map[int]bool{429: true, 503: true, 200: false, 500: false, 301: false} {
			s := ezthrottle.ParseSignals(hdr("Retry-After", "10"), status, now0)
			assert.True(t, s.HasRetryAfter)
			assert.Equal(t, pause, !s.PauseUntil.IsZero(), "status %d", status)
		}
	})
	t.Run("exhausted quota pauses until reset", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("X-RateLimit-Limit", "60", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "20"), 200, now0)
		require.True(t, s.HasQuota)
		assert.Equal(t, "X-RateLimit", s.Quota.Source)
		assert.Equal(t, now0.Add(20*time.Second), s.PauseUntil)
	})
	t.Run("quota not exhausted does not pause", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("X-RateLimit-Remaining", "3", "X-RateLimit-Reset", "20"), 200, now0)
		assert.True(t, s.HasQuota)
		assert.True(t, s.PauseUntil.IsZero())
	})
	t.Run("later of Retry-After and quota reset", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("Retry-After", "5", "RateLimit", `"d";r=0;t=50`), 429, now0)
		assert.Equal(t, now0.Add(50*time.Second), s.PauseUntil)
		s = ezthrottle.ParseSignals(hdr("Retry-After", "90", "RateLimit", `"d";r=0;t=50`), 429, now0)
		assert.Equal(t, now0.Add(90*time.Second), s.PauseUntil)
	})
	t.Run("OpenAI", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("x-ratelimit-limit-requests", "60", "x-ratelimit-remaining-requests", "0",
			"x-ratelimit-reset-requests", "6m0s", "x-ratelimit-remaining-tokens", "0"), 200, now0)
		assert.Equal(t, "OpenAI", s.Quota.Source)
		assert.Equal(t, now0.Add(6*time.Minute), s.PauseUntil)
	})
	t.Run("IETF flat separate fields with policy", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("RateLimit-Limit", "10", "RateLimit-Remaining", "0", "RateLimit-Reset", "4"), 200, now0)
		assert.Equal(t, int64(10), s.Quota.Limit)
		assert.Equal(t, now0.Add(4*time.Second), s.PauseUntil)
		s = ezthrottle.ParseSignals(hdr("RateLimit-Remaining", "2", "RateLimit-Policy", "10;w=1"), 200, now0)
		assert.Equal(t, int64(10), s.Quota.Limit)
	})
	t.Run("most restrictive family", func(t *testing.T) {
		s := ezthrottle.ParseSignals(hdr("X-RateLimit-Remaining", "50", "RateLimit", `"d";r=2;t=1`), 200, now0)
		assert.Equal(t, int64(2), s.Quota.Remaining)
	})
}

// checkSignals asserts the invariants every parse must keep.
func checkSignals(t *testing.T, s ezthrottle.Signals) {
	if s.HasRPS && (math.IsNaN(s.RPS) || s.RPS < 0 || s.RPS > ezthrottle.MaxSignalRPS) {
		t.Fatalf("bad RPS %v", s.RPS)
	}
	if s.HasMaxConcurrent && (s.MaxConcurrent < 0 || s.MaxConcurrent > ezthrottle.MaxSignalConcurrency) {
		t.Fatalf("bad max concurrent %d", s.MaxConcurrent)
	}
	if s.HasRetryAfter && (s.RetryAfter < 0 || s.RetryAfter > ezthrottle.MaxSignalWait) {
		t.Fatalf("bad Retry-After %v", s.RetryAfter)
	}
	if !s.PauseUntil.IsZero() && (s.PauseUntil.Before(now0) || s.PauseUntil.Sub(now0) > ezthrottle.MaxSignalWait) {
		t.Fatalf("bad pause %v", s.PauseUntil)
	}
	if s.HasQuota {
		checkQuota(t, s.Quota)
	}
}

func checkQuota(t *testing.T, q ezthrottle.Quota) {
	if q.Remaining < 0 || q.Limit < 0 {
		t.Fatalf("negative quota %+v", q)
	}
	if !q.Reset.IsZero() && (q.Reset.Before(now0) || q.Reset.Sub(now0) > ezthrottle.MaxSignalWait) {
		t.Fatalf("bad reset %v", q.Reset)
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"5", "0.5", "0", "-1", "NaN", "Inf", "1e400", "0x1p-2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r, ok := ezthrottle.ParseRate(v)
		if ok && (math.IsNaN(r) || r < 0 || r > ezthrottle.MaxSignalRPS) {
			t.Fatalf("ParseRate(%q) = %v", v, r)
		}
	})
}

func FuzzParseConcurrency(f *testing.F) {
	for _, s := range []string{"2", "0", "-1", "2.0", "2.5", "NaN", "1e300", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, ok := ezthrottle.ParseConcurrency(v)
		if ok && (n < 0 || n > ezthrottle.MaxSignalConcurrency) {
			t.Fatalf("ParseConcurrency(%q) = %v", v, n)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "1.5", "-1", "NaN", "Thu, 27 Nov 2025 12:00:30 GMT", "Thu, 27 Nov 2025 12:00:30 UTC",
		"Thursday, 27-Nov-25 12:01:00 GMT", "Thu Nov 27 12:00:05 2025", "1e308", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ezthrottle.ParseRetryAfter(v, now0)
		if ok && (d < 0 || d > ezthrottle.MaxSignalWait) {
			t.Fatalf("ParseRetryAfter(%q) = %v", v, d)
		}
	})
}

func FuzzParseRateLimit(f *testing.F) {
	f.Add(`"default";r=50;t=30`, `"default";q=100;w=60`)
	f.Add(`limit=100, remaining=0, reset=30`, `100;w=60`)
	f.Add(`"a,b";r=4;t=1, b;r=0;t=99999999999`, `;;;`)
	f.Add(`"\"";r=1`, `"x";q=-1`)
	f.Fuzz(func(t *testing.T, rl, policy string) {
		if q, ok := ezthrottle.ParseRateLimit(rl, policy, now0); ok {
			checkQuota(t, q)
		}
	})
}

func FuzzParseRateLimitFields(f *testing.F) {
	f.Add("60", "0", "30")
	f.Add("5000", "4999", "1764244860")
	f.Add("10", "0", "1764244860000")
	f.Add("10", "0", "Thu, 27 Nov 2025 12:00:10 GMT")
	f.Add("x", "-1", "1e308")
	f.Fuzz(func(t *testing.T, limit, remaining, reset string) {
		if q, ok := ezthrottle.ParseRateLimitFields(limit, remaining, reset, now0); ok {
			checkQuota(t, q)
		}
	})
}

func FuzzParseOpenAIQuota(f *testing.F) {
	f.Add("60", "0", "6m0s")
	f.Add("60", "59", "20ms")
	f.Add("1", "0", "1.5")
	f.Add("1", "0", "-1s")
	f.Fuzz(func(t *testing.T, limit, remaining, reset string) {
		if q, ok := ezthrottle.ParseOpenAIQuota(limit, remaining, reset, now0); ok {
			checkQuota(t, q)
		}
		if d, ok := ezthrottle.ParseOpenAIReset(reset); ok && (d < 0 || d > ezthrottle.MaxSignalWait) {
			t.Fatalf("ParseOpenAIReset(%q) = %v", reset, d)
		}
	})
}

func FuzzParseSignals(f *testing.F) {
	f.Add("X-Aqueduct-Rps", "0.5", "Retry-After", "10", "RateLimit", `"d";r=0;t=5`, 429)
	f.Add("X-EZTHROTTLE-MAX-CONCURRENT", "0", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1764244860", 200)
	f.Add("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "6m0s", "RateLimit-Policy", "10;w=1", 503)
	f.Add("X-Aquifer-Rps", "0.5", "X-Aquifer-Max-Concurrent", "3", "X-EZTHROTTLE-RPS", "9", 200)
	f.Add("x-aquifer-rps", "NaN", "X-Aqueduct-Max-Concurrent", "-1", "X-AQUIFER-MAX-CONCURRENT", "1e300", 429)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string, status int) {
		h := http.Header{k1: {v1}, k2: {v2}, k3: {v3}}
		s := ezthrottle.ParseSignals(h, status, now0)
		checkSignals(t, s)
		// Precedence: the pace comes from the first family, in the
		// documented order, whose value is valid.
		wantRPS, wantRPSOK, amb := firstValid(h, ezthrottle.ParseRate,
			ezthrottle.HeaderAqueductRPS, ezthrottle.HeaderAquiferRPS, ezthrottle.HeaderEZThrottleRPS)
		if !amb && (s.HasRPS != wantRPSOK || (wantRPSOK && s.RPS != wantRPS)) {
			t.Fatalf("RPS %v/%v, want %v/%v for %v", s.RPS, s.HasRPS, wantRPS, wantRPSOK, h)
		}
		wantMC, wantMCOK, amb := firstValid(h, ezthrottle.ParseConcurrency,
			ezthrottle.HeaderAqueductMaxConcurrent, ezthrottle.HeaderAquiferMaxConcurrent, ezthrottle.HeaderEZThrottleMaxConcurrent)
		if !amb && (s.HasMaxConcurrent != wantMCOK || (wantMCOK && s.MaxConcurrent != wantMC)) {
			t.Fatalf("max concurrent %v/%v, want %v/%v for %v", s.MaxConcurrent, s.HasMaxConcurrent, wantMC, wantMCOK, h)
		}
	})
}

// firstValid is the reference model of the pace precedence: the first of
// the named headers (matched case-insensitively, first value, as the
// Transport reads them) whose value parses. A header named twice in
// different cases has no defined order: ambiguous is then true.
func firstValid[T any](h http.Header, parse func(string) (T, bool), names ...string) (v T, ok, ambiguous bool) {
	for _, name := range names {
		n := 0
		var vs []string
		for k, kvs := range h {
			if strings.EqualFold(k, name) && len(kvs) > 0 {
				n, vs = n+1, kvs
			}
		}
		if n > 1 {
			return v, false, true
		}
		if n == 1 {
			if x, ok := parse(vs[0]); ok {
				return x, true, false
			}
		}
	}
	return v, false, false
}
