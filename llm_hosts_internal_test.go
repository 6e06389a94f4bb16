package ezthrottle

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBudgetStateOnlyForHostsWithBudgets: with token budgets configured
// for one host and learned from another, calls to thousands of other hosts
// leave nothing behind in the budget table (before, each left an entry for
// good), and a host looked up once as having no budgets is charged as soon
// as it announces some.
func TestBudgetStateOnlyForHostsWithBudgets(t *testing.T) {
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		h := http.Header{}
		if r.URL.Host == "llm.test" {
			h.Set("X-Ratelimit-Limit-Requests", "1000")
			h.Set("X-Ratelimit-Remaining-Requests", "999")
			h.Set("X-Ratelimit-Limit-Tokens", "100000")
			h.Set("X-Ratelimit-Remaining-Tokens", "99000")
			h.Set("X-Ratelimit-Reset-Tokens", "1s")
		}
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return &http.Response{StatusCode: http.StatusOK, Header: h, Body: http.NoBody, Request: r}, nil
	})
	tr, err := New(WithBase(base), WithDefaultLimit(Limit{Rate: math.Inf(1)}),
		WithTokenBudget("configured.test", "", TokenBudget{TokensPerMinute: 100000}))
	require.NoError(t, err)
	send := func(method, rawURL string) {
		var body *strings.Reader
		if method == http.MethodPost {
			body = strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10}`)
		}
		var req *http.Request
		if body != nil {
			req, err = http.NewRequest(method, rawURL, body)
		} else {
			req, err = http.NewRequest(method, rawURL, nil)
		}
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
	}
	entries := func() int {
		n := 0
		tr.llm.hosts.Range(func(any, any) bool { n++; return true })
		return n
	}
	for i := range 5000 {
		send(http.MethodGet, fmt.Sprintf("https://h%d.test/", i))
	}
	assert.Zero(t, entries(), "hosts without budgets leave nothing")

	llm := tr.hostFor(&url.URL{Scheme: "https", Host: "llm.test"})
	send(http.MethodPost, "https://llm.test/v1/chat/completions") // no budgets known yet
	require.True(t, tr.llm.on.Load(), "budgets learned")
	require.NotNil(t, tr.budgetHost(llm), "a host looked up before it announced budgets has them now")
	send(http.MethodPost, "https://llm.test/v1/chat/completions")
	lh := tr.budgetHost(llm)
	lh.mu.Lock()
	charged := lh.learned["m"] != nil && lh.learned["m"].nextSeq > 0
	lh.mu.Unlock()
	assert.True(t, charged, "the second request was charged")

	send(http.MethodGet, "https://configured.test/")
	assert.NotNil(t, tr.budgetHost(tr.hostFor(&url.URL{Scheme: "https", Host: "configured.test"})))
	for i := range 5000 {
		send(http.MethodGet, fmt.Sprintf("https://h%d.test/", i))
	}
	assert.Equal(t, 2, entries())
}

// roundTripFunc is a RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
