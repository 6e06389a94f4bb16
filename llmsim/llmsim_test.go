package llmsim

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func post(t *testing.T, h http.Handler, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	return rec
}

func TestOpenAITokensPerMinute(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := New(WithModel("m", Limits{RPM: 100, TPM: 1000}), WithClock(clk.Now))
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 396) + `"}],"max_tokens":150}` // 400 chars: 100 + 150
	for i := 0; i < 4; i++ {
		rec := post(t, s, "/v1/chat/completions", body)
		require.Equal(t, http.StatusOK, rec.Code, i)
		assert.Equal(t, "1000", rec.Header().Get("X-Ratelimit-Limit-Tokens"))
		assert.Equal(t, []string{"750", "500", "250", "0"}[i], rec.Header().Get("X-Ratelimit-Remaining-Tokens"))
		assert.Equal(t, "100", rec.Header().Get("X-Ratelimit-Limit-Requests"))
	}
	assert.Empty(t, post(t, s, "/v1/chat/completions", `{"model":"other"}`).Header().Get("X-Ratelimit-Limit-Tokens")) // other model: unlimited
	rec := post(t, s, "/v1/chat/completions", body)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "15", rec.Header().Get("Retry-After")) // 250 tokens at 1000/min
	assert.Equal(t, "1m0s", rec.Header().Get("X-Ratelimit-Reset-Tokens"))
	clk.Add(15 * time.Second)
	require.Equal(t, http.StatusOK, post(t, s, "/v1/chat/completions", body).Code)
	st := s.Stats()
	assert.Equal(t, 5, st.PerModel["m"].Admitted)
	assert.Equal(t, 1, st.PerModel["m"].Limited)
	assert.Equal(t, int64(1250), st.PerModel["m"].Tokens)
}

func TestAnthropicHeaders(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := New(WithDefaultLimits(Limits{RPM: 60, TPM: 6000, InputTPM: 4000, OutputTPM: 2000}), WithClock(clk.Now))
	rec := post(t, s, "/v1/messages", `{"model":"claude","max_tokens":1000,"messages":[{"role":"user","content":"`+strings.Repeat("b", 396)+`"}]}`)
	require.Equal(t, http.StatusOK, rec.Code)
	h := rec.Header()
	assert.Equal(t, "59", h.Get("Anthropic-Ratelimit-Requests-Remaining"))
	assert.Equal(t, "4900", h.Get("Anthropic-Ratelimit-Tokens-Remaining"))
	assert.Equal(t, "3900", h.Get("Anthropic-Ratelimit-Input-Tokens-Remaining"))
	assert.Equal(t, "1000", h.Get("Anthropic-Ratelimit-Output-Tokens-Remaining"))
	assert.Equal(t, "2026-01-01T00:00:30Z", h.Get("Anthropic-Ratelimit-Output-Tokens-Reset"))
	assert.Empty(t, h.Get("X-Ratelimit-Limit-Tokens"))
	rec = post(t, s, "/v1/messages", `{"model":"claude","max_tokens":1001,"messages":[]}`)
	assert.Equal(t, http.StatusTooManyRequests, rec.Code) // output budget holds 1000
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
}

func TestRejects(t *testing.T) {
	s := New(WithMaxBody(64))
	assert.Equal(t, http.StatusNotFound, post(t, s, "/v2/x", `{}`).Code)
	assert.Equal(t, http.StatusBadRequest, post(t, s, "/v1/embeddings", `{"input":"x"}`).Code)
	assert.Equal(t, http.StatusBadRequest, post(t, s, "/v1/embeddings", `nope`).Code)
	assert.Equal(t, http.StatusRequestEntityTooLarge, post(t, s, "/v1/embeddings", `{"model":"`+strings.Repeat("x", 100)+`"}`).Code)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/embeddings", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
}
