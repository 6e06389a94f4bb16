package ezthrottle

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// ForwardReason says why a request became an EZThrottle job.
type ForwardReason string

// Forward reasons, as carried by the HeaderForwardedReason header.
const (
	// ReasonStatus: the upstream answered with a forwarding status (by
	// default 429, 500, 502, 503 or 504).
	ReasonStatus ForwardReason = "status"
	// ReasonNetworkError: the round trip failed (dial error, reset,
	// timeout), not because the caller cancelled it.
	ReasonNetworkError ForwardReason = "network_error"
	// ReasonOverflow: the throttle wait would have exceeded the request's
	// deadline or the maximum wait ("overflow to the dam"); the request was
	// never sent upstream.
	ReasonOverflow ForwardReason = "throttle_overflow"
	// ReasonAutoForward: user code asked for forwarding with a
	// *ForwardError (AutoForward).
	ReasonAutoForward ForwardReason = "auto_forward"
)

// DefaultForwardStatuses are the upstream statuses that forward a request
// by default.
func DefaultForwardStatuses() []int {
	return []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout}
}

// Reasons a request could not be forwarded. They are wrapped in a
// *ForwardFailedError.
var (
	// ErrBodyTooLarge: the request body exceeds the forwarding limit
	// (WithMaxForwardBody).
	ErrBodyTooLarge = errors.New("ezthrottle: request body too large to forward")
	// ErrBodyNotUTF8: the body is not valid UTF-8; the job carries its body
	// as a JSON string, which would corrupt binary data.
	ErrBodyNotUTF8 = errors.New("ezthrottle: request body is not valid UTF-8 and cannot be forwarded")
	// ErrBodyNotReplayable: the body has no GetBody and was not fully read
	// by the upstream round trip, so it cannot be reproduced.
	ErrBodyNotReplayable = errors.New("ezthrottle: request body cannot be replayed")
	// ErrUnsafeReplay: the upstream may already have processed this
	// non-idempotent request (a 5xx or network error on a write without an
	// Idempotency-Key header); see WithForwardUnsafeWrites.
	ErrUnsafeReplay = errors.New("ezthrottle: not forwarded: the upstream may already have processed this write (no Idempotency-Key)")
)

// hostRule is one WithHostLimit entry.
type hostRule struct {
	wildcard bool   // "*.example.com": suffix match on ".example.com"
	host     string // lower-cased host, or the suffix (with the leading dot)
	port     string // "" = any port
	limit    Limit
}

func parseHostPattern(p string) (hostRule, error) {
	orig := p
	p = strings.ToLower(strings.TrimSpace(p))
	if i := strings.Index(p, "://"); i >= 0 {
		p = p[i+3:]
	}
	p = strings.TrimSuffix(p, "/")
	var r hostRule
	host, port := splitHostPort(p)
	if strings.HasPrefix(host, "*.") {
		r.wildcard = true
		host = host[1:] // keep the dot
		if len(host) < 2 || strings.Contains(host[1:], "*") {
			return r, fmt.Errorf("ezthrottle: bad host pattern %q", orig)
		}
	} else if host == "" || strings.ContainsAny(host, "*/ ") {
		return r, fmt.Errorf("ezthrottle: bad host pattern %q (want host, host:port or *.domain)", orig)
	}
	r.host, r.port = host, port
	return r, nil
}

// splitHostPort splits "host:port", "[v6]:port", "[v6]" or "host".
func splitHostPort(hp string) (host, port string) {
	if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.Contains(hp[i:], "]") {
		if strings.Count(hp, ":") == 1 || strings.HasPrefix(hp, "[") {
			return strings.Trim(hp[:i], "[]"), hp[i+1:]
		}
		return hp, "" // bare IPv6 without brackets
	}
	return strings.Trim(hp, "[]"), ""
}

// limitFor resolves the configured limit of a host: an exact host:port
// rule, then an exact host rule, then the longest matching wildcard, else
// the default.
func (c *config) limitFor(host, port string) Limit {
	var best *hostRule
	score := -1
	for i := range c.hostRules {
		r := &c.hostRules[i]
		if r.port != "" && r.port != port {
			continue
		}
		s := -1
		switch {
		case !r.wildcard && r.host == host:
			s = 1 << 20
			if r.port != "" {
				s++
			}
		case r.wildcard && strings.HasSuffix(host, r.host) && len(host) > len(r.host):
			s = len(r.host)*2 + boolInt(r.port != "")
		}
		if s > score {
			best, score = r, s
		}
	}
	if best != nil {
		return best.limit
	}
	return c.defaultLimit
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// statusSet is a set of HTTP status codes.
type statusSet [10]uint64

func (s *statusSet) add(code int) {
	if code >= 0 && code < 640 {
		s[code/64] |= 1 << (code % 64)
	}
}

func (s *statusSet) has(code int) bool {
	return code >= 0 && code < 640 && s[code/64]&(1<<(code%64)) != 0
}

// idempotentMethod reports whether RFC 9110 makes the method idempotent.
func idempotentMethod(m string) bool {
	switch m {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// safeToReplay reports whether forwarding cannot execute a write twice:
// idempotent methods, requests carrying a (non-blank) Idempotency-Key header, statuses
// that prove the request was not processed (429, 503 with Retry-After) and
// errors raised before the request was sent (dial, DNS).
func (t *Transport) safeToReplay(req *http.Request, status int, h http.Header, err error) bool {
	if t.cfg.forwardAllWrites || idempotentMethod(req.Method) || requestKey(req.Header) != "" {
		return true
	}
	if status == http.StatusTooManyRequests || (status == http.StatusServiceUnavailable && h.Get("Retry-After") != "") {
		return true
	}
	return err != nil && notSent(err)
}

// isNetworkError reports whether a round-trip error is a transport failure
// (dial, DNS, reset, timeout, connection closed early).
func isNetworkError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// notSent reports whether the error proves the request never reached the
// upstream: a dial or DNS failure, or a refused connection.
func notSent(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var de *net.DNSError
	return errors.As(err, &de) || errors.Is(err, syscall.ECONNREFUSED)
}
