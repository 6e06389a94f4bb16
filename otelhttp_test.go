package ezthrottle_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// The Transport composes with otelhttp in both orders; forwarding and the
// synthetic 202 work either way.
func TestComposesWithOtelhttp(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, "busy"), nil })
	for name, build := range map[string]func(sub ezthrottle.Submitter) http.RoundTripper{
		"otelhttp outside": func(sub ezthrottle.Submitter) http.RoundTripper {
			return otelhttp.NewTransport(mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub),
				ezthrottle.WithDefaultLimit(ezthrottle.Unlimited())))
		},
		"otelhttp inside": func(sub ezthrottle.Submitter) http.RoundTripper {
			return mustNew(t, ezthrottle.WithBase(otelhttp.NewTransport(base)), ezthrottle.WithForwarding(sub),
				ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
		},
	} {
		t.Run(name, func(t *testing.T) {
			sub := &fakeSubmitter{}
			hc := &http.Client{Transport: build(sub)}
			req, err := http.NewRequestWithContext(context.Background(), "GET", "https://api.test/x", nil)
			require.NoError(t, err)
			resp, err := hc.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, 202, resp.StatusCode)
			assert.True(t, ezthrottle.IsForwarded(resp))
			assert.Len(t, sub.Jobs(), 1)
		})
	}
}
