package ezthrottle

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"unicode/utf8"
)

// TokenCost is what one request costs against an LLM API's budgets.
type TokenCost struct {
	// Model is the model the request addresses ("" when none): budgets are
	// kept per model.
	Model string
	// Input is the estimated input tokens, Output the requested maximum
	// output tokens. Both count against a tokens budget.
	Input, Output int64
}

// Tokens returns the input plus the output tokens.
func (c TokenCost) Tokens() int64 { return c.Input + c.Output }

// of returns the cost against one budget kind.
func (c TokenCost) of(k BudgetKind) int64 {
	switch k {
	case BudgetRequests:
		return 1
	case BudgetTokens:
		return c.Input + c.Output
	case BudgetInputTokens:
		return c.Input
	case BudgetOutputTokens:
		return c.Output
	}
	return 0
}

// CostFunc supplies the cost of a request to an LLM host, for APIs whose
// bodies EstimateCost does not understand. body is the request body
// (possibly only its first MaxCostBody bytes when complete is false); it
// must not be retained or modified. Returning false falls back to
// EstimateCost.
type CostFunc func(req *http.Request, body []byte, complete bool) (TokenCost, bool)

// MaxCostBody bounds how much of a request body is read to estimate its
// cost. The rest of a larger body is counted from its Content-Length (or not
// at all when unknown), without being read ahead.
const MaxCostBody = 1 << 20

// inputFields are the request fields whose text the providers count as
// input: chat messages, the Responses API's input and instructions, legacy
// prompts, embeddings' input, Anthropic's system prompt, and tool
// definitions.
var inputFields = [...]string{"messages", "input", "prompt", "system", "instructions", "tools"}

// outputFields are the fields that request a maximum output, in the order
// they are looked up.
var outputFields = [...]string{"max_tokens", "max_completion_tokens", "max_output_tokens"}

// EstimateCost estimates a JSON LLM request's cost the way the providers
// describe their own rate limiters: input tokens are the characters of the
// input fields (messages, input, prompt, system, instructions, tools)
// divided by 4, rounded up; output tokens are the requested maximum
// (max_tokens, max_completion_tokens or max_output_tokens; 0 when absent).
// It works for OpenAI chat/completions, completions, responses and
// embeddings and for Anthropic messages. It reports false when body is not
// a JSON object.
func EstimateCost(body []byte) (TokenCost, bool) {
	var v map[string]json.RawMessage
	if err := json.Unmarshal(body, &v); err != nil {
		return TokenCost{}, false
	}
	var c TokenCost
	if m, ok := v["model"]; ok {
		var s string
		if json.Unmarshal(m, &s) == nil && len(s) <= 256 {
			c.Model = s
		}
	}
	chars := int64(0)
	for _, k := range inputFields {
		if raw, ok := v[k]; ok {
			chars += textChars(raw)
		}
	}
	c.Input = (chars + 3) / 4
	for _, k := range outputFields {
		if raw, ok := v[k]; ok {
			var n int64
			if json.Unmarshal(raw, &n) == nil && n > 0 {
				c.Output = n
			}
			break
		}
	}
	return c, true
}

// textChars counts the characters of the strings in a JSON value, object
// keys excluded, without building the value.
func textChars(raw json.RawMessage) int64 {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct{ object, wantKey bool }
	var stack []frame
	var n int64
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if l := len(stack); l > 0 && stack[l-1].object {
			if stack[l-1].wantKey {
				stack[l-1].wantKey = false // this token is a key
				continue
			}
			stack[l-1].wantKey = true // a value: a key comes next
		}
		switch x := tok.(type) {
		case json.Delim:
			stack = append(stack, frame{object: x == '{', wantKey: x == '{'})
		case string:
			n += int64(utf8.RuneCountInString(x))
		}
	}
}

// peekBody returns req's body bytes (at most MaxCostBody) without consuming
// the body the base transport will send: from GetBody when the request has
// it, otherwise by reading the head of the body and handing back a request
// (a shallow copy) whose body yields the same bytes followed by the rest.
// complete reports whether body is the whole body.
func peekBody(req *http.Request) (out *http.Request, body []byte, complete bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil, true
	}
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return req, nil, false
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, MaxCostBody+1))
		if err != nil {
			return req, nil, false
		}
		if len(b) > MaxCostBody {
			return req, b[:MaxCostBody], false
		}
		return req, b, true
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, MaxCostBody+1))
	r2 := *req
	r2.Body = &peekedBody{head: bytes.NewReader(b), rest: req.Body, err: err}
	if err != nil {
		return &r2, nil, false
	}
	if len(b) > MaxCostBody {
		return &r2, b[:MaxCostBody], false
	}
	whole := b
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(whole)), nil }
	return &r2, b, true
}

// peekedBody yields the bytes read ahead, then the rest of the original
// body (or the error that stopped the read ahead); Close closes the
// original.
type peekedBody struct {
	head *bytes.Reader
	rest io.ReadCloser
	err  error
}

func (p *peekedBody) Read(b []byte) (int, error) {
	if p.head.Len() > 0 {
		return p.head.Read(b)
	}
	if p.err != nil {
		return 0, p.err
	}
	return p.rest.Read(b)
}

func (p *peekedBody) Close() error { return p.rest.Close() }
