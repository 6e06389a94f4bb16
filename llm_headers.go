package ezthrottle

import (
	"net/http"
	"strings"
	"time"
)

// BudgetKind names what a token budget counts.
type BudgetKind uint8

// The budget kinds announced by LLM APIs.
const (
	// BudgetRequests counts requests (OpenAI's x-ratelimit-*-requests,
	// Anthropic's anthropic-ratelimit-requests-*).
	BudgetRequests BudgetKind = iota
	// BudgetTokens counts input plus output tokens (x-ratelimit-*-tokens,
	// anthropic-ratelimit-tokens-*).
	BudgetTokens
	// BudgetInputTokens counts input tokens
	// (anthropic-ratelimit-input-tokens-*).
	BudgetInputTokens
	// BudgetOutputTokens counts output tokens
	// (anthropic-ratelimit-output-tokens-*).
	BudgetOutputTokens
	numBudgetKinds
)

// String returns the kind's name as it appears in the headers.
func (k BudgetKind) String() string {
	switch k {
	case BudgetRequests:
		return "requests"
	case BudgetTokens:
		return "tokens"
	case BudgetInputTokens:
		return "input-tokens"
	case BudgetOutputTokens:
		return "output-tokens"
	}
	return "unknown"
}

// BudgetSignal is one budget announced by a response of an LLM API.
type BudgetSignal struct {
	Kind BudgetKind
	// Limit is the budget's size per window (0: not announced; Azure OpenAI
	// sends only the remaining count).
	Limit int64
	// Remaining is what is left now; valid when HasRemaining.
	Remaining    int64
	HasRemaining bool
	// Reset is when the budget is full again (zero: not announced).
	Reset time.Time
	// Source is "OpenAI" or "Anthropic".
	Source string
}

// ParseBudgets reads the token and request budgets of an LLM API's
// response: OpenAI's (and Azure OpenAI's, and most gateways')
// x-ratelimit-{limit,remaining,reset}-{requests,tokens}, resets as
// durations ("6m0s", "120ms"), and Anthropic's
// anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
// {limit,remaining,reset}, resets as RFC 3339 times. Garbage values are
// ignored; a budget with neither a limit nor a remaining count is left out.
// now is the reference time for relative resets. The result has at most one
// signal per kind and source.
func ParseBudgets(h http.Header, now time.Time) []BudgetSignal {
	var out []BudgetSignal
	for _, kind := range []BudgetKind{BudgetRequests, BudgetTokens} {
		suffix := "-" + kind.String()
		if b, ok := budgetFrom(h.Get("X-Ratelimit-Limit"+suffix), h.Get("X-Ratelimit-Remaining"+suffix),
			h.Get("X-Ratelimit-Reset"+suffix), now, false); ok {
			b.Kind, b.Source = kind, "OpenAI"
			out = append(out, b)
		}
	}
	for kind := BudgetRequests; kind < numBudgetKinds; kind++ {
		p := "Anthropic-Ratelimit-" + kind.String()
		if b, ok := budgetFrom(h.Get(p+"-Limit"), h.Get(p+"-Remaining"), h.Get(p+"-Reset"), now, true); ok {
			b.Kind, b.Source = kind, "Anthropic"
			out = append(out, b)
		}
	}
	return out
}

func budgetFrom(limit, remaining, reset string, now time.Time, rfc3339 bool) (BudgetSignal, bool) {
	var b BudgetSignal
	if l, ok := parseCount(limit); ok && l > 0 {
		b.Limit = l
	}
	if r, ok := parseCount(remaining); ok {
		b.Remaining, b.HasRemaining = r, true
		if b.Limit > 0 && b.Remaining > b.Limit {
			b.Remaining = b.Limit
		}
	}
	if b.Limit == 0 && !b.HasRemaining {
		return BudgetSignal{}, false
	}
	if reset = strings.TrimSpace(reset); reset != "" {
		if rfc3339 {
			if len(reset) <= 64 {
				if t, err := time.Parse(time.RFC3339, reset); err == nil && !t.Before(now) && t.Sub(now) <= MaxSignalWait {
					b.Reset = t
				} else if err == nil && t.Before(now) {
					b.Reset = now
				}
			}
		} else if d, ok := ParseOpenAIReset(reset); ok {
			b.Reset = now.Add(d)
		}
	}
	return b, true
}

// isBudgetHeader reports whether the header named k is an LLM budget header
// that ParseSignals does not read (OpenAI's token counts, or any of
// Anthropic's budgets).
func isBudgetHeader(k string) bool {
	switch len(k) {
	case 24:
		return strings.EqualFold(k, "X-Ratelimit-Limit-Tokens") || strings.EqualFold(k, "X-Ratelimit-Reset-Tokens")
	case 28:
		return strings.EqualFold(k, "X-Ratelimit-Remaining-Tokens")
	}
	return len(k) > 20 && strings.EqualFold(k[:20], "Anthropic-Ratelimit-")
}
