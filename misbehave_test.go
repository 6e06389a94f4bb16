package ezthrottle_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// A broken base RoundTripper or Limiter (nil values where the contract
// promises one) fails the request with an error, as http.Client does: no
// panic, the slot freed, the request body closed.
func TestMisbehavingBase(t *testing.T) {
	limit := ezthrottle.Limit{Rate: 1e9, Burst: 100, MaxInFlight: 1}
	tests := []struct {
		name    string
		base    func(*http.Request) (*http.Response, error)
		fwd     bool
		wantErr error
		status  int
	}{
		{name: "nil response, nil error", base: func(*http.Request) (*http.Response, error) { return nil, nil },
			wantErr: ezthrottle.ErrNilResponse},
		{name: "nil response, nil error, forwarding on", fwd: true,
			base: func(*http.Request) (*http.Response, error) { return nil, nil }, wantErr: ezthrottle.ErrNilResponse},
		{name: "nil body and header", base: func(r *http.Request) (*http.Response, error) {
			closeRequestBody(r)
			return &http.Response{StatusCode: 200, Request: r}, nil
		}, status: 200},
		{name: "nil body and header on a forwarding status", fwd: true, base: func(r *http.Request) (*http.Response, error) {
			closeRequestBody(r)
			return &http.Response{StatusCode: 429, Request: r}, nil
		}, status: 202},
		{name: "response with an error", base: func(r *http.Request) (*http.Response, error) {
			return respond(r, 200, "ignored"), errors.New("boom")
		}},
	}
	for _, tt := range tests {
		for _, viaClient := range []bool{false, true} {
			name := tt.name
			if viaClient {
				name += " via http.Client"
			}
			t.Run(name, func(t *testing.T) {
				opts := []ezthrottle.Option{ezthrottle.WithDefaultLimit(limit), ezthrottle.WithBase(rtFunc(tt.base))}
				if tt.fwd {
					opts = append(opts, ezthrottle.WithForwarding(&fakeSubmitter{}))
				}
				tr := mustNew(t, opts...)
				body := newTrackedBody("payload")
				req := newReq(t, context.Background(), http.MethodPost, reviewURL, body)
				var (
					resp *http.Response
					err  error
				)
				if viaClient {
					resp, err = (&http.Client{Transport: tr}).Do(req)
				} else {
					resp, err = tr.RoundTrip(req)
				}
				if tt.status == 0 {
					require.Error(t, err)
					assert.Nil(t, resp)
					if tt.wantErr != nil {
						assert.ErrorIs(t, err, tt.wantErr)
						assert.Contains(t, err.Error(), "ezthrottle_test.rtFunc", "the error names the base")
					}
				} else {
					require.NoError(t, err)
					assert.Equal(t, tt.status, resp.StatusCode)
					require.NotNil(t, resp.Body)
					require.NotNil(t, resp.Header)
					require.NoError(t, resp.Body.Close())
				}
				assert.True(t, body.Closed(), "the request body is closed")
				assert.Equal(t, 0, reviewInFlight(t, tr), "the slot is free")
			})
		}
	}
}

// closeRequestBody reads and closes the request body, as a base that sent
// it does.
func closeRequestBody(r *http.Request) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
}

// nilLimiter grants a nil Permit, or a Permit together with an error.
type nilLimiter struct {
	permit *countPermit
	err    error
}

type countPermit struct{ released int }

func (p *countPermit) Release() { p.released++ }

func (l nilLimiter) Acquire(context.Context, ezthrottle.Admission) (ezthrottle.Permit, error) {
	if l.permit == nil {
		return nil, l.err
	}
	return l.permit, l.err
}
func (nilLimiter) Learn(context.Context, string, ezthrottle.Signals) {}

func TestMisbehavingLimiter(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "ok"), nil })
	t.Run("nil Permit, nil error", func(t *testing.T) {
		tr := mustNew(t, ezthrottle.WithLimiter(nilLimiter{}), ezthrottle.WithBase(base))
		body := newTrackedBody("payload")
		resp, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodPost, reviewURL, body))
		require.ErrorIs(t, err, ezthrottle.ErrNilPermit)
		assert.Nil(t, resp)
		assert.True(t, body.Closed())
	})
	t.Run("Permit with an error is released", func(t *testing.T) {
		p := &countPermit{}
		boom := errors.New("limiter store down")
		tr := mustNew(t, ezthrottle.WithLimiter(nilLimiter{permit: p, err: boom}), ezthrottle.WithBase(base))
		body := newTrackedBody("payload")
		resp, err := tr.RoundTrip(newReq(t, context.Background(), http.MethodPost, reviewURL, body))
		require.ErrorIs(t, err, boom)
		assert.Nil(t, resp)
		assert.True(t, body.Closed())
		assert.Equal(t, 1, p.released)
	})
	t.Run("nil Permit under telemetry", func(t *testing.T) {
		k := newOtelKit(t)
		tr := mustNew(t, append(k.opts(), ezthrottle.WithLimiter(nilLimiter{}), ezthrottle.WithBase(base))...)
		ctx, caller := k.caller("call")
		defer caller.End()
		resp, err := get(t, tr, ctx, strings.Replace(reviewURL, "things", "x", 1))
		require.ErrorIs(t, err, ezthrottle.ErrNilPermit)
		assert.Nil(t, resp)
	})
}
