package ezthrottle

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Response headers through which an API steers the pace (protocol §5). The
// names are given in their canonical form; matching is case-insensitive.
//
// Three families carry the same two values. For each value separately
// (pace, cap in flight) the first family with a valid value wins:
// X-Aqueduct-*, then X-Aquifer-*, then X-EZTHROTTLE-*; a garbage value in
// one family does not hide a valid one in the next.
const (
	// HeaderAqueductRPS is the requests-per-second pace (read before
	// HeaderAquiferRPS and HeaderEZThrottleRPS).
	HeaderAqueductRPS = "X-Aqueduct-Rps"
	// HeaderAqueductMaxConcurrent is the cap on requests in flight (read
	// before HeaderAquiferMaxConcurrent and HeaderEZThrottleMaxConcurrent).
	HeaderAqueductMaxConcurrent = "X-Aqueduct-Max-Concurrent"
	// HeaderAquiferRPS is the pace as self-hosted engines read it (read
	// after HeaderAqueductRPS, before HeaderEZThrottleRPS).
	HeaderAquiferRPS = "X-Aquifer-Rps"
	// HeaderAquiferMaxConcurrent is the cap in flight as self-hosted
	// engines read it (read after HeaderAqueductMaxConcurrent, before
	// HeaderEZThrottleMaxConcurrent).
	HeaderAquiferMaxConcurrent = "X-Aquifer-Max-Concurrent"
	// HeaderEZThrottleRPS is X-EZTHROTTLE-RPS, e.g. "0.5" for one request
	// every two seconds.
	HeaderEZThrottleRPS = "X-Ezthrottle-Rps"
	// HeaderEZThrottleMaxConcurrent is X-EZTHROTTLE-MAX-CONCURRENT.
	HeaderEZThrottleMaxConcurrent = "X-Ezthrottle-Max-Concurrent"
)

// Bounds beyond which a header value is treated as garbage and ignored.
const (
	// MaxSignalRPS is the largest pace accepted from a header.
	MaxSignalRPS = 1e6
	// MaxSignalConcurrency is the largest in-flight cap accepted from a header.
	MaxSignalConcurrency = 1 << 20
	// MaxSignalWait is the longest Retry-After or quota reset accepted from a
	// header; anything larger is ignored as garbage. (The Transport caps the
	// pause it applies far lower; see WithMaxPause.)
	MaxSignalWait = 7 * 24 * time.Hour
	maxQuotaValue = 1 << 40
)

// Quota is a request quota announced by the API: how many requests the
// current window allows, how many remain and when the window resets.
type Quota struct {
	// Limit is the window's quota; 0 when the API did not say.
	Limit int64
	// Remaining is how many requests the window still allows.
	Remaining int64
	// Reset is when the window resets; zero when the API did not say.
	Reset time.Time
	// Source names the header family: "RateLimit" (IETF, structured or
	// flat), "X-RateLimit" or "OpenAI".
	Source string
}

// Exhausted reports whether no request remains in the window and its reset
// time is known.
func (q Quota) Exhausted() bool { return q.Remaining <= 0 && !q.Reset.IsZero() }

// Signals is what one response says about the pace its host accepts. The
// zero value means "nothing learned". Every field is validated: garbage
// values (negative, NaN, infinite, absurdly large, unparsable) are left unset.
type Signals struct {
	// RPS is the pace from X-Aqueduct-Rps, X-Aquifer-Rps or
	// X-EZTHROTTLE-RPS (the first valid one, in this order); valid only
	// when HasRPS. It may be 0 (the Transport floors it, see WithMinRate).
	RPS    float64
	HasRPS bool
	// MaxConcurrent is the cap from X-Aqueduct-Max-Concurrent,
	// X-Aquifer-Max-Concurrent or X-EZTHROTTLE-MAX-CONCURRENT (the first
	// valid one, in this order); valid only when HasMaxConcurrent. It may
	// be 0 (the Transport floors it to 1).
	MaxConcurrent    int
	HasMaxConcurrent bool
	// RetryAfter is the Retry-After value; valid only when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
	// Quota is the most restrictive quota announced by the IETF RateLimit
	// fields, X-RateLimit-* or OpenAI's x-ratelimit-*-requests; valid only
	// when HasQuota.
	Quota    Quota
	HasQuota bool
	// PauseUntil is when the host may be called again: set from
	// Retry-After on a 429 or 503, or from the reset of an exhausted quota
	// (the later of the two). Zero means no pause. ParseSignals sets it
	// without jitter or cap; the Transport adds both before handing the
	// signals to its Limiter.
	PauseUntil time.Time
	// Available, when HasAvailable, caps what the bucket of the key holds
	// now, in cost units (see Admission.Cost): a Limiter lowers the bucket
	// to it and never raises it. ParseSignals never sets it; the Transport
	// does, on the key of an LLM budget, from the remaining count the API
	// announced (see ParseBudgets).
	Available    float64
	HasAvailable bool
	// AvailableExact makes Available the bucket's level, raising it too:
	// the Transport sets it when the API's first answer for a model
	// replaces a guess that lowered the model's bucket.
	AvailableExact bool
}

// IsZero reports whether the signals carry nothing to apply.
func (s Signals) IsZero() bool {
	return !s.HasRPS && !s.HasMaxConcurrent && !s.HasRetryAfter && !s.HasQuota && s.PauseUntil.IsZero() && !s.HasAvailable
}

// header kinds recognised by ParseSignals.
const (
	hNone = iota
	hRetryAfter
	hRateLimit
	hRateLimitPolicy
	hRLLimit
	hRLRemaining
	hRLReset
	hXLimit
	hXRemaining
	hXReset
	hOLimit
	hORemaining
	hOReset
	hAqRPS
	hAqMC
	hAfRPS
	hAfMC
	hEzRPS
	hEzMC
	hBudget // an LLM budget header that ParseBudgets reads (llm_headers.go)
	hCount
)

// headerKind classifies a header name without allocating. Names are
// matched case-insensitively.
func headerKind(k string) int {
	if len(k) < 9 {
		return hNone
	}
	switch k[0] {
	case 'R', 'r', 'X', 'x':
	case 'A', 'a':
		if isBudgetHeader(k) {
			return hBudget
		}
		return hNone
	default:
		return hNone
	}
	eq := strings.EqualFold
	switch len(k) {
	case 9:
		if eq(k, "Ratelimit") {
			return hRateLimit
		}
	case 11:
		if eq(k, "Retry-After") {
			return hRetryAfter
		}
	case 13:
		if eq(k, HeaderAquiferRPS) {
			return hAfRPS
		}
	case 14:
		if eq(k, HeaderAqueductRPS) {
			return hAqRPS
		}
	case 15:
		if eq(k, "Ratelimit-Limit") {
			return hRLLimit
		}
		if eq(k, "Ratelimit-Reset") {
			return hRLReset
		}
	case 16:
		if eq(k, "Ratelimit-Policy") {
			return hRateLimitPolicy
		}
		if eq(k, HeaderEZThrottleRPS) {
			return hEzRPS
		}
	case 17:
		if eq(k, "X-Ratelimit-Limit") {
			return hXLimit
		}
		if eq(k, "X-Ratelimit-Reset") {
			return hXReset
		}
	case 19:
		if eq(k, "Ratelimit-Remaining") {
			return hRLRemaining
		}
	case 21:
		if eq(k, "X-Ratelimit-Remaining") {
			return hXRemaining
		}
	case 24:
		if eq(k, HeaderAquiferMaxConcurrent) {
			return hAfMC
		}
		if isBudgetHeader(k) {
			return hBudget
		}
	case 25:
		if eq(k, HeaderAqueductMaxConcurrent) {
			return hAqMC
		}
	case 26:
		if eq(k, "X-Ratelimit-Limit-Requests") {
			return hOLimit
		}
		if eq(k, "X-Ratelimit-Reset-Requests") {
			return hOReset
		}
	case 27:
		if eq(k, HeaderEZThrottleMaxConcurrent) {
			return hEzMC
		}
	case 30:
		if eq(k, "X-Ratelimit-Remaining-Requests") {
			return hORemaining
		}
	case 28:
		if isBudgetHeader(k) {
			return hBudget
		}
	}
	return hNone
}

// ParseSignals reads every rate-limit signal of a response: the pace
// headers (Aqueduct first, then Aquifer, then EZThrottle), Retry-After, the IETF RateLimit
// and RateLimit-Policy fields (structured and flat drafts), X-RateLimit-*,
// and OpenAI's x-ratelimit-*-requests. status is the response status: a
// Retry-After pauses the host only on a 429 or a 503. now is the reference
// time for relative values.
//
// It never fails: garbage values are ignored. A response without any of
// these headers costs one pass over its header names and no allocation.
func ParseSignals(h http.Header, status int, now time.Time) Signals {
	v, found := scanSignals(h)
	if !found {
		return Signals{}
	}
	return signalsFrom(&v, status, now)
}

// signalHeaders holds the values of the recognised headers, by kind.
type signalHeaders [hCount][]string

// hasSignals reports whether h has any rate-limit header, without
// collecting them.
func hasSignals(h http.Header) bool {
	for k := range h {
		if headerKind(k) != hNone {
			return true
		}
	}
	return false
}

// scanSignals collects the rate-limit headers in one pass over h.
func scanSignals(h http.Header) (v signalHeaders, found bool) {
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		if kind := headerKind(k); kind != hNone {
			v[kind] = vs
			found = true
		}
	}
	return v, found
}

func signalsFrom(v *signalHeaders, status int, now time.Time) Signals {
	var s Signals
	first := func(kind int) string {
		if vs := v[kind]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	// Pace: the first valid value of Aqueduct, Aquifer, EZThrottle.
	for _, kind := range [...]int{hAqRPS, hAfRPS, hEzRPS} {
		if r, ok := ParseRate(first(kind)); ok {
			s.RPS, s.HasRPS = r, true
			break
		}
	}
	for _, kind := range [...]int{hAqMC, hAfMC, hEzMC} {
		if c, ok := ParseConcurrency(first(kind)); ok {
			s.MaxConcurrent, s.HasMaxConcurrent = c, true
			break
		}
	}
	if d, ok := ParseRetryAfter(first(hRetryAfter), now); ok {
		s.RetryAfter, s.HasRetryAfter = d, true
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			s.PauseUntil = now.Add(d)
		}
	}
	// Quotas: keep the most restrictive of the families present.
	consider := func(q Quota, ok bool) {
		if ok && (!s.HasQuota || moreRestrictive(q, s.Quota)) {
			s.Quota, s.HasQuota = q, true
		}
	}
	if v[hRateLimit] != nil {
		consider(ParseRateLimit(strings.Join(v[hRateLimit], ","), strings.Join(v[hRateLimitPolicy], ","), now))
	}
	if v[hRLLimit] != nil || v[hRLRemaining] != nil || v[hRLReset] != nil {
		q, ok := ParseRateLimitFields(first(hRLLimit), first(hRLRemaining), first(hRLReset), now)
		if ok && q.Limit == 0 {
			if pq, pok := ParseRateLimit("", strings.Join(v[hRateLimitPolicy], ","), now); pok {
				q.Limit = pq.Limit
			}
		}
		consider(q, ok)
	}
	if v[hXLimit] != nil || v[hXRemaining] != nil || v[hXReset] != nil {
		q, ok := ParseRateLimitFields(first(hXLimit), first(hXRemaining), first(hXReset), now)
		q.Source = "X-RateLimit"
		consider(q, ok)
	}
	if v[hOLimit] != nil || v[hORemaining] != nil || v[hOReset] != nil {
		consider(ParseOpenAIQuota(first(hOLimit), first(hORemaining), first(hOReset), now))
	}
	if s.HasQuota && s.Quota.Exhausted() && s.Quota.Reset.After(s.PauseUntil) && s.Quota.Reset.After(now) {
		s.PauseUntil = s.Quota.Reset
	}
	return s
}

// moreRestrictive reports whether quota a binds harder than b: exhausted
// beats not exhausted, then the later reset among exhausted ones, else the
// fewer remaining requests.
func moreRestrictive(a, b Quota) bool {
	ae, be := a.Exhausted(), b.Exhausted()
	switch {
	case ae && !be:
		return true
	case !ae && be:
		return false
	case ae && be:
		return a.Reset.After(b.Reset)
	}
	return a.Remaining < b.Remaining
}

// ParseRate parses a pace header value (X-Aqueduct-Rps, X-Aquifer-Rps,
// X-EZTHROTTLE-RPS):
// a decimal number of requests per second such as "5" or "0.5". Zero is
// accepted (the caller must floor it); negative, NaN, infinite values and
// values above MaxSignalRPS are rejected.
func ParseRate(v string) (float64, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 32 {
		return 0, false
	}
	if !decimalNumber(v) {
		return 0, false
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(r) || math.IsInf(r, 0) || r < 0 || r > MaxSignalRPS {
		return 0, false
	}
	return r, true
}

// ParseConcurrency parses a max-concurrent header value: a non-negative
// integer ("2", also "2.0") no larger than MaxSignalConcurrency. Zero is
// accepted (the caller must floor it).
func ParseConcurrency(v string) (int, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 32 {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > MaxSignalConcurrency {
			return 0, false
		}
		return int(n), true
	}
	if !decimalNumber(v) {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > MaxSignalConcurrency || f != math.Trunc(f) {
		return 0, false
	}
	return int(f), true
}

// ParseRetryAfter parses a Retry-After value: delay seconds ("120", also a
// decimal "1.5") or an HTTP-date (IMF-fixdate, RFC 850, asctime, and RFC 1123
// with a "UTC" or numeric zone). A date in the past yields 0. Negative, NaN
// and garbage values, and waits over MaxSignalWait, are rejected.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 64 {
		return 0, false
	}
	if c := v[0]; c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' {
		if !decimalNumber(v) {
			return 0, false
		}
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(secs) || secs < 0 || secs > MaxSignalWait.Seconds() {
			return 0, false
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	t, ok := parseHTTPDate(v)
	if !ok {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	if d > MaxSignalWait || now.Sub(t) > MaxSignalWait {
		return 0, false
	}
	return d, true
}

var httpDateLayouts = [...]string{
	http.TimeFormat, // IMF-fixdate: Mon, 02 Jan 2006 15:04:05 GMT
	time.RFC1123,    // also "UTC" and other named zones
	time.RFC1123Z,   // numeric zone
	time.RFC850,
	time.ANSIC,
}

// parseHTTPDate parses an HTTP-date. A named zone must be GMT or UTC: Go
// reads any other abbreviation it does not know ("EST", "AAA") as a zero
// offset, which would silently shift the time by hours.
func parseHTTPDate(v string) (time.Time, bool) {
	for _, layout := range httpDateLayouts {
		t, err := time.Parse(layout, v)
		if err != nil {
			continue
		}
		if layout == time.RFC1123 || layout == time.RFC850 {
			if name, _ := t.Zone(); name != "GMT" && name != "UTC" {
				return time.Time{}, false
			}
		}
		return t, true
	}
	return time.Time{}, false
}

// ParseRateLimit parses the IETF RateLimit field together with its
// RateLimit-Policy field (either may be empty), in both forms:
//
//   - structured (draft-ietf-httpapi-ratelimit-headers-08 and later):
//     RateLimit: "default";r=50;t=30 and RateLimit-Policy: "default";q=100;w=60.
//     With several policies the most restrictive one is returned.
//   - flat (draft 07): RateLimit: limit=100, remaining=50, reset=30 and
//     RateLimit-Policy: 100;w=60.
//
// t and reset are delta seconds from now. It reports false when no
// remaining count can be read.
func ParseRateLimit(rateLimit, policy string, now time.Time) (Quota, bool) {
	if len(rateLimit) > 4096 || len(policy) > 4096 {
		return Quota{}, false
	}
	// Policies: name -> quota; unnamed (flat) policies under "".
	type pol struct {
		name string
		q    int64
	}
	var pols []pol
	forEachMember(policy, func(item string, params []string) {
		p := pol{name: unquote(item), q: -1}
		if n, ok := parseCount(item); ok { // flat: "100;w=60"
			p.name, p.q = "", n
		}
		for _, kv := range params {
			if k, val, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) == "q" {
				if n, ok := parseCount(val); ok {
					p.q = n
				}
			}
		}
		if p.q >= 0 && len(pols) < 16 {
			pols = append(pols, p)
		}
	})
	limitFor := func(name string) int64 {
		for _, p := range pols {
			if p.name == name {
				return p.q
			}
		}
		if len(pols) > 0 && name == "" {
			return pols[0].q
		}
		return 0
	}

	var best Quota
	have := false
	flat := Quota{Source: "RateLimit", Remaining: -1}
	flatLimit := int64(-1)
	forEachMember(rateLimit, func(item string, params []string) {
		if k, val, ok := strings.Cut(item, "="); ok && item[0] != '"' {
			// flat dictionary member: limit=, remaining=, reset=
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "limit":
				if n, ok := parseCount(val); ok {
					flatLimit = n
				}
			case "remaining":
				if n, ok := parseCount(val); ok {
					flat.Remaining = n
				}
			case "reset":
				if d, ok := parseDeltaSeconds(val); ok {
					flat.Reset = now.Add(d)
				}
			}
			return
		}
		q := Quota{Source: "RateLimit", Remaining: -1}
		name := unquote(item)
		for _, kv := range params {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "r":
				if n, ok := parseCount(val); ok {
					q.Remaining = n
				}
			case "t":
				if d, ok := parseDeltaSeconds(val); ok {
					q.Reset = now.Add(d)
				}
			}
		}
		if q.Remaining < 0 {
			return
		}
		if l := limitFor(name); l > 0 {
			q.Limit = l
		}
		if !have || moreRestrictive(q, best) {
			best, have = q, true
		}
	})
	if flat.Remaining >= 0 {
		if flatLimit > 0 {
			flat.Limit = flatLimit
		} else if l := limitFor(""); l > 0 {
			flat.Limit = l
		}
		if !have || moreRestrictive(flat, best) {
			best, have = flat, true
		}
	}
	if !have && rateLimit == "" && len(pols) > 0 {
		// Policy alone: the limit is known, nothing about what remains.
		return Quota{Source: "RateLimit", Limit: pols[0].q, Remaining: pols[0].q}, true
	}
	return best, have
}

// ParseRateLimitFields parses the separate limit / remaining / reset fields:
// X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, or the older
// IETF drafts' RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset. Values
// may carry a policy suffix ("100, 100;w=60"): the first number is used.
// reset is delta seconds, or a Unix time in seconds or milliseconds when it
// is that large (as GitHub sends), or an HTTP-date. It reports false when
// no remaining count can be read.
func ParseRateLimitFields(limit, remaining, reset string, now time.Time) (Quota, bool) {
	q := Quota{Source: "RateLimit"}
	rem, ok := parseCount(firstNumberToken(remaining))
	if !ok {
		return Quota{}, false
	}
	q.Remaining = rem
	if l, ok := parseCount(firstNumberToken(limit)); ok {
		q.Limit = l
	}
	if t, ok := parseResetValue(firstNumberToken(reset), now); ok {
		q.Reset = t
	} else if t, ok := parseHTTPDate(strings.TrimSpace(reset)); ok && t.Sub(now) <= MaxSignalWait && now.Sub(t) <= MaxSignalWait {
		if t.Before(now) {
			t = now // a reset in the past has happened
		}
		q.Reset = t
	}
	return q, true
}

// ParseOpenAIQuota parses OpenAI's request quota headers:
// x-ratelimit-limit-requests, x-ratelimit-remaining-requests and
// x-ratelimit-reset-requests (a Go-style duration such as "1s", "6m0s" or
// "20ms"; plain seconds are accepted too). It reports false when no
// remaining count can be read.
func ParseOpenAIQuota(limit, remaining, reset string, now time.Time) (Quota, bool) {
	rem, ok := parseCount(remaining)
	if !ok {
		return Quota{}, false
	}
	q := Quota{Source: "OpenAI", Remaining: rem}
	if l, ok := parseCount(limit); ok {
		q.Limit = l
	}
	if d, ok := ParseOpenAIReset(reset); ok {
		q.Reset = now.Add(d)
	}
	return q, true
}

// ParseOpenAIReset parses an x-ratelimit-reset-requests value: a duration
// such as "6m0s", "1s", "20ms" or "1h2m3.5s", or plain seconds ("1.5").
// Negative, garbage and waits over MaxSignalWait are rejected.
func ParseOpenAIReset(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 64 {
		return 0, false
	}
	if d, ok := parseDeltaSeconds(v); ok {
		return d, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > MaxSignalWait {
		return 0, false
	}
	return d, true
}

// parseResetValue reads a reset value that is delta seconds or, when large,
// a Unix time in seconds (>= 1e9) or milliseconds (>= 1e12).
func parseResetValue(v string, now time.Time) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	if !decimalNumber(v) {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return time.Time{}, false
	}
	var t time.Time
	switch {
	case f >= 1e12:
		if f > 1e15 {
			return time.Time{}, false
		}
		t = time.UnixMilli(int64(f))
	case f >= 1e9:
		t = time.Unix(int64(f), int64((f-math.Trunc(f))*1e9))
	default:
		if f > MaxSignalWait.Seconds() {
			return time.Time{}, false
		}
		return now.Add(time.Duration(f * float64(time.Second))), true
	}
	if t.Sub(now) > MaxSignalWait || now.Sub(t) > MaxSignalWait {
		return time.Time{}, false
	}
	if t.Before(now) {
		t = now
	}
	return t, true
}

// decimalNumber reports whether v looks like a decimal number (no hex,
// underscores, Inf or NaN).
func decimalNumber(v string) bool {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E', c == '+', c == '-':
		default:
			return false
		}
	}
	return true
}

// parseDeltaSeconds parses non-negative (possibly decimal) seconds.
func parseDeltaSeconds(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 32 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < '0' || c > '9') && c != '.' {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > MaxSignalWait.Seconds() {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

// parseCount parses a non-negative integer quota value.
func parseCount(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxQuotaValue {
		return 0, false
	}
	return n, true
}

// firstNumberToken returns v up to the first ',' or ';'.
func firstNumberToken(v string) string {
	if i := strings.IndexAny(v, ",;"); i >= 0 {
		return v[:i]
	}
	return v
}

// forEachMember walks a structured-field list (or a flat dictionary):
// members separated by commas, each an item followed by ";"-separated
// parameters. Commas and semicolons inside quoted strings are respected.
// At most 32 members are visited.
func forEachMember(v string, fn func(item string, params []string)) {
	if strings.TrimSpace(v) == "" {
		return
	}
	var parts [16]string
	for n := 0; v != "" && n < 32; n++ {
		member, rest := splitTop(v, ',')
		v = rest
		params := parts[:0]
		item, prest := splitTop(member, ';')
		for prest != "" && len(params) < cap(parts) {
			var p string
			p, prest = splitTop(prest, ';')
			if p = strings.TrimSpace(p); p != "" {
				params = append(params, p)
			}
		}
		item = strings.TrimSpace(item)
		if item != "" {
			fn(item, params)
		}
	}
}

// splitTop splits v at the first sep outside a quoted string.
func splitTop(v string, sep byte) (string, string) {
	inQuote := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == sep && !inQuote:
			return v[:i], v[i+1:]
		}
	}
	return v, ""
}

// unquote strips the quotes of a structured-field string (or returns a
// token as is).
func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `\"`, `"`)
	}
	return s
}
