package ezlocal

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests: the engine answered any Host header, so a web page
// using DNS rebinding (its own name resolved to 127.0.0.1) could read the
// job bodies, results and dashboard of 'ezthrottle dev' on the developer's
// machine, and submit jobs. On loopback connections the engine now answers
// only loopback Host names, and the names WithAllowedHosts adds.

// doHost sends method path to e with the Host header host (on a loopback
// connection: e listens on 127.0.0.1) and returns the status and body.
func doHost(t *testing.T, e *Engine, method, path, host, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.URL()+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && strings.HasSuffix(path, "/stream") {
		return resp.StatusCode, "" // a live stream: its status says enough
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// guardedRoutes is every kind of route, with a body where one is needed.
var guardedRoutes = []struct{ method, path, body string }{
	{"GET", "/", ""},
	{"GET", "/ui/api/overview", ""},
	{"GET", "/ui/api/jobs/JOBID", ""},
	{"GET", "/jobs/JOBID", ""},
	{"GET", "/jobs/JOBID/stream", ""},
	{"GET", "/health", ""},
	{"POST", "/jobs", `{"user_id":"u","idempotent_key":"k2","url":"DEST/x","method":"GET","webhook_url":"DEST/hook"}`},
	{"POST", "/api/v1/proxy", `{}`},
	{"POST", "/api/v1/jobs", `{}`},
}

// forgedHosts are Host headers a rebinding page sends (its own name, with
// or without a port), including names that merely contain a loopback name.
var forgedHosts = []string{
	"evil.example", "evil.example:8787", "EVIL.EXAMPLE", "127.0.0.1.evil.example", "localhost.evil.example:80",
	"evil.example.", "localhostx", "xlocalhost", "127.0.0.1.nip.io", "[::1].evil.example", "0x7f000001.evil",
}

func TestForgedHostRefusedOnLoopback(t *testing.T) {
	e, _ := startEngine(t)
	dest := okServer(t)
	// The job is done before the forged requests: a forged stream request
	// on the old code ends with it instead of hanging.
	code, body := doHost(t, e, "POST", "/jobs", "127.0.0.1", strings.ReplaceAll(guardedRoutes[6].body, "DEST", dest.URL))
	require.Equal(t, http.StatusCreated, code, body)
	id := strings.Split(strings.Split(body, `"job_id":"`)[1], `"`)[0]
	waitJob(t, e, id)
	for _, host := range forgedHosts {
		for _, rt := range guardedRoutes {
			path := strings.ReplaceAll(rt.path, "JOBID", id)
			code, body := doHost(t, e, rt.method, path, host, strings.ReplaceAll(rt.body, "DEST", dest.URL))
			assert.Equal(t, http.StatusForbidden, code, "%s %s Host %q: %s", rt.method, path, host, body)
			assert.NotContains(t, body, id, "nothing of the jobs leaks")
			assert.NotContains(t, body, dest.URL)
		}
	}
	assert.Len(t, e.Jobs(), 1, "a forged POST /jobs creates nothing")
}

func TestLoopbackHostsAccepted(t *testing.T) {
	e, _ := startEngine(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.URL(), "http://"))
	for _, host := range []string{
		"localhost", "localhost:" + port, "LOCALHOST", "localhost.", "app.localhost:" + port,
		"127.0.0.1", "127.0.0.1:" + port, "127.1.2.3", "[::1]", "[::1]:" + port, "",
	} {
		code, body := doHost(t, e, "GET", "/health", host, "")
		assert.Equal(t, http.StatusOK, code, "Host %q: %s", host, body)
	}
}

func TestWithAllowedHosts(t *testing.T) {
	e, _ := startEngine(t, WithAllowedHosts("ezlocal", "Dev.Internal:9999"), WithAllowedHosts("10.1.2.3"))
	for host, want := range map[string]int{
		"ezlocal": 200, "ezlocal:8787": 200, "EZLOCAL": 200, "dev.internal": 200, "dev.internal:1": 200, "10.1.2.3:80": 200,
		"localhost": 200, "evil.example": 403, "ezlocal.evil.example": 403, "internal": 403,
	} {
		code, _ := doHost(t, e, "GET", "/ui/api/overview", host, "")
		assert.Equal(t, want, code, "Host %q", host)
	}
	anyEng, _ := startEngine(t, WithAllowedHosts("*"))
	code, _ := doHost(t, anyEng, "GET", "/ui/api/overview", "evil.example", "")
	assert.Equal(t, http.StatusOK, code, `"*" allows every host`)

	for _, bad := range []string{"", " ", "http://ezlocal", "ezlocal/x", "user@ezlocal", "a b"} {
		_, err := New(WithAllowedHosts(bad))
		assert.Error(t, err, "%q", bad)
	}
}

// A request that reaches the engine on another address (a container
// reached by its service name in docker-compose) is not checked, nor one
// whose local address is unknown (the handler called directly).
func TestHostNotCheckedOffLoopback(t *testing.T) {
	e, err := New()
	require.NoError(t, err)
	defer e.Close()
	for _, local := range []net.Addr{&net.TCPAddr{IP: net.ParseIP("172.18.0.5"), Port: 8787}, nil} {
		req := httptest.NewRequest("GET", "/health", nil)
		req.Host = "ezlocal:8787"
		if local != nil {
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, local))
		}
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, req)
		assert.Equal(t, http.StatusOK, rec.Code, "local address %v", local)
	}
	// The same Host on a loopback connection is refused.
	req := httptest.NewRequest("GET", "/health", nil)
	req.Host = "ezlocal:8787"
	req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv6loopback, Port: 8787}))
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, req)
	assert.Equal(t, http.StatusForbidden, rec.Code)
}

func FuzzHostName(f *testing.F) {
	for _, h := range append(forgedHosts, "localhost", "[::1]:80", "127.0.0.1", "a.localhost.") {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, host string) {
		h := hostName(host)
		if loopbackName(h) {
			// A name accepted as loopback is localhost, under .localhost,
			// or a loopback IP: never a name an outsider controls.
			ip := net.ParseIP(strings.SplitN(h, "%", 2)[0])
			ok := h == "localhost" || strings.HasSuffix(h, ".localhost") || (ip != nil && ip.IsLoopback())
			if !ok {
				t.Fatalf("hostName(%q) = %q accepted as loopback", host, h)
			}
		}
	})
}
