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
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fxKey is the API key used by the tests; no error or log line may contain it.
const fxKey = "ezt_live_SECRET-api-key-0123456789"

// fxEngineURL is the engine URL the Cloud tests put into the envelope.
const fxEngineURL = "https://engine.test"

// fxNoEnv is a getenv that sees an empty environment.
func fxNoEnv(string) string { return "" }

// fxSleeper records the backoff waits instead of sleeping.
type fxSleeper struct {
	mu    sync.Mutex
	waits []time.Duration
	// hook, when set, runs on each wait (e.g. to cancel a context).
	hook func(ctx context.Context, d time.Duration) error
}

func (s *fxSleeper) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		return hook(ctx, d)
	}
	return ctx.Err()
}

func (s *fxSleeper) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// fxNoJitter makes backoff deterministic.
func fxNoJitter(d time.Duration) time.Duration { return d }

// fxLogs returns a debug-level logger writing JSON lines to the buffer.
func fxLogs() (*slog.Logger, *fxBuffer) {
	b := &fxBuffer{}
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// fxBuffer is a goroutine-safe bytes.Buffer.
type fxBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *fxBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *fxBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fxReply is a canned HTTP reply of a fake server.
type fxReply struct {
	status int
	header map[string]string
	body   string
}

// fxRequest is what a fake server received.
type fxRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	Env    proxyEnvelope // decoded envelope (proxy fakes only)
}

// fxServer is an httptest server answering with the replies in order (the
// last one repeats) or with a handler, and recording the requests.
type fxServer struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []fxRequest
	replies []fxReply
	handle  func(n int, r fxRequest) fxReply // optional; n counts from 0
	count   atomic.Int32
}

func fxNewServer(t *testing.T, replies ...fxReply) *fxServer {
	t.Helper()
	s := &fxServer{replies: replies}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *fxServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := fxRequest{Method: r.Method, Path: r.URL.EscapedPath(), Header: r.Header.Clone(), Body: body}
	if r.URL.Path == "/api/v1/proxy" {
		_ = json.Unmarshal(body, &req.Env)
	}
	n := int(s.count.Add(1)) - 1
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	var rep fxReply
	switch {
	case s.handle != nil:
		s.mu.Unlock()
		rep = s.handle(n, req)
		s.mu.Lock()
	case len(s.replies) == 0:
		rep = fxReply{status: 500, body: "no reply configured"}
	case n < len(s.replies):
		rep = s.replies[n]
	default:
		rep = s.replies[len(s.replies)-1]
	}
	s.mu.Unlock()
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.status == 0 {
		rep.status = 200
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func (s *fxServer) requests() []fxRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fxRequest(nil), s.reqs...)
}

// fxForward is a proxy 200 "allowed" reply forwarding the engine's reply.
func fxForward(status int, engineBody string) fxReply {
	b, _ := json.Marshal(map[string]any{
		"status":        "allowed",
		"breach_status": map[string]any{"breached": false},
		"forwarded_response": map[string]any{
			"status_code": status,
			"headers":     map[string]string{"content-type": "application/json"},
			"body":        engineBody,
		},
	})
	return fxReply{status: 200, header: map[string]string{"Content-Type": "application/json"}, body: string(b)}
}

// fxCloud returns a Cloud client talking to srv as its proxy, with recorded
// sleeps and no jitter.
func fxCloud(t *testing.T, srv *fxServer, opts ...Option) (*Client, *fxSleeper) {
	t.Helper()
	sl := &fxSleeper{}
	base := []Option{
		withGetenv(fxNoEnv), WithAPIKey(fxKey), WithProxyURL(srv.URL), WithEngineURL(fxEngineURL),
		WithHTTPClient(srv.Client()), withSleep(sl.sleep), withJitter(fxNoJitter),
	}
	c, err := New(append(base, opts...)...)
	require.NoError(t, err)
	return c, sl
}

// fxSelfHosted returns a self-hosted client talking to srv.
func fxSelfHosted(t *testing.T, srv *fxServer, opts ...Option) (*Client, *fxSleeper) {
	t.Helper()
	sl := &fxSleeper{}
	base := []Option{
		withGetenv(fxNoEnv), WithSelfHosted(srv.URL, "user-1"),
		WithHTTPClient(srv.Client()), withSleep(sl.sleep), withJitter(fxNoJitter),
	}
	c, err := New(append(base, opts...)...)
	require.NoError(t, err)
	return c, sl
}

// fxNoKey fails the test when s contains the API key.
func fxNoKey(t *testing.T, what, s string) {
	t.Helper()
	assert.NotContains(t, s, fxKey, "%s leaks the API key", what)
	for i := 0; i+12 <= len(fxKey); i++ {
		if strings.Contains(s, fxKey[i:i+12]) {
			assert.Fail(t, "partial key leak", "%s leaks part of the API key (%q)", what, fxKey[i:i+12])
			return
		}
	}
}

func TestNewConfiguration(t *testing.T) {
	env := func(m map[string]string) Option {
		return withGetenv(func(k string) string { return m[k] })
	}
	tests := []struct {
		name       string
		opts       []Option
		wantErr    error
		wantField  string
		dialect    Dialect
		proxy      string
		engine     string
		userID     string
		wantAPIKey string
	}{
		{name: "missing key is an error at construction", opts: []Option{env(nil)}, wantErr: ErrMissingAPIKey},
		{name: "blank key is missing", opts: []Option{env(nil), WithAPIKey("   ")}, wantErr: ErrMissingAPIKey},
		{name: "key from the environment and Cloud defaults", opts: []Option{env(map[string]string{EnvAPIKey: "k1"})},
			dialect: DialectCloud, proxy: DefaultProxyURL, engine: DefaultEngineURL, wantAPIKey: "k1"},
		{name: "option wins over the environment", opts: []Option{env(map[string]string{EnvAPIKey: "env", EnvProxyURL: "https://p.env", EnvURL: "https://e.env"}), WithAPIKey("opt"), WithProxyURL("https://p.opt/"), WithEngineURL("https://e.opt/")},
			dialect: DialectCloud, proxy: "https://p.opt", engine: "https://e.opt", wantAPIKey: "opt"},
		{name: "URLs from the environment", opts: []Option{env(map[string]string{EnvAPIKey: "k", EnvProxyURL: "http://127.0.0.1:1/", EnvURL: "http://127.0.0.1:2"})},
			dialect: DialectCloud, proxy: "http://127.0.0.1:1", engine: "http://127.0.0.1:2", wantAPIKey: "k"},
		{name: "self-hosted needs no key", opts: []Option{env(nil), WithSelfHosted("http://localhost:4000", "u1")},
			dialect: DialectSelfHosted, proxy: "", engine: "http://localhost:4000", userID: "u1"},
		{name: "self-hosted defaults", opts: []Option{env(map[string]string{EnvUserID: "u2"}), WithDialect(DialectSelfHosted)},
			dialect: DialectSelfHosted, engine: DefaultSelfHostedURL, userID: "u2"},
		{name: "self-hosted needs a user id", opts: []Option{env(nil), WithDialect(DialectSelfHosted)}, wantErr: ErrValidation, wantField: "user_id"},
		{name: "bad proxy URL", opts: []Option{env(nil), WithAPIKey("k"), WithProxyURL("tracktags.fly.dev")}, wantErr: ErrValidation, wantField: "proxy URL"},
		{name: "bad engine URL", opts: []Option{env(nil), WithAPIKey("k"), WithEngineURL("ftp://x")}, wantErr: ErrValidation, wantField: "engine URL"},
		{name: "key with a newline", opts: []Option{env(nil), WithAPIKey("abc\ndef-123456")}, wantErr: ErrValidation, wantField: "api_key"},
		{name: "unknown dialect", opts: []Option{env(nil), WithAPIKey("k"), WithDialect(Dialect(7))}, wantErr: errors.New("any")},
		{name: "nil http client", opts: []Option{env(nil), WithAPIKey("k"), WithHTTPClient(nil)}, wantErr: errors.New("any")},
		{name: "nil local http client", opts: []Option{env(nil), WithAPIKey("k"), WithLocalHTTPClient(nil)}, wantErr: errors.New("any")},
		{name: "bad retry", opts: []Option{env(nil), WithAPIKey("k"), WithRetry(0, time.Second, time.Second)}, wantErr: errors.New("any")},
		{name: "retry max below base", opts: []Option{env(nil), WithAPIKey("k"), WithRetry(3, time.Second, time.Millisecond)}, wantErr: errors.New("any")},
		{name: "header name with a space", opts: []Option{env(nil), WithAPIKey("k"), WithHeader("X Bad", "v")}, wantErr: ErrValidation, wantField: "header"},
		{name: "header value with CRLF", opts: []Option{env(nil), WithAPIKey("k"), WithHeader("X-Ok", "a\r\nInjected: 1")}, wantErr: ErrValidation, wantField: "header"},
		{name: "user agent with a newline", opts: []Option{env(nil), WithAPIKey("k"), WithUserAgent("app\n1")}, wantErr: ErrValidation, wantField: "User-Agent"},
		{name: "authorization via WithHeader", opts: []Option{env(nil), WithAPIKey("k"), WithHeader("authorization", "Bearer x")}, wantErr: errors.New("any")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.opts...)
			if tt.wantErr != nil {
				require.Error(t, err)
				assert.Nil(t, c)
				if tt.wantErr.Error() != "any" {
					assert.ErrorIs(t, err, tt.wantErr)
				}
				if tt.wantField != "" {
					var ve *ValidationError
					require.ErrorAs(t, err, &ve)
					assert.Equal(t, tt.wantField, ve.Field)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.dialect, c.Dialect())
			assert.Equal(t, tt.proxy, c.ProxyURL())
			assert.Equal(t, tt.engine, c.EngineURL())
			assert.Equal(t, tt.userID, c.userID)
			assert.Equal(t, tt.wantAPIKey, c.apiKey.Reveal())
			assert.NotNil(t, c.Logger())
			assert.NotNil(t, c.HTTPClient())
			assert.NotNil(t, c.LocalHTTPClient())
		})
	}
}

func TestNewDefaultsAndAccessors(t *testing.T) {
	hc := &http.Client{Timeout: 5 * time.Second}
	local := &http.Client{}
	logger, logs := fxLogs()
	c, err := New(withGetenv(fxNoEnv), WithAPIKey(fxKey), WithHTTPClient(hc), WithLocalHTTPClient(local),
		WithLogger(logger), WithUserAgent("myapp/1.2"), WithHeader("X-Test", "1"), WithRetry(2, time.Millisecond, time.Second))
	require.NoError(t, err)
	assert.Same(t, hc, c.HTTPClient())
	assert.Same(t, local, c.LocalHTTPClient())
	// The client logs to the given logger's handler, through the redacting
	// wrapper.
	c.Logger().Info("hello", "k", fxKey)
	assert.Contains(t, logs.String(), `"msg":"hello"`)
	assert.NotContains(t, logs.String(), fxKey)
	assert.Equal(t, "myapp/1.2 ezthrottle-go/"+Version, c.userAgent)
	assert.Equal(t, "1", c.headers.Get("X-Test"))
	assert.Equal(t, 2, c.maxAttempts)
	// The stream client keeps the transport but drops the overall timeout.
	assert.Zero(t, c.streamHC.Timeout)
	assert.Equal(t, hc.Transport, c.streamHC.Transport)

	d, err := New(withGetenv(fxNoEnv), WithAPIKey("k"), WithLogger(nil))
	require.NoError(t, err)
	assert.NotNil(t, d.Logger(), "WithLogger(nil) keeps the silent default")
	assert.Equal(t, 30*time.Second, d.HTTPClient().Timeout)
	// The default clients share one transport of their own, pooled for
	// concurrent use; http.DefaultTransport is neither used nor modified.
	tr, ok := d.HTTPClient().Transport.(*http.Transport)
	require.True(t, ok)
	assert.Same(t, tr, d.LocalHTTPClient().Transport)
	assert.Zero(t, d.LocalHTTPClient().Timeout)
	assert.NotSame(t, http.DefaultTransport, tr)
	assert.Equal(t, DefaultMaxIdleConnsPerHost, tr.MaxIdleConnsPerHost)
	assert.Zero(t, http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost)
	assert.Equal(t, "ezthrottle-go/"+Version, d.userAgent)
}

func TestClientStringRedactsKey(t *testing.T) {
	c, err := New(withGetenv(fxNoEnv), WithAPIKey(fxKey))
	require.NoError(t, err)
	s := c.String()
	fxNoKey(t, "String", strings.ReplaceAll(s, "****"+fxKey[len(fxKey)-4:], ""))
	assert.Contains(t, s, "****6789")
	assert.Contains(t, fmt.Sprintf("%v", c), "cloud")
	assert.Equal(t, "(none)", redactKey(""))
	assert.Equal(t, "****", redactKey("short"))
}

func TestDialectString(t *testing.T) {
	assert.Equal(t, "cloud", DialectCloud.String())
	assert.Equal(t, "self-hosted", DialectSelfHosted.String())
	assert.Equal(t, "Dialect(9)", Dialect(9).String())
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	c, err := New(withGetenv(fxNoEnv), WithAPIKey("k"), WithRetry(10, 100*time.Millisecond, time.Second), withJitter(fxNoJitter))
	require.NoError(t, err)
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, c.backoff(n))
	}
	assert.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}, got)
}

func TestFullJitterBounds(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2, 3, 100 * time.Millisecond, 5 * time.Second} {
		for range 200 {
			j := fullJitter(d)
			assert.GreaterOrEqual(t, j, d/2)
			assert.LessOrEqual(t, j, d)
		}
	}
}

func TestSleepCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, sleepCtx(ctx, time.Hour), context.Canceled, "a cancelled context ends the wait at once")
	assert.ErrorIs(t, sleepCtx(ctx, 0), context.Canceled)
	assert.NoError(t, sleepCtx(context.Background(), 0))
	assert.NoError(t, sleepCtx(context.Background(), time.Nanosecond))
}

func TestSuppressForwarding(t *testing.T) {
	ctx := context.Background()
	assert.False(t, ForwardingSuppressed(ctx))
	s := SuppressForwarding(ctx)
	assert.True(t, ForwardingSuppressed(s))
	child, cancel := context.WithCancel(s)
	defer cancel()
	assert.True(t, ForwardingSuppressed(child), "inherited by derived contexts")
	assert.False(t, ForwardingSuppressed(ctx), "the parent is unchanged")
}

func TestWithUserID(t *testing.T) {
	c, err := New(withGetenv(func(k string) string {
		if k == EnvUserID {
			return "from-env"
		}
		return ""
	}), WithDialect(DialectSelfHosted), WithUserID("from-option"))
	require.NoError(t, err)
	assert.Equal(t, "from-option", c.userID)
}

func TestCloneValueTypes(t *testing.T) {
	m := map[string]string{"a": "1"}
	s := []string{"x"}
	j := &Job{URL: "https://a.b", Metadata: map[string]any{"m": m, "s": s, "n": 1}}
	c := j.Clone()
	c.Metadata["m"].(map[string]string)["a"] = "2"
	c.Metadata["s"].([]string)[0] = "y"
	assert.Equal(t, "1", m["a"])
	assert.Equal(t, "x", s[0])
	assert.Equal(t, 1, c.Metadata["n"])
}
