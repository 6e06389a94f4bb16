package ezclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
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

// errorFields are the error keys shared by the proxy's and the engines'
// replies. The retry fields are kept raw: servers send numbers, numeric
// strings or dates, and one odd field must not hide the rest of the reply.
type errorFields struct {
	Error             string
	Message           string
	RetryAfter        json.RawMessage
	RetryAfterSeconds json.RawMessage
	RetryAt           json.RawMessage
}

// forwardedResponse is the engine's reply as relayed by the proxy.
type forwardedResponse struct {
	StatusCode int
	Body       []byte // the engine's reply, decoded from its JSON string
}

// proxyReply is the proxy's answer, for every status.
type proxyReply struct {
	Status string
	errorFields
	// Forwarded is nil when the reply has no forwarded_response.
	Forwarded *forwardedResponse
}

// decodeErrorFields reads the error keys of a JSON object reply. ok is false
// when body is not a JSON object.
func decodeErrorFields(body []byte) (errorFields, bool) {
	var raw struct {
		Error             json.RawMessage `json:"error"`
		Message           json.RawMessage `json:"message"`
		RetryAfter        json.RawMessage `json:"retry_after"`
		RetryAfterSeconds json.RawMessage `json:"retry_after_seconds"`
		RetryAt           json.RawMessage `json:"retry_at"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return errorFields{}, false
	}
	return errorFields{
		Error:             looseString(raw.Error),
		Message:           looseString(raw.Message),
		RetryAfter:        raw.RetryAfter,
		RetryAfterSeconds: raw.RetryAfterSeconds,
		RetryAt:           raw.RetryAt,
	}, true
}

// decodeProxyReply parses the proxy's reply body (protocol §1.1). It fails
// only when body is not a JSON object or a present forwarded_response is
// malformed (its body not a JSON string, object or null, or its status_code
// not an integer).
func decodeProxyReply(body []byte) (proxyReply, error) {
	var raw struct {
		Status            json.RawMessage `json:"status"`
		ForwardedResponse json.RawMessage `json:"forwarded_response"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return proxyReply{}, err
	}
	ef, _ := decodeErrorFields(body)
	pr := proxyReply{Status: looseString(raw.Status), errorFields: ef}
	fr := bytes.TrimSpace(raw.ForwardedResponse)
	if len(fr) == 0 || bytes.Equal(fr, []byte("null")) {
		return pr, nil
	}
	var rf struct {
		StatusCode json.RawMessage `json:"status_code"`
		Body       json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(fr, &rf); err != nil {
		return proxyReply{}, fmt.Errorf("forwarded_response: %w", err)
	}
	code, ok := looseInt(rf.StatusCode)
	if !ok {
		return proxyReply{}, fmt.Errorf("forwarded_response.status_code %s is not an integer", truncateN(rf.StatusCode, 32))
	}
	inner, err := decodeForwardedBody(rf.Body)
	if err != nil {
		return proxyReply{}, fmt.Errorf("forwarded_response.body: %w", err)
	}
	pr.Forwarded = &forwardedResponse{StatusCode: code, Body: inner}
	return pr, nil
}

// looseString returns a JSON string's value, the text of a number or
// boolean, the "message" (or "error") of an object, and "" for null or
// anything else.
func looseString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '{':
		var o struct {
			Message json.RawMessage `json:"message"`
			Error   json.RawMessage `json:"error"`
		}
		if json.Unmarshal(raw, &o) == nil {
			// Only one level deep: a hostile reply cannot make this recurse.
			for _, r := range []json.RawMessage{o.Message, o.Error} {
				r = bytes.TrimSpace(r)
				if len(r) > 0 && r[0] == '"' {
					var s string
					if json.Unmarshal(r, &s) == nil && s != "" {
						return s
					}
				}
			}
		}
		return string(truncateN(raw, 512))
	case 'n':
		return ""
	case '[':
		return string(truncateN(raw, 512))
	}
	return string(raw) // number, true, false
}

// looseInt reads an integer sent as a JSON number (possibly written with a
// fraction or exponent, e.g. 201.0) or as a numeric string.
func looseInt(raw json.RawMessage) (int, bool) {
	s := looseString(raw)
	if s == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return 0, false
	}
	return int(f), true
}

// call performs one logical engine call with retries of transient failures.
// path is relative to the engine URL, e.g. "/api/v1/jobs" or "/jobs".
//
// A 5xx reply (from the proxy, from the engine behind it, or from a
// self-hosted engine) and a network failure are transient: they are retried
// up to c.maxAttempts tries in all with jittered exponential backoff, the
// same body (hence the same idempotent key) each time. Any other reply is
// returned as is, for the caller to interpret: the proxy's own 4xx and
// refusals come back as typed errors, the engine's as a reply. A backoff
// wait that would end after ctx's deadline is not started.
//
// Every occurrence of a redact string (for example a webhook secret that the
// body carries) is replaced by "****" in the errors returned and logged.
func (c *Client) call(ctx context.Context, method, path string, body []byte, redact ...string) (reply, error) {
	var lastErr error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			if lastErr != nil {
				return reply{}, errors.Join(err, lastErr)
			}
			return reply{}, err
		}
		r, err := c.callOnce(ctx, method, path, body, redact)
		if err == nil && r.status >= 500 {
			err = c.replyError(r)
		}
		if err == nil {
			return r, nil
		}
		redactError(err, redact)
		if !c.retryable(ctx, err) || attempt >= c.maxAttempts {
			return reply{}, err
		}
		lastErr = err
		wait := c.backoff(attempt)
		if dl, ok := ctx.Deadline(); ok && c.now().Add(wait).After(dl) {
			// The wait cannot finish before the deadline: do not start it.
			return reply{}, err
		}
		// err was scrubbed above; the logger scrubs again (the client's
		// handler wraps every logger it is given).
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
		return ee.StatusCode >= 500 && ee.StatusCode <= 599
	}
	var ne *networkError
	return errors.As(err, &ne)
}

// networkError marks a failure to reach the proxy or engine at all.
type networkError struct{ err error }

// Error says the engine (or proxy) could not be reached, and why (the
// engine URL's credentials redacted).
func (e *networkError) Error() string {
	return redact.Text("ezthrottle: engine unreachable: " + e.err.Error())
}

// GoString renders the error for %#v, redacted like Error.
func (e *networkError) GoString() string {
	return "&ezclient.networkError{" + strconv.Quote(e.Error()) + "}"
}

// Unwrap returns the transport's error (e.g. a *url.Error wrapping a
// *net.OpError), so errors.Is/As can inspect the cause.
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

// callOnce makes one attempt. The reply body is scrubbed of the API key and
// the redact strings as soon as it is read, before anything (messages,
// truncated error bodies) is derived from it.
func (c *Client) callOnce(ctx context.Context, method, path string, body []byte, redact []string) (reply, error) {
	if c.dialect == DialectCloud {
		return c.callCloud(ctx, method, path, body, redact)
	}
	return c.callDirect(ctx, method, path, body, redact)
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

// transportError turns a failed round trip into the error call returns: the
// context's error when the context ended (not retried), otherwise a
// *networkError. The API key is scrubbed from the message.
func (c *Client) transportError(req *http.Request, err error) error {
	if ctxErr := req.Context().Err(); ctxErr != nil {
		return fmt.Errorf("ezthrottle: %s %s: %w", req.Method, redact.URLOf(req.URL), ctxErr)
	}
	if msg := err.Error(); redact.Text(c.scrub(msg)) != msg {
		// A *url.Error quotes the URL (user name included); the original
		// stays reachable for errors.Is/As, its message scrubbed.
		return &networkError{err: &scrubbedError{msg: redact.Text(c.scrub(msg)), err: err}}
	}
	return &networkError{err: err}
}

func (c *Client) do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, c.transportError(req, err)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBody+1))
	if err == nil && len(b) <= maxReplyBody {
		_ = resp.Body.Close() // read to EOF: nothing to drain
	} else {
		c.drainClose(req.Context(), resp.Body)
	}
	if err != nil {
		return nil, nil, c.transportError(req, err)
	}
	if len(b) > maxReplyBody {
		return nil, nil, &EngineError{StatusCode: resp.StatusCode, Message: "reply larger than 4 MiB", Body: []byte(c.scrub(string(b[:maxErrorBody])))}
	}
	return resp, b, nil
}

func (c *Client) callCloud(ctx context.Context, method, path string, body []byte, redact []string) (reply, error) {
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
	if len(eb) > c.maxReq {
		return reply{}, &TooLargeError{Size: len(eb), Limit: c.maxReq}
	}
	req, err := c.newRequest(ctx, http.MethodPost, c.proxyURL+"/api/v1/proxy", eb)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey.Reveal())
	resp, rb, err := c.do(req)
	if err != nil {
		return reply{}, err
	}
	return c.proxyResult(resp.StatusCode, resp.Header, scrubAll(rb, redact))
}

// proxyResult interprets the proxy's reply (protocol §1.1): the engine's
// reply unwrapped from forwarded_response when the verdict is "allowed", a
// typed error otherwise.
func (c *Client) proxyResult(status int, h http.Header, rb []byte) (reply, error) {
	rb = c.scrubBytes(rb)
	pr, decErr := decodeProxyReply(rb)
	if status != http.StatusOK {
		ef, ok := decodeErrorFields(rb)
		return reply{}, c.statusError(status, h, rb, ef, ok, true)
	}
	if decErr != nil {
		return reply{}, &EngineError{StatusCode: status, Proxy: true, Message: "malformed proxy reply: " + decErr.Error(), Body: c.scrubBytes(truncate(rb))}
	}
	if pr.Status != "allowed" {
		msg := c.scrub(firstNonEmpty(joinMsg(pr.Error, pr.Message), "proxy verdict "+strconv.Quote(pr.Status)))
		if d, at, ok := c.retryHint(h, pr.errorFields); ok {
			return reply{}, &RateLimitError{StatusCode: http.StatusTooManyRequests, RetryAfter: d, RetryAt: at, Message: msg}
		}
		return reply{}, &AuthError{StatusCode: http.StatusForbidden, Message: msg}
	}
	if pr.Forwarded == nil {
		return reply{}, &EngineError{StatusCode: status, Proxy: true, Message: "proxy reply without forwarded_response", Body: c.scrubBytes(truncate(rb))}
	}
	if fc := pr.Forwarded.StatusCode; fc < 100 || fc > 599 {
		return reply{}, &EngineError{StatusCode: status, Proxy: true, Message: fmt.Sprintf("forwarded_response.status_code %d is not an HTTP status", fc), Body: c.scrubBytes(truncate(rb))}
	}
	return reply{status: pr.Forwarded.StatusCode, body: pr.Forwarded.Body}, nil
}

// decodeForwardedBody returns the engine's reply bytes. The proxy sends the
// engine's reply as a JSON string; an object or array is accepted too, as is
// null or an absent body.
func decodeForwardedBody(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	case '{', '[':
		return raw, nil
	}
	return nil, fmt.Errorf("want a JSON string, got %s", truncateN(raw, 32))
}

func (c *Client) callDirect(ctx context.Context, method, path string, body []byte, redact []string) (reply, error) {
	if len(body) > c.maxReq {
		return reply{}, &TooLargeError{Size: len(body), Limit: c.maxReq}
	}
	req, err := c.newRequest(ctx, method, c.engineURL+path, body)
	if err != nil {
		return reply{}, err
	}
	resp, rb, err := c.do(req)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: c.scrubBytes(scrubAll(rb, redact))}, nil
}

// replyError turns a non-success engine reply into a typed error.
func (c *Client) replyError(r reply) error {
	r.body = c.scrubBytes(r.body)
	ef, ok := decodeErrorFields(r.body)
	return c.statusError(r.status, r.header, r.body, ef, ok, false)
}

// statusError maps a failed reply to a typed error: 429 → *RateLimitError,
// 401/403 → *AuthError, anything else → *EngineError. The API key is
// scrubbed from every message and body.
func (c *Client) statusError(status int, h http.Header, body []byte, ef errorFields, decoded, proxy bool) error {
	msg := ""
	if decoded {
		msg = joinMsg(ef.Error, ef.Message)
	}
	if strings.TrimSpace(msg) == "" {
		msg = strings.TrimSpace(strings.ToValidUTF8(string(truncateN(body, 512)), "\ufffd"))
	}
	msg = c.scrub(msg)
	switch {
	case status == http.StatusTooManyRequests:
		d, at, _ := c.retryHint(h, ef)
		return &RateLimitError{StatusCode: status, RetryAfter: d, RetryAt: at, Message: msg}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &AuthError{StatusCode: status, Message: msg}
	}
	return &EngineError{StatusCode: status, Message: msg, Body: c.scrubBytes(truncate(body)), Proxy: proxy}
}

// redactError scrubs the typed errors of err's tree in place (these errors
// were made by this package for this call and are not shared): every
// occurrence of the redact strings (those of at least 4 bytes, in each of
// their encoded forms) becomes "****", then what redact.Text finds by
// pattern (URL user info, sensitive query values, credential headers,
// bearer tokens) becomes REDACTED.
func redactError(err error, secrets []string) {
	if err == nil {
		return
	}
	set := redact.NewSecrets("****")
	for _, r := range secrets {
		if len(r) >= 4 && len(r) < redact.MinSecretLen {
			set.AddExact(r) // short API keys of tests and dev engines
		}
		set.Add(r)
	}
	scrubErrorTree(err, set)
}

// scrubErrorTree applies set.Scrub to the text fields of the package's typed
// errors in err's tree.
func scrubErrorTree(err error, set *redact.Secrets) {
	var walk func(error, int)
	walk = func(e error, depth int) {
		if e == nil || depth > 64 {
			return
		}
		switch x := e.(type) {
		case *EngineError:
			x.Message = set.Scrub(x.Message)
			x.Body = set.ScrubBytes(x.Body)
		case *AuthError:
			x.Message = set.Scrub(x.Message)
		case *RateLimitError:
			x.Message = set.Scrub(x.Message)
		case *ValidationError:
			x.Reason = set.Scrub(x.Reason)
			x.Field = set.Scrub(x.Field)
		case *networkError:
			if msg := x.err.Error(); set.Scrub(msg) != msg {
				x.err = &scrubbedError{msg: set.Scrub(msg), err: x.err}
				return
			}
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				walk(inner, depth+1)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap(), depth+1)
		}
	}
	walk(err, 0)
}

// scrubbedError is an error whose message was scrubbed; errors.Is and
// errors.As still see the original (e.g. a *url.Error, a *net.OpError).
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
func (e *scrubbedError) GoString() string {
	return "&ezclient.scrubbedError{" + strconv.Quote(e.msg) + "}"
}

// redact scrubs the API key and the extra strings from err's typed errors
// (see redactError) and returns err.
func (c *Client) redact(err error, extra ...string) error {
	redactError(err, append(extra, c.apiKey.Reveal()))
	return err
}

// scrubAll replaces every redact string of at least 4 bytes in b by "****".
func scrubAll(b []byte, redact []string) []byte {
	for _, r := range redact {
		if len(r) >= 4 && bytes.Contains(b, []byte(r)) {
			b = bytes.ReplaceAll(b, []byte(r), []byte("****"))
		}
	}
	return b
}

func (c *Client) scrubBytes(b []byte) []byte {
	k := c.apiKey.Reveal()
	if len(k) < 4 || !bytes.Contains(b, []byte(k)) {
		return b
	}
	return bytes.ReplaceAll(b, []byte(k), []byte("****"))
}

func joinMsg(a, b string) string {
	switch {
	case strings.TrimSpace(a) == "":
		return b
	case strings.TrimSpace(b) == "" || a == b:
		return a
	}
	return a + ": " + b
}

// retryHint extracts the wait from a Retry-After header (which wins) or the
// body's retry_after / retry_after_seconds (seconds, as a number or a
// string; an HTTP-date is accepted too) or retry_at (unix seconds, unix
// milliseconds or RFC 3339). Garbage, negative and absurd (over a week)
// values are ignored.
func (c *Client) retryHint(h http.Header, ef errorFields) (time.Duration, time.Time, bool) {
	now := c.now()
	if h != nil {
		if d, ok := parseRetryAfter(h.Get("Retry-After"), now); ok {
			return d, now.Add(d), true
		}
	}
	for _, raw := range []json.RawMessage{ef.RetryAfter, ef.RetryAfterSeconds} {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || (raw[0] != '"' && (raw[0] < '0' || raw[0] > '9') && raw[0] != '-') {
			continue // absent, null, boolean, object, array
		}
		if d, ok := parseRetryAfter(looseString(raw), now); ok {
			return d, now.Add(d), true
		}
	}
	if at, ok := parseRetryAt(ef.RetryAt, now); ok {
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
		s = strings.TrimSpace(s)
		if p, err := time.Parse(time.RFC3339, s); err == nil {
			t = p
		} else if p, err := time.Parse(http.TimeFormat, s); err == nil {
			t = p
		} else if n, err := strconv.ParseFloat(s, 64); err == nil {
			t = unixGuess(n)
		} else {
			return time.Time{}, false
		}
	} else {
		n, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return time.Time{}, false
		}
		t = unixGuess(n)
	}
	if t.IsZero() || t.Sub(now) > maxRetryAfter || now.Sub(t) > maxRetryAfter {
		return time.Time{}, false
	}
	return t, true
}

// unixGuess reads n as unix milliseconds when it is too large to be seconds
// (after the year 5138). It returns the zero time for non-positive, NaN,
// infinite and absurdly large values.
func unixGuess(n float64) time.Time {
	if !(n > 0) || n > 1e15 { // !(n > 0) also catches NaN
		return time.Time{}
	}
	if n > 1e11 {
		return time.UnixMilli(int64(n))
	}
	sec, frac := math.Modf(n)
	return time.Unix(int64(sec), int64(frac*1e9))
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
