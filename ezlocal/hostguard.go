package ezlocal

import (
	"net"
	"net/http"
	"strings"
)

// WithAllowedHosts adds host names the engine answers on loopback
// connections, besides the loopback ones it always answers (localhost,
// names under .localhost, 127.0.0.0/8 and ::1).
//
// The engine refuses (403) a request that reached it on a loopback address
// with any other Host header: that is what a web page using DNS rebinding
// sends (its own name, resolved to 127.0.0.1) to read the jobs, results and
// dashboard of an engine running on the developer's machine. Requests that
// reach the engine on another address (a container reached by its service
// name in docker-compose, a LAN address) are not checked.
//
// A name may carry a port, which is ignored ("dev.internal:8787" allows
// dev.internal on any port); names are matched without regard to case.
// "*" allows every host (no protection). An empty name, or one with a
// scheme or a path, is an error of New and Start. Repeated calls add up.
func WithAllowedHosts(hosts ...string) Option {
	return func(c *config) {
		for _, h := range hosts {
			name := strings.TrimSpace(h)
			if name == "*" {
				c.anyHost = true
				continue
			}
			if name == "" || strings.ContainsAny(name, "/?#@ ") {
				c.errf("WithAllowedHosts(%q): want a host name or IP, optionally with a port", h)
				continue
			}
			if c.allowedHosts == nil {
				c.allowedHosts = map[string]bool{}
			}
			c.allowedHosts[hostName(name)] = true
		}
	}
}

// hostName is the host of a Host header or a host[:port] name, without the
// port, the IPv6 brackets or a final dot, in lower case.
func hostName(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = strings.TrimPrefix(strings.TrimSuffix(h, "]"), "[")
	h = strings.TrimSuffix(h, ".")
	return strings.ToLower(h)
}

// loopbackName reports whether a host (as hostName returns it) always
// means this machine: localhost and the names under .localhost (RFC 6761;
// browsers resolve them to loopback themselves), or a loopback IP.
func loopbackName(h string) bool {
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if i := strings.IndexByte(h, '%'); i >= 0 { // IPv6 zone
		h = h[:i]
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// onLoopback reports whether r arrived on a loopback address of this
// machine (false when the server does not say, e.g. a handler called
// directly).
func onLoopback(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// hostAllowed applies WithAllowedHosts to a request.
func (c *config) hostAllowed(r *http.Request) bool {
	if c.anyHost || r.Host == "" || !onLoopback(r) {
		// An empty Host (HTTP/1.0) is never what a browser sends.
		return true
	}
	h := hostName(r.Host)
	return loopbackName(h) || c.allowedHosts[h]
}

// guardHost refuses, with 403, the requests hostAllowed refuses (see
// WithAllowedHosts), before any route sees them.
func (e *Engine) guardHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !e.cfg.hostAllowed(r) {
			writeJSON(w, http.StatusForbidden, map[string]any{
				"error": "forbidden host: this engine answers loopback requests only for localhost and loopback IPs " +
					"(a page using DNS rebinding sends its own name); allow a name with ezlocal.WithAllowedHosts " +
					"or 'ezthrottle dev --allowed-host'",
				"host": r.Host,
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}
