package ezlocal

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testClock makes every engine delay instant: Sleep advances the clock and
// records the duration.
type testClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newTestClock() *testClock { return &testClock{now: time.Now().Truncate(time.Second)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	c.sleeps = append(c.sleeps, d)
	return nil
}

func (c *testClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// startEngine starts an engine with an instant clock, closed at cleanup.
func startEngine(t *testing.T, opts ...Option) (*Engine, *testClock) {
	t.Helper()
	clk := newTestClock()
	e, err := Start(append([]Option{WithClock(clk)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	return e, clk
}

// server starts an httptest server closed at cleanup.
func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// delivery is one request a receiver got.
type delivery struct {
	Header http.Header
	Body   []byte
}

// receiver is a webhook endpoint recording deliveries; status decides the
// reply to delivery number n (1-based), 200 when nil.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []delivery
	code func(n int) int
}

func newReceiver(t *testing.T, code func(n int) int) *receiver {
	t.Helper()
	r := &receiver{code: code}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, delivery{req.Header.Clone(), b})
		n := len(r.got)
		r.mu.Unlock()
		status := http.StatusOK
		if r.code != nil {
			status = r.code(n)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// cloudClient is a real ezclient.Client pointed at the engine.
func cloudClient(t *testing.T, e *Engine, opts ...ezclient.Option) *ezclient.Client {
	t.Helper()
	c, err := ezclient.New(append([]ezclient.Option{
		ezclient.WithAPIKey(e.APIKey()), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()),
		ezclient.WithRetry(1, 0, 0),
	}, opts...)...)
	require.NoError(t, err)
	return c
}

// submit submits job through the real client and waits for it to settle.
func submitWait(t *testing.T, e *Engine, job *ezclient.Job) JobInfo {
	t.Helper()
	sub, err := cloudClient(t, e).Submit(context.Background(), job)
	require.NoError(t, err)
	return waitJob(t, e, sub.JobID)
}

func waitJob(t *testing.T, e *Engine, id string) JobInfo {
	t.Helper()
	// The deadline only guards against a hung test; nothing is timed.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := e.WaitJob(ctx, id)
	require.NoError(t, err, "job %s events: %v", id, info.Events)
	return info
}

// proxyCall posts a raw envelope to the engine's proxy.
func proxyCall(t *testing.T, e *Engine, key string, envelope any) (int, map[string]any) {
	t.Helper()
	var body []byte
	switch v := envelope.(type) {
	case []byte:
		body = v
	case string:
		body = []byte(v)
	default:
		var err error
		body, err = json.Marshal(v)
		require.NoError(t, err)
	}
	req, err := http.NewRequest(http.MethodPost, e.URL()+"/api/v1/proxy", bytes.NewReader(body))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", key)
	}
	return doJSON(t, req)
}

func doJSON(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), "body %q", b)
	return resp.StatusCode, m
}

// envelope builds a proxy envelope for the engine.
func envelope(e *Engine, method, path, body string) map[string]any {
	return map[string]any{
		"scope": "customer", "metric_name": "", "target_url": e.URL() + path,
		"method": method, "headers": map[string]string{"Content-Type": "application/json"}, "body": body,
	}
}

// forwarded decodes a proxy reply's forwarded_response.
func forwarded(t *testing.T, m map[string]any) (int, map[string]any) {
	t.Helper()
	require.Equal(t, "allowed", m["status"])
	fr, ok := m["forwarded_response"].(map[string]any)
	require.True(t, ok, "forwarded_response: %v", m)
	s, ok := fr["body"].(string)
	require.True(t, ok, "forwarded_response.body must be a JSON string: %v", fr["body"])
	var inner map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &inner))
	return int(fr["status_code"].(float64)), inner
}

func types(evs []Event) []EventType {
	out := make([]EventType, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

// okServer answers 200 with a small JSON body.
func okServer(t *testing.T) *httptest.Server {
	return server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
}
