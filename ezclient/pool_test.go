package ezclient

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// connServer is a fake Cloud proxy accepting every submission, which
// counts the connections clients open and close.
type connServer struct {
	*httptest.Server
	opened, closed atomic.Int64
}

func newConnServer(tb testing.TB) *connServer {
	tb.Helper()
	s := &connServer{}
	reply := fxForward(201, `{"job_id":"j","status":"queued"}`)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, reply.body)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed.Add(1)
		}
	}
	s.Start()
	tb.Cleanup(s.Close)
	return s
}

// storm submits n jobs from workers goroutines at once.
func storm(tb testing.TB, c *Client, n, workers int) {
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(n))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if _, err := c.Submit(context.Background(), fxJob()); err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// The default client keeps the connections of a burst of concurrent
// submissions for the next one (issue 18 item 5: over http.DefaultTransport
// only 2 were kept, and each burst opened new connections for the rest).
func TestDefaultClientPoolsConnections(t *testing.T) {
	srv := newConnServer(t)
	c, err := New(withGetenv(fxNoEnv), WithAPIKey(fxKey), WithProxyURL(srv.URL), WithEngineURL(fxEngineURL))
	require.NoError(t, err)
	const conc, bursts = 32, 10
	for range bursts {
		storm(t, c, conc, conc)
	}
	// Each burst needs at most conc connections; a pool that keeps them
	// opens hardly any after the first burst (racing dials may add a few).
	assert.LessOrEqual(t, srv.opened.Load(), int64(2*conc), "connections opened for %d bursts of %d", bursts, conc)

	// CloseIdleConnections releases them all.
	c.CloseIdleConnections()
	require.Eventually(t, func() bool { return srv.closed.Load() == srv.opened.Load() }, 20*time.Second, time.Millisecond)
}

func TestNewHTTPTransport(t *testing.T) {
	tr := NewHTTPTransport()
	def := http.DefaultTransport.(*http.Transport)
	assert.NotSame(t, def, tr)
	assert.Equal(t, DefaultMaxIdleConnsPerHost, tr.MaxIdleConnsPerHost)
	assert.Equal(t, DefaultMaxIdleConns, tr.MaxIdleConns)
	// Everything else is http.DefaultTransport's, which is left alone.
	assert.Equal(t, def.IdleConnTimeout, tr.IdleConnTimeout)
	assert.Equal(t, def.TLSHandshakeTimeout, tr.TLSHandshakeTimeout)
	assert.Equal(t, def.ForceAttemptHTTP2, tr.ForceAttemptHTTP2)
	assert.NotNil(t, tr.Proxy)
	assert.Zero(t, def.MaxIdleConnsPerHost)
	assert.Equal(t, 100, def.MaxIdleConns)
	assert.NotSame(t, tr, NewHTTPTransport(), "each call returns a transport of its own")
}

// BenchmarkSubmitStorm sends storms of 2,000 submissions from 64
// goroutines through one client, with the default pool and with
// http.DefaultTransport's (2 idle connections per host, the previous
// default), and reports the connections each storm opens.
//
//	go test -run '^$' -bench SubmitStorm -benchtime 20x ./ezclient/
func BenchmarkSubmitStorm(b *testing.B) {
	for _, tc := range []struct {
		name string
		tr   func() *http.Transport
	}{
		{"pool=2(http.DefaultTransport)", func() *http.Transport { return http.DefaultTransport.(*http.Transport).Clone() }},
		{fmt.Sprintf("pool=%d(default)", DefaultMaxIdleConnsPerHost), NewHTTPTransport},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n, workers = 2000, 64
			srv := newConnServer(b)
			tr := tc.tr()
			defer tr.CloseIdleConnections()
			c, err := New(withGetenv(fxNoEnv), WithAPIKey(fxKey), WithProxyURL(srv.URL), WithEngineURL(fxEngineURL),
				WithHTTPClient(&http.Client{Transport: tr, Timeout: 30 * time.Second}), WithRetry(1, 0, 0))
			if err != nil {
				b.Fatal(err)
			}
			storm(b, c, n, workers) // warm up: the first storm opens what the pool will keep
			start := srv.opened.Load()
			b.ResetTimer()
			for range b.N {
				storm(b, c, n, workers)
			}
			b.StopTimer()
			b.ReportMetric(float64(srv.opened.Load()-start)/float64(b.N), "conns/storm")
		})
	}
}
