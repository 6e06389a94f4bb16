package ezthrottle

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseBudgets(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		h    map[string]string
		want []BudgetSignal
	}{
		{"none", map[string]string{"Content-Type": "application/json"}, nil},
		{"openai", map[string]string{
			"x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "4999", "x-ratelimit-reset-requests": "12ms",
			"x-ratelimit-limit-tokens": "160000", "x-ratelimit-remaining-tokens": "159000", "x-ratelimit-reset-tokens": "6m0s",
		}, []BudgetSignal{
			{Kind: BudgetRequests, Limit: 5000, Remaining: 4999, HasRemaining: true, Reset: now.Add(12 * time.Millisecond), Source: "OpenAI"},
			{Kind: BudgetTokens, Limit: 160000, Remaining: 159000, HasRemaining: true, Reset: now.Add(6 * time.Minute), Source: "OpenAI"},
		}},
		{"azure: remaining only", map[string]string{"x-ratelimit-remaining-tokens": "120"},
			[]BudgetSignal{{Kind: BudgetTokens, Remaining: 120, HasRemaining: true, Source: "OpenAI"}}},
		{"anthropic", map[string]string{
			"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
			"anthropic-ratelimit-requests-reset":      "2026-12-05T12:00:02Z",
			"anthropic-ratelimit-input-tokens-limit":  "40000",
			"anthropic-ratelimit-output-tokens-limit": "8000", "anthropic-ratelimit-output-tokens-remaining": "7000",
			"anthropic-ratelimit-output-tokens-reset": "2026-12-05T11:00:00Z", // past: now
		}, []BudgetSignal{
			{Kind: BudgetRequests, Limit: 50, Remaining: 49, HasRemaining: true, Reset: now.Add(2 * time.Second), Source: "Anthropic"},
			{Kind: BudgetInputTokens, Limit: 40000, Source: "Anthropic"},
			{Kind: BudgetOutputTokens, Limit: 8000, Remaining: 7000, HasRemaining: true, Reset: now, Source: "Anthropic"},
		}},
		{"garbage ignored", map[string]string{
			"x-ratelimit-limit-tokens": "-5", "x-ratelimit-remaining-tokens": "lots", "x-ratelimit-reset-tokens": "soon",
			"anthropic-ratelimit-tokens-limit": "1e99", "anthropic-ratelimit-tokens-reset": "yesterday",
		}, nil},
		{"remaining above limit clamps", map[string]string{"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "500"},
			[]BudgetSignal{{Kind: BudgetTokens, Limit: 100, Remaining: 100, HasRemaining: true, Source: "OpenAI"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.h {
				h.Set(k, v)
			}
			assert.Equal(t, tt.want, ParseBudgets(h, now))
		})
	}
}

func TestIsBudgetHeader(t *testing.T) {
	for k, want := range map[string]bool{
		"X-Ratelimit-Limit-Tokens": true, "x-ratelimit-reset-tokens": true, "X-RATELIMIT-REMAINING-TOKENS": true,
		"Anthropic-Ratelimit-Tokens-Limit": true, "anthropic-ratelimit-requests-reset": true,
		"Anthropic-Ratelimit-": false, "X-Ratelimit-Limit-Requests": false, "Content-Length": false,
	} {
		assert.Equal(t, want, isBudgetHeader(k), k)
	}
}

func TestEstimateCost(t *testing.T) {
	tests := []struct {
		name string
		body string
		want TokenCost
		ok   bool
	}{
		{"chat", `{"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":100}`,
			TokenCost{Model: "gpt-4o", Input: 3, Output: 100}, true}, // "user"+"abcdefgh" = 12 chars
		{"max_completion_tokens", `{"model":"o1","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":50}`,
			TokenCost{Model: "o1", Input: 2, Output: 50}, true},
		{"responses", `{"model":"gpt-4.1","input":"12345678","instructions":"abcd","max_output_tokens":7}`,
			TokenCost{Model: "gpt-4.1", Input: 3, Output: 7}, true},
		{"embeddings array", `{"model":"text-embedding-3-small","input":["aaaa","bbbb"]}`,
			TokenCost{Model: "text-embedding-3-small", Input: 2}, true},
		{"anthropic", `{"model":"claude-x","system":"abcd","messages":[{"role":"user","content":[{"type":"text","text":"éééé"}]}],"max_tokens":1024}`,
			TokenCost{Model: "claude-x", Input: 4, Output: 1024}, true}, // abcd + user + text + éééé = 16 chars
		{"keys not counted", `{"model":"m","messages":[{"a_very_long_key_name_here":"x"}]}`, TokenCost{Model: "m", Input: 1}, true},
		{"no model", `{"prompt":"abcd"}`, TokenCost{Input: 1}, true},
		{"not json", `hello`, TokenCost{}, false},
		{"array", `[1,2]`, TokenCost{}, false},
		{"bad max", `{"model":"m","max_tokens":"lots"}`, TokenCost{Model: "m"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := EstimateCost([]byte(tt.body))
			require.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

func FuzzParseBudgets(f *testing.F) {
	f.Add("5000", "4999", "6m0s", "2026-12-05T12:00:02Z")
	f.Add("", "x", "-1s", "garbage")
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, limit, rem, reset, rfc string) {
		h := http.Header{}
		h.Set("x-ratelimit-limit-tokens", limit)
		h.Set("x-ratelimit-remaining-tokens", rem)
		h.Set("x-ratelimit-reset-tokens", reset)
		h.Set("anthropic-ratelimit-tokens-limit", limit)
		h.Set("anthropic-ratelimit-tokens-remaining", rem)
		h.Set("anthropic-ratelimit-tokens-reset", rfc)
		for _, b := range ParseBudgets(h, now) {
			if b.Limit < 0 || b.Remaining < 0 || (b.Limit > 0 && b.Remaining > b.Limit) {
				t.Fatalf("bad budget %+v", b)
			}
			if !b.Reset.IsZero() && (b.Reset.Before(now) || b.Reset.Sub(now) > MaxSignalWait) {
				t.Fatalf("reset out of range %+v", b)
			}
		}
	})
}

func FuzzEstimateCost(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":100}`))
	f.Add([]byte(`{"model":"m","input":[[[[]]]],"max_output_tokens":-1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, ok := EstimateCost(body)
		if !ok {
			return
		}
		if c.Input < 0 || c.Output < 0 || c.Input > int64(len(body)) {
			t.Fatalf("bad cost %+v for %d bytes", c, len(body))
		}
	})
}
