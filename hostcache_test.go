package ezthrottle_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// TestHostCacheKeys alternates hosts and schemes so that the Transport's
// host cache (its last-resolved entry and its shards) is hit and missed:
// every request must be throttled under its own host key.
func TestHostCacheKeys(t *testing.T) {
	tr, err := ezthrottle.New(ezthrottle.WithBase(benchBase{}), ezthrottle.WithDefaultLimit(benchLimit))
	require.NoError(t, err)
	ml := tr.Limiter().(*ezthrottle.MemoryLimiter)
	urls := []struct{ url, key string }{
		{"https://A.example.com/x", "https://a.example.com:443"},
		{"http://A.example.com/x", "http://a.example.com:80"},
		{"https://b.example.com:8443/x", "https://b.example.com:8443"},
		{"https://A.example.com/y", "https://a.example.com:443"},
		{"https://a.example.com/x", "https://a.example.com:443"},
		{"http://A.example.com/z", "http://a.example.com:80"},
	}
	want := map[string]int{}
	var open []*http.Response
	for _, u := range urls {
		req, err := http.NewRequest(http.MethodGet, u.url, nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		open = append(open, resp)
		want[u.key]++
		for key, n := range want {
			s, ok := ml.Stats(key)
			require.True(t, ok, key)
			assert.Equal(t, n, s.InFlight, "after %s: %s", u.url, key)
		}
	}
	for _, resp := range open {
		require.NoError(t, resp.Body.Close())
	}
	for key := range want {
		s, _ := ml.Stats(key)
		assert.Zero(t, s.InFlight, key)
	}
	assert.Equal(t, 3, ml.Len())
}
