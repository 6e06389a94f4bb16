package redislimit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// The Transport's live view works over the Redis limiter: it shows what
// this process saw (learned pace, the pause and its cause, outcomes), not
// the limiter's shared state.
func TestTransportLiveViewWithRedis(t *testing.T) {
	rdb := newClient(t, redisAddr(t))
	l := newTestLimiter(t, rdb, WithPrefix(testPrefix(t)))
	var limited atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if limited.Load() {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("X-EZTHROTTLE-RPS", "50")
	}))
	defer up.Close()
	tr, err := ezthrottle.New(ezthrottle.WithLimiter(l), ezthrottle.WithPauseJitter(0))
	require.NoError(t, err)
	tr.EnableLive()
	get := func() {
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(up.URL)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	limited.Store(true)
	get()

	s := tr.LiveSnapshot()
	assert.Equal(t, "redislimit.Limiter", s.Limiter)
	u, _ := url.Parse(up.URL)
	var h *ezthrottle.LiveHost
	for i := range s.Hosts {
		if s.Hosts[i].Key == ezthrottle.HostKey(u) {
			h = &s.Hosts[i]
		}
	}
	require.NotNil(t, h)
	assert.False(t, h.HasState)
	assert.Equal(t, int64(2), h.Admitted)
	assert.Equal(t, 50.0, h.LearnedRate)
	assert.True(t, h.Paused)
	require.NotNil(t, h.PauseCause)
	assert.Equal(t, "Retry-After", h.PauseCause.Header)
}
