// Package llmsim is a simulated LLM API for tests, benchmarks and examples:
// an http.Handler that answers OpenAI-style and Anthropic-style requests and
// enforces per-model limits on requests per minute and tokens per minute
// exactly as those providers describe them, with their real rate-limit
// header sets.
//
// Endpoints (POST, JSON bodies):
//
//	/v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings
//	    OpenAI style: x-ratelimit-{limit,remaining,reset}-{requests,tokens},
//	    resets as Go-style durations ("6m0s", "120ms").
//	/v1/messages
//	    Anthropic style: anthropic-ratelimit-{requests,tokens,input-tokens,
//	    output-tokens}-{limit,remaining,reset}, resets as RFC 3339 times.
//
// Every limit is a continuously refilled bucket: a model with a limit of N
// per minute holds at most N and regains N/60 each second. A request costs
// one request and, in tokens, its input (about 4 characters a token, the
// providers' own rule of thumb) plus its requested maximum output
// (max_tokens, max_completion_tokens or max_output_tokens), charged when it
// is admitted, as both providers do. A request that does not fit is answered
// 429 with a Retry-After header and charged nothing. The clock is injectable
// (WithClock), so tests are deterministic.
package llmsim

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Limits are one model's per-minute limits. A zero field means no limit of
// that kind.
type Limits struct {
	// RPM is requests per minute.
	RPM int
	// TPM is tokens (input plus output) per minute.
	TPM int
	// InputTPM and OutputTPM are Anthropic's separate input and output
	// token limits (used by /v1/messages only).
	InputTPM  int
	OutputTPM int
}

// Stats counts what the server saw, in total and per model.
type Stats struct {
	Requests int // requests answered (any status)
	Admitted int // requests answered 200
	Limited  int // requests answered 429
	Tokens   int64
	PerModel map[string]ModelStats
}

// ModelStats counts one model's requests.
type ModelStats struct {
	Admitted int
	Limited  int
	Tokens   int64
}

// Option configures a Server.
type Option func(*Server)

// WithModel sets one model's limits.
func WithModel(name string, l Limits) Option {
	return func(s *Server) { s.limits[name] = l }
}

// WithDefaultLimits sets the limits of every model not named by WithModel
// (default: no limits).
func WithDefaultLimits(l Limits) Option { return func(s *Server) { s.def = l } }

// WithClock sets the time source (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithLatency delays every admitted answer by d (default none).
func WithLatency(d time.Duration) Option { return func(s *Server) { s.latency = d } }

// WithMaxBody bounds the request bodies read (default 4 MiB); a larger body
// is answered 413.
func WithMaxBody(n int64) Option { return func(s *Server) { s.maxBody = n } }

// Server is the simulated API. It is safe for concurrent use.
type Server struct {
	limits  map[string]Limits
	def     Limits
	now     func() time.Time
	latency time.Duration
	maxBody int64

	mu      sync.Mutex
	buckets map[string]*bucket // model + "\x00" + kind
	stats   Stats
}

// New returns a Server.
func New(opts ...Option) *Server {
	s := &Server{
		limits:  map[string]Limits{},
		now:     time.Now,
		maxBody: 4 << 20,
		buckets: map[string]*bucket{},
		stats:   Stats{PerModel: map[string]ModelStats{}},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.PerModel = make(map[string]ModelStats, len(s.stats.PerModel))
	for k, v := range s.stats.PerModel {
		st.PerModel[k] = v
	}
	return st
}

// bucket is a continuously refilled bucket of capacity limit, refilled at
// limit per minute.
type bucket struct {
	limit float64
	avail float64
	at    time.Time
}

func (b *bucket) refill(now time.Time) {
	if dt := now.Sub(b.at); dt > 0 {
		b.avail = math.Min(b.limit, b.avail+b.limit*dt.Seconds()/60)
		b.at = now
	}
}

// untilFull is how long the bucket needs to be full again.
func (b *bucket) untilFull() time.Duration {
	return seconds((b.limit - b.avail) * 60 / b.limit)
}

// until is how long the bucket needs to hold n.
func (b *bucket) until(n float64) time.Duration {
	if b.avail >= n {
		return 0
	}
	return seconds((n - b.avail) * 60 / b.limit)
}

func seconds(s float64) time.Duration { return time.Duration(math.Ceil(s * 1e9)) }

// Request is what the server reads of a request body.
type Request struct {
	Model string
	// Input is the estimated input tokens, Output the requested maximum
	// output tokens.
	Input, Output int
}

// Cost estimates a request's tokens the way the providers' documentation
// describes it: the characters of the body's input fields divided by 4,
// rounded up, plus the requested maximum output.
func Cost(body []byte) (Request, error) {
	var v map[string]json.RawMessage
	if err := json.Unmarshal(body, &v); err != nil {
		return Request{}, err
	}
	var r Request
	if m, ok := v["model"]; ok {
		if err := json.Unmarshal(m, &r.Model); err != nil {
			return Request{}, fmt.Errorf("model: %w", err)
		}
	}
	chars := 0
	for _, k := range []string{"messages", "input", "prompt", "system", "instructions", "tools"} {
		if raw, ok := v[k]; ok {
			chars += textChars(raw)
		}
	}
	r.Input = (chars + 3) / 4
	for _, k := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
		if raw, ok := v[k]; ok {
			var n int
			if err := json.Unmarshal(raw, &n); err != nil || n < 0 {
				return Request{}, fmt.Errorf("%s: not a count", k)
			}
			r.Output = n
			break
		}
	}
	return r, nil
}

// textChars counts the characters of the strings in a JSON value.
func textChars(raw json.RawMessage) int {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return len(raw)
	}
	n := 0
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			n += len([]rune(x))
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return n
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	anthropic := false
	switch r.URL.Path {
	case "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings":
	case "/v1/messages":
		anthropic = true
	default:
		http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, `{"error":{"message":"method not allowed"}}`, http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.maxBody+1))
	if err != nil {
		http.Error(w, `{"error":{"message":"read error"}}`, http.StatusBadRequest)
		return
	}
	if int64(len(body)) > s.maxBody {
		http.Error(w, `{"error":{"message":"request too large"}}`, http.StatusRequestEntityTooLarge)
		return
	}
	req, err := Cost(body)
	if err != nil || req.Model == "" {
		http.Error(w, `{"error":{"message":"invalid request: a JSON body with a model is required"}}`, http.StatusBadRequest)
		return
	}
	ok, wait := s.admit(w.Header(), req, anthropic)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprintf(w, `{"error":{"type":"rate_limit_error","message":"Rate limit reached for %s"}}`, jsonEscape(req.Model))
		return
	}
	if s.latency > 0 {
		select {
		case <-time.After(s.latency):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if anthropic {
		fmt.Fprintf(w, `{"type":"message","role":"assistant","model":%s,"content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":%d,"output_tokens":%d}}`,
			jsonEscape(req.Model), req.Input, req.Output)
		return
	}
	fmt.Fprintf(w, `{"object":"chat.completion","model":%s,"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
		jsonEscape(req.Model), req.Input, req.Output, req.Input+req.Output)
}

func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

type charge struct {
	kind string // requests, tokens, input-tokens, output-tokens
	lim  int
	n    float64
}

// admit charges the request against the model's buckets when all of them
// hold it, and sets the rate-limit headers.
func (s *Server) admit(h http.Header, req Request, anthropic bool) (bool, time.Duration) {
	l, ok := s.limits[req.Model]
	if !ok {
		l = s.def
	}
	charges := []charge{{"requests", l.RPM, 1}, {"tokens", l.TPM, float64(req.Input + req.Output)}}
	if anthropic {
		charges = append(charges, charge{"input-tokens", l.InputTPM, float64(req.Input)}, charge{"output-tokens", l.OutputTPM, float64(req.Output)})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	bs := make([]*bucket, len(charges))
	var wait time.Duration
	for i, c := range charges {
		if c.lim <= 0 {
			continue
		}
		key := req.Model + "\x00" + c.kind
		b := s.buckets[key]
		if b == nil || b.limit != float64(c.lim) {
			b = &bucket{limit: float64(c.lim), avail: float64(c.lim), at: now}
			s.buckets[key] = b
		}
		b.refill(now)
		bs[i] = b
		if c.n > b.limit {
			wait = max(wait, time.Minute) // can never fit
		} else if d := b.until(c.n); d > wait {
			wait = d
		}
	}
	admitted := wait == 0
	if admitted {
		for i, c := range charges {
			if bs[i] != nil {
				bs[i].avail -= c.n
			}
		}
	}
	for i, c := range charges {
		b := bs[i]
		if b == nil {
			continue
		}
		rem := int64(math.Floor(b.avail))
		if anthropic {
			p := "Anthropic-Ratelimit-" + c.kind
			h.Set(p+"-Limit", strconv.Itoa(c.lim))
			h.Set(p+"-Remaining", strconv.FormatInt(rem, 10))
			h.Set(p+"-Reset", now.Add(b.untilFull()).UTC().Format(time.RFC3339))
		} else {
			h.Set("X-Ratelimit-Limit-"+c.kind, strconv.Itoa(c.lim))
			h.Set("X-Ratelimit-Remaining-"+c.kind, strconv.FormatInt(rem, 10))
			h.Set("X-Ratelimit-Reset-"+c.kind, formatReset(b.untilFull()))
		}
	}
	s.stats.Requests++
	ms := s.stats.PerModel[req.Model]
	if admitted {
		s.stats.Admitted++
		s.stats.Tokens += int64(req.Input + req.Output)
		ms.Admitted++
		ms.Tokens += int64(req.Input + req.Output)
	} else {
		s.stats.Limited++
		ms.Limited++
	}
	s.stats.PerModel[req.Model] = ms
	return admitted, wait
}

// formatReset formats a reset as OpenAI does: "6m0s", "1s", "120ms".
func formatReset(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(time.Millisecond)
	} else {
		d = d.Round(time.Millisecond)
		if d == 0 {
			return "0s"
		}
	}
	return d.String()
}
