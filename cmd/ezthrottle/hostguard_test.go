package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDevAllowedHost: 'ezthrottle dev' refuses a forged Host header (DNS
// rebinding) on its loopback address, and --allowed-host adds names.
func TestDevAllowedHost(t *testing.T) {
	dev := background(t, env{}, "dev", "--addr", "127.0.0.1:0", "--allowed-host", "ezlocal,dev.internal:8787", "--allowed-host", "other")
	engine := dev.out.waitFor(t, `export EZTHROTTLE_URL=(\S+)`)
	for host, want := range map[string]int{
		"": http.StatusOK, "localhost": http.StatusOK, "ezlocal:8787": http.StatusOK, "dev.internal": http.StatusOK, "other": http.StatusOK,
		"evil.example": http.StatusForbidden, "evil.example:8787": http.StatusForbidden,
	} {
		req, err := http.NewRequest(http.MethodGet, engine+"/ui/api/overview", nil)
		require.NoError(t, err)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, "Host %q", host)
	}
	http.DefaultClient.CloseIdleConnections()
	assert.Equal(t, 0, dev.stop())

	code, _, errs := exec(t, context.Background(), env{}, "", "dev", "--allowed-host", "http://ezlocal")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "--allowed-host")
}
