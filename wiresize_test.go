package ezthrottle_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// TestForwardBodyLimitOnTheWire: the Transport's forward-size limit is
// measured as the body travels (JSON-escaped twice inside the envelope),
// like the client's envelope limit. A body that cannot fit is not
// attempted, and the caller gets the original response, intact (issue 13
// item 9).
func TestForwardBodyLimitOnTheWire(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		getBody  bool
		opts     []ezthrottle.Option
		wantIs   error
		wantSent bool
	}{
		{name: "256 KiB of quotes, default limit", body: strings.Repeat(`"`, 256<<10), wantIs: ezthrottle.ErrBodyTooLarge},
		{name: "256 KiB of quotes with GetBody", body: strings.Repeat(`"`, 256<<10), getBody: true, wantIs: ezthrottle.ErrBodyTooLarge},
		{name: "control characters", body: strings.Repeat("\x01", 40<<10), wantIs: ezthrottle.ErrBodyTooLarge},
		{name: "newlines at the limit", body: strings.Repeat("\n", 1000), opts: []ezthrottle.Option{ezthrottle.WithMaxForwardBody(3000)}, wantSent: true},
		{name: "newlines one over", body: strings.Repeat("\n", 1000) + "a", opts: []ezthrottle.Option{ezthrottle.WithMaxForwardBody(3000)}, wantIs: ezthrottle.ErrBodyTooLarge},
		{name: "plain text at the default limit", body: strings.Repeat("a", ezthrottle.DefaultMaxForwardBody), wantSent: true},
		// A limit raised past what the envelope can hold: the client
		// refuses before sending, and the caller still gets the original.
		{name: "raised limit, envelope over 1 MiB", body: strings.Repeat(`\`, 300<<10), opts: []ezthrottle.Option{ezthrottle.WithMaxForwardBody(4 << 20)}, wantIs: ezclient.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine, client := newEngine(t)
			const upstreamBody = `{"error":"slow down"}`
			base := rtFunc(func(r *http.Request) (*http.Response, error) {
				_, _ = io.Copy(io.Discard, r.Body)
				return respond(r, http.StatusTooManyRequests, upstreamBody, "X-Upstream", "yes"), nil
			})
			tr := mustNew(t, append([]ezthrottle.Option{ezthrottle.WithBase(base), ezthrottle.WithClient(client),
				ezthrottle.WithDefaultLimit(ezthrottle.Unlimited())}, tt.opts...)...)
			req := newReq(t, context.Background(), http.MethodPut, "https://api.test/x", io.NopCloser(strings.NewReader(tt.body)))
			if tt.getBody {
				req.ContentLength = int64(len(tt.body))
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(tt.body)), nil }
			}
			ctx, receipt := ezthrottle.WithReceipt(req.Context())
			resp, err := tr.RoundTrip(req.WithContext(ctx))
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tt.wantSent, len(engine.Jobs()) > 0)
			if tt.wantSent {
				assert.Equal(t, http.StatusAccepted, resp.StatusCode)
				require.NoError(t, receipt.Err())
				return
			}
			assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the original response")
			assert.Equal(t, "yes", resp.Header.Get("X-Upstream"))
			b, _ := io.ReadAll(resp.Body)
			assert.True(t, bytes.Equal([]byte(upstreamBody), b), "the original body, intact")
			assert.False(t, receipt.Forwarded())
			assert.ErrorIs(t, receipt.Err(), tt.wantIs)
		})
	}
}
