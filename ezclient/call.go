package ezclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// reply is an engine reply, after unwrapping the Cloud proxy envelope.
type reply struct {
	status int
	header http.Header // only for self-hosted; the proxy's copy is unreliable
	body   []byte
}

// proxyEnvelope is the request body of POST {proxy}/api/v1/proxy.
type proxyEnvelope struct {
	Scope      string            `json:"scope"`
	MetricName string            `json:"metric_name"`
	TargetURL  string            `json:"target_url"`
	Method     string            `json:"method"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
}

// proxyReply is the proxy's answer, for every status.
type proxyReply struct {
	Status            string          `json:"status"`
	Error             string          `json:"error"`
	Message           string          `json:"message"`
	RetryAfter        json.Number     `json:"retry_after"`
	RetryAfterSeconds json.Number     `json:"retry_after_seconds"`
	RetryAt           json.RawMessage `json:"retry_at"`
	ForwardedResponse *struct {
		StatusCode int             `json:"status_code"`
		Headers    json.RawMessage `json:"headers"`
		Body       json.RawMessage `json:"body"`
	} `json:"forwarded_response"`
}

// call performs one logical engine call with retries of transient failures.
// path is relative to the engine URL, e.g. "/api/v1/jobs" or "/jobs".
func (c *Client) call(ctx context.Context, method, path string, body []byte) (reply, error) {
	var lastErr error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			if lastErr != nil {
				return reply{}, errors.Join(err, lastErr)
			}
			return reply{}, err
		}
		r, err := c.callOnce(ctx, method, path, body)
		if err == nil {
			return r, nil
		}
		if !c.retryable(ctx, err) || attempt >= c.maxAttempts {
			return reply{}, err
		}
		lastErr = err
		wait := c.backoff(attempt)
		if dl, ok := ctx.Deadline(); ok && c.now().Add(wait).After(dl) {
			// The wait cannot finish before the deadline: do not start it.
			return reply{}, err
		}
		c.logger.LogAttrs(ctx, slog.LevelWarn, "ezthrottle: engine call failed, retrying",
			slog.String("method", method), slog.String("path", path),
			slog.Int("attempt", attempt), slog.Duration("backoff", wait), slog.String("error", err.Error()))
		if serr := c.sleep(ctx, wait); serr != nil {
			return reply{}, errors.Join(serr, err)
		}
	}
}

// retryable reports whether err is a transient failure worth retrying.
func (c *Client) retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var ee *EngineError
	if errors.As(err, &ee) {
		return ee.StatusCode >= 500
	}
	var ne *networkError
	return errors.As(err, &ne)
}

// networkError marks a failure to reach the proxy or engine at all.
type networkError struct{ err error }

func (e *networkError) Error() string { return "ezthrottle: engine unreachable: " + e.err.Error() }
func (e *networkError) Unwrap() error { return e.err }

// IsUnreachable reports whether err means the proxy or engine could not be
// reached at all (connection refused, DNS failure, timeout, reset), as
// opposed to an answer such as a 4xx or a rate limit. A proxy 502 ("engine
// unreachable behind the proxy") counts as unreachable too.
func IsUnreachable(err error) bool {
	var ne *networkError
	if errors.As(err, &ne) {
		return true
	}
	var ee *EngineError
	return errors.As(err, &ee) && ee.Proxy && ee.StatusCode == http.StatusBadGateway
}

func (c *Client) callOnce(ctx context.Context, method, path string, body []byte) (reply, error) {
	if c.dialect == DialectCloud {
		return c.callCloud(ctx, method, path, body)
	}
	return c.callDirect(ctx, method, path, body)
}

func (c *Client) newRequest(ctx context.Context, method, url string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range c.headers {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (c *Client) do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, fmt.Errorf("ezthrottle: %s %s: %w", req.Method, req.URL.Redacted(), ctxErr)
		}
		return nil, nil, &networkError{err: errors.New(c.scrub(err.Error()))}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBody+1))
	drainClose(resp.Body)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, ctxErr
		}
		return nil, nil, &networkError{err: err}
	}
	if len(b) > maxReplyBody {
		return nil, nil, &EngineError{StatusCode: resp.StatusCode, Message: "reply larger than 4 MiB", Body: b[:maxErrorBody]}
	}
	return resp, b, nil
}

func (c *Client) callCloud(ctx context.Context, method, path string, body []byte) (reply, error) {
	env := proxyEnvelope{
		Scope:     "customer",
		TargetURL: c.engineURL + path,
		Method:    method,
		Headers:   map[string]string{"Content-Type": "application/json"},
		Body:      string(body),
	}
	eb, err := marshalNoEscape(env)
	if err != nil {
		return reply{}, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, c.proxyURL+"/api/v1/proxy", eb)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	resp, rb, err := c.do(req)
	if err != nil {
		return reply{}, err
	}
	var pr proxyReply
	decErr := json.Unmarshal(rb, &pr)
	if resp.StatusCode != http.StatusOK {
		return reply{}, c.statusError(resp.StatusCode, resp.Header, rb, &pr, decErr == nil, true)
	}
	if decErr != nil {
		return reply{}, &EngineError{StatusCode: resp.StatusCode, Proxy: true, Message: "malformed proxy reply: " + decErr.Error(), Body: truncate(rb)}
	}
	if pr.Status != "allowed" {
		if d, at, ok := c.retryHint(resp.Header, &pr); ok {
			return reply{}, &RateLimitError{StatusCode: http.StatusTooManyRequests, RetryAfter: d, RetryAt: at, Message: c.scrub(firstNonEmpty(pr.Error, pr.Message, "proxy verdict "+strconv.Quote(pr.Status)))}
		}
		return reply{}, &AuthError{StatusCode: http.StatusForbidden, Message: c.scrub(firstNonEmpty(pr.Error, pr.Message, "proxy verdict "+strconv.Quote(pr.Status)))}
	}
	if pr.ForwardedResponse == nil {
		return reply{}, &EngineError{StatusCode: resp.StatusCode, Proxy: true, Message: "proxy reply without forwarded_response", Body: truncate(rb)}
	}
	fr := pr.ForwardedResponse
	inner, err := decodeForwardedBody(fr.Body)
	if err != nil {
		return reply{}, &EngineError{StatusCode: fr.StatusCode, Proxy: true, Message: "malformed forwarded_response.body: " + err.Error(), Body: truncate(rb)}
	}
	if fr.StatusCode < 100 || fr.StatusCode > 599 {
		return reply{}, &EngineError{StatusCode: resp.StatusCode, Proxy: true, Message: fmt.Sprintf("forwarded_response.status_code %d is not an HTTP status", fr.StatusCode), Body: truncate(rb)}
	}
	return reply{status: fr.StatusCode, body: inner}, nil
}

// decodeForwardedBody returns the engine's reply bytes. The proxy sends the
// engine's reply as a JSON string; an object is accepted too, as is null.
func decodeForwardedBody(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
	return raw, nil
}

func (c *Client) callDirect(ctx context.Context, method, path string, body []byte) (reply, error) {
	req, err := c.newRequest(ctx, method, c.engineURL+path, body)
	if err != nil {
		return reply{}, err
	}
	resp, rb, err := c.do(req)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: rb}, nil
}

// engineErrBody is the error shape of both engines and the proxy.
type engineErrBody struct {
	Error             string          `json:"error"`
	Message           string          `json:"message"`
	RetryAfter        json.Number     `json:"retry_after"`
	RetryAfterSeconds json.Number     `json:"retry_after_seconds"`
	RetryAt           json.RawMessage `json:"retry_at"`
}

// replyError turns a non-success engine reply into a typed error.
func (c *Client) replyError(r reply) error {
	var eb engineErrBody
	ok := json.Unmarshal(r.body, &eb) == nil
	pr := proxyReply{Error: eb.Error, Message: eb.Message, RetryAfter: eb.RetryAfter, RetryAfterSeconds: eb.RetryAfterSeconds, RetryAt: eb.RetryAt}
	return c.statusError(r.status, r.header, r.body, &pr, ok, false)
}

func (c *Client) statusError(status int, h http.Header, body []byte, pr *proxyReply, decoded, proxy bool) error {
	msg := ""
	if decoded {
		msg = firstNonEmpty(joinMsg(pr.Error, pr.Message))
	}
	if msg == "" {
		msg = strings.TrimSpace(string(truncateN(body, 512)))
	}
	msg = c.scrub(msg)
	switch {
	case status == http.StatusTooManyRequests:
		d, at, _ := c.retryHint(h, pr)
		return &RateLimitError{StatusCode: status, RetryAfter: d, RetryAt: at, Message: msg}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &AuthError{StatusCode: status, Message: msg}
	}
	return &EngineError{StatusCode: status, Message: msg, Body: []byte(c.scrub(string(truncate(body)))), Proxy: proxy}
}

func joinMsg(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "" || a == b:
		return a
	}
	return a + ": " + b
}

// retryHint extracts the wait from a Retry-After header (which wins) or the
// body's retry_after / retry_after_seconds (seconds) or retry_at (unix
// seconds, unix milliseconds or RFC 3339).
func (c *Client) retryHint(h http.Header, pr *proxyReply) (time.Duration, time.Time, bool) {
	now := c.now()
	if h != nil {
		if d, ok := parseRetryAfter(h.Get("Retry-After"), now); ok {
			return d, now.Add(d), true
		}
	}
	for _, n := range []json.Number{pr.RetryAfter, pr.RetryAfterSeconds} {
		if n == "" {
			continue
		}
		if d, ok := parseRetryAfter(n.String(), now); ok {
			return d, now.Add(d), true
		}
	}
	if at, ok := parseRetryAt(pr.RetryAt, now); ok {
		d := at.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, at, true
	}
	return 0, time.Time{}, false
}

func parseRetryAt(raw json.RawMessage, now time.Time) (time.Time, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return time.Time{}, false
	}
	var t time.Time
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return time.Time{}, false
		}
		if p, err := time.Parse(time.RFC3339, s); err == nil {
			t = p
		} else if n, err := strconv.ParseFloat(s, 64); err == nil {
			t = unixGuess(n)
		} else {
			return time.Time{}, false
		}
	} else {
		n, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || n != n {
			return time.Time{}, false
		}
		t = unixGuess(n)
	}
	if t.IsZero() || t.Sub(now) > maxRetryAfter || now.Sub(t) > maxRetryAfter {
		return time.Time{}, false
	}
	return t, true
}

// unixGuess reads n as unix milliseconds when it is too large to be seconds.
func unixGuess(n float64) time.Time {
	if n <= 0 || n > 1e15 {
		return time.Time{}
	}
	if n > 1e11 {
		return time.UnixMilli(int64(n))
	}
	return time.Unix(int64(n), 0)
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}

func truncate(b []byte) []byte { return truncateN(b, maxErrorBody) }

func truncateN(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	return append([]byte(nil), b...)
}
