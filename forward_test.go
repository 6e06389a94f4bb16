package ezthrottle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/testnet"
)

func newEngine(t *testing.T) (*engineFake, *ezclient.Client) {
	t.Helper()
	e := &engineFake{}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	c, err := ezclient.New(ezclient.WithAPIKey("test-key-123456"), ezclient.WithProxyURL(srv.URL),
		ezclient.WithEngineURL("https://engine.test"), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	return e, c
}

// upstream429 answers every request with a 429 and records what it got.
type upstream struct {
	status int
	body   string
	header []string
	got    chan recorded
}

type recorded struct {
	method, url string
	header      http.Header
	body        []byte
}

func newUpstream(t *testing.T, status int, body string, header ...string) (*upstream, *httptest.Server) {
	u := &upstream{status: status, body: body, header: header, got: make(chan recorded, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.got <- recorded{r.Method, r.URL.String(), r.Header.Clone(), b}
		for i := 0; i+1 < len(u.header); i += 2 {
			w.Header().Set(u.header[i], u.header[i+1])
		}
		w.WriteHeader(u.status)
		io.WriteString(w, u.body)
	}))
	t.Cleanup(srv.Close)
	return u, srv
}

func TestEndToEnd429BecomesJob(t *testing.T) {
	engine, client := newEngine(t)
	up, srv := newUpstream(t, 429, `{"error":"rate limited"}`)
	hc, err := ezthrottle.Wrap(srv.Client(), ezthrottle.WithClient(client,
		ezthrottle.JobWebhook("https://app.test/hook"), ezthrottle.JobRegions(ezclient.RegionIAD, ezclient.RegionLAX)),
		ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	require.NoError(t, err)

	body := "{\"amount\":1000,\"note\":\"caf\u00e9 & <b>\"}"
	target := srv.URL + "/v1/charges?expand[]=customer&x=%2F"
	req, err := http.NewRequest("POST", target, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk_test_abc")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "order-42")
	req.Header.Add("X-Multi", "a")
	req.Header.Add("X-Multi", "b")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "drop me")
	req.Header.Set("Keep-Alive", "timeout=5")
	before := snapshot(req)

	resp, err := hc.Do(req)
	require.NoError(t, err)
	<-up.got
	assertUnchanged(t, before, req)

	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	assert.Equal(t, "202 Accepted", resp.Status)
	assert.Equal(t, "HTTP/1.1", resp.Proto)
	assert.True(t, resp.Request != nil)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, "job_1", resp.Header.Get(ezthrottle.HeaderJobID))
	assert.Equal(t, "order-42", resp.Header.Get(ezthrottle.HeaderIdempotentKey))
	assert.Equal(t, "status", resp.Header.Get(ezthrottle.HeaderForwardedReason))
	assert.Equal(t, "429", resp.Header.Get(ezthrottle.HeaderUpstreamStatus))
	rb := readAll(t, resp.Body)
	assert.Equal(t, int64(len(rb)), resp.ContentLength)
	assert.JSONEq(t, `{"job_id":"job_1","idempotent_key":"order-42","status":"queued"}`, rb)
	assert.True(t, ezthrottle.IsForwarded(resp))
	info, ok := ezthrottle.JobFromResponse(resp)
	require.True(t, ok)
	assert.Equal(t, "job_1", info.JobID())
	assert.Equal(t, ezthrottle.ReasonStatus, info.Reason)
	assert.Equal(t, 429, info.UpstreamStatus)

	jobs := engine.Jobs()
	require.Len(t, jobs, 1)
	j := jobs[0]
	assert.Equal(t, "POST", j["method"])
	assert.Equal(t, target, j["url"])
	assert.Equal(t, body, j["body"], "exact body bytes")
	assert.Equal(t, "order-42", j["idempotent_key"])
	hdrs := j["headers"].(map[string]any)
	assert.Equal(t, "Bearer sk_test_abc", hdrs["Authorization"], "Authorization is kept by default")
	assert.Equal(t, "application/json", hdrs["Content-Type"])
	assert.Equal(t, "a, b", hdrs["X-Multi"])
	assert.NotContains(t, hdrs, "Connection")
	assert.NotContains(t, hdrs, "Keep-Alive")
	assert.NotContains(t, hdrs, "X-Hop")
	assert.Equal(t, []any{map[string]any{"url": "https://app.test/hook"}}, j["webhooks"])
	assert.Equal(t, []any{"iad", "lax"}, j["regions"])
	// The raw job JSON carries the body byte for byte (no HTML escaping).
	assert.Contains(t, engine.raw[0], `caf`+"\u00e9"+` & <b>`)
}

func TestEndToEndSelfHostedDerivesHashKey(t *testing.T) {
	var gotKey string
	eng := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var j map[string]any
		_ = json.NewDecoder(r.Body).Decode(&j)
		gotKey, _ = j["idempotent_key"].(string)
		w.WriteHeader(201)
		io.WriteString(w, `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued"}`)
	}))
	defer eng.Close()
	client, err := ezclient.New(ezclient.WithSelfHosted(eng.URL, "user-1"), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	_, srv := newUpstream(t, 503, "down")
	tr := mustNew(t, ezthrottle.WithBase(srv.Client().Transport), ezthrottle.WithClient(client, ezthrottle.JobWebhook("https://app.test/h")),
		ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", srv.URL+"/status", nil))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 202, resp.StatusCode)
	want := ezclient.HashKey("user-1", "GET", srv.URL+"/status", nil)
	assert.Equal(t, want, gotKey, "HASH on self-hosted: ezclient derives the documented key")
	assert.Equal(t, want, resp.Header.Get(ezthrottle.HeaderIdempotentKey))
}

// TestFaultMatrix: whenever forwarding is impossible or fails, the caller
// gets exactly what the upstream gave, and the failure is observable.
func TestFaultMatrix(t *testing.T) {
	type tc struct {
		name     string
		engine   func(e *engineFake) // engine behaviour
		down     bool                // engine unreachable
		method   string
		body     func() io.ReadCloser
		getBody  bool
		opts     []ezthrottle.Option
		status   int
		wantIs   error
		wantSent bool // a job reached the engine
	}
	tests := []tc{
		{name: "engine down", down: true, method: "GET", status: 429, wantIs: nil},
		{name: "engine 4xx", engine: func(e *engineFake) { e.status = 400 }, method: "GET", status: 500, wantIs: ezclient.ErrValidation, wantSent: true},
		{name: "engine rate limited", engine: func(e *engineFake) {
			e.proxy = 429
			e.reply = `{"status":"denied","error":"Plan limit exceeded","retry_after":60}`
		},
			method: "GET", status: 429, wantIs: ezclient.ErrRateLimited, wantSent: true},
		{name: "unauthorized", engine: func(e *engineFake) { e.proxy = 401; e.reply = `{"error":"Unauthorized"}` },
			method: "GET", status: 502, wantIs: ezclient.ErrUnauthorized, wantSent: true},
		{name: "body too large", method: "PUT", body: func() io.ReadCloser { return io.NopCloser(strings.NewReader(strings.Repeat("x", 2048))) },
			opts: []ezthrottle.Option{ezthrottle.WithMaxForwardBody(1024)}, status: 503, wantIs: ezthrottle.ErrBodyTooLarge},
		{name: "body too large with GetBody", method: "PUT", body: func() io.ReadCloser { return io.NopCloser(strings.NewReader(strings.Repeat("x", 2048))) }, getBody: true,
			opts: []ezthrottle.Option{ezthrottle.WithMaxForwardBody(1024)}, status: 503, wantIs: ezthrottle.ErrBodyTooLarge},
		{name: "body not UTF-8", method: "PUT", body: func() io.ReadCloser { return io.NopCloser(bytes.NewReader([]byte{0xff, 0xfe, 0x00})) },
			status: 429, wantIs: ezthrottle.ErrBodyNotUTF8},
		{name: "write not safe to replay", method: "POST", body: func() io.ReadCloser { return io.NopCloser(strings.NewReader("{}")) },
			status: 500, wantIs: ezthrottle.ErrUnsafeReplay},
		{name: "PATCH 503 without Retry-After", method: "PATCH", body: func() io.ReadCloser { return io.NopCloser(strings.NewReader("{}")) },
			status: 503, wantIs: ezthrottle.ErrUnsafeReplay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine, client := newEngine(t)
			if tt.engine != nil {
				tt.engine(engine)
			}
			if tt.down {
				var err error
				client, err = ezclient.New(ezclient.WithAPIKey("test-key-123456"), ezclient.WithProxyURL("http://"+testnet.RefusedAddr(t)), ezclient.WithRetry(1, 0, 0))
				require.NoError(t, err)
			}
			upstreamBody := `{"error":"upstream said no"}`
			var tracked *trackedBody
			base := rtFunc(func(r *http.Request) (*http.Response, error) {
				resp := respond(r, tt.status, upstreamBody, "X-Upstream", "yes")
				tracked = resp.Body.(*trackedBody)
				return resp, nil
			})
			opts := append([]ezthrottle.Option{ezthrottle.WithBase(base), ezthrottle.WithClient(client),
				ezthrottle.WithDefaultLimit(ezthrottle.Unlimited())}, tt.opts...)
			tr := mustNew(t, opts...)
			var reqBody *trackedBody
			var req *http.Request
			if tt.body != nil {
				b, _ := io.ReadAll(tt.body())
				reqBody = &trackedBody{r: bytes.NewReader(b)}
				req = newReq(t, context.Background(), tt.method, "https://api.test/x", reqBody)
				if tt.getBody {
					req.ContentLength = int64(len(b))
					req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
				}
			} else {
				req = newReq(t, context.Background(), tt.method, "https://api.test/x", nil)
			}
			ctx, receipt := ezthrottle.WithReceipt(req.Context())
			req = req.WithContext(ctx)
			before := snapshot(req)

			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			assertUnchanged(t, before, req)
			assert.Equal(t, tt.status, resp.StatusCode, "the original response")
			assert.Equal(t, "yes", resp.Header.Get("X-Upstream"))
			assert.Equal(t, upstreamBody, readAll(t, resp.Body), "the original body, intact")
			assert.True(t, tracked.Closed())
			if reqBody != nil {
				assert.True(t, reqBody.Closed(), "request body closed")
			}
			assert.False(t, receipt.Forwarded())
			require.Error(t, receipt.Err(), "the forwarding failure is observable")
			var ffe *ezthrottle.ForwardFailedError
			require.ErrorAs(t, receipt.Err(), &ffe)
			assert.Equal(t, ezthrottle.ReasonStatus, ffe.Reason)
			if tt.wantIs != nil {
				assert.ErrorIs(t, receipt.Err(), tt.wantIs)
			}
			if tt.down {
				assert.True(t, ezclient.IsUnreachable(receipt.Err()))
			}
			assert.Equal(t, tt.wantSent, len(engine.Jobs()) > 0)
		})
	}
}

func TestNetworkErrors(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	resetErr := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	tests := []struct {
		name        string
		method      string
		idemKey     bool
		err         error
		forwarded   bool
		failedIs    error
		forwardOpts []ezthrottle.Option
	}{
		{name: "GET reset", method: "GET", err: resetErr, forwarded: true},
		{name: "POST dial refused: never sent, safe", method: "POST", err: dialErr, forwarded: true},
		{name: "POST reset without key: unsafe", method: "POST", err: resetErr, failedIs: ezthrottle.ErrUnsafeReplay},
		{name: "POST reset with Idempotency-Key", method: "POST", idemKey: true, err: resetErr, forwarded: true},
		{name: "POST reset, all writes opted in", method: "POST", err: resetErr, forwarded: true,
			forwardOpts: []ezthrottle.Option{ezthrottle.WithForwardUnsafeWrites()}},
		{name: "unexpected EOF", method: "GET", err: io.ErrUnexpectedEOF, forwarded: true},
		{name: "not a network error", method: "GET", err: errors.New("unsupported protocol scheme")},
		{name: "network forwarding off", method: "GET", err: resetErr,
			forwardOpts: []ezthrottle.Option{ezthrottle.WithForwardOnNetworkError(false)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := &fakeSubmitter{}
			base := rtFunc(func(r *http.Request) (*http.Response, error) {
				if r.Body != nil {
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
				}
				return nil, tt.err
			})
			tr := mustNew(t, append([]ezthrottle.Option{ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub),
				ezthrottle.WithDefaultLimit(ezthrottle.Unlimited())}, tt.forwardOpts...)...)
			var body *trackedBody
			req := newReq(t, context.Background(), tt.method, "https://api.test/x", nil)
			if tt.method == "POST" {
				body = newTrackedBody(`{"a":1}`)
				req = newReq(t, context.Background(), tt.method, "https://api.test/x", body)
			}
			if tt.idemKey {
				req.Header.Set("Idempotency-Key", "k1")
			}
			resp, err := tr.RoundTrip(req)
			if body != nil {
				assert.True(t, body.Closed())
			}
			if tt.forwarded {
				require.NoError(t, err)
				assert.Equal(t, 202, resp.StatusCode)
				assert.Equal(t, string(ezthrottle.ReasonNetworkError), resp.Header.Get(ezthrottle.HeaderForwardedReason))
				resp.Body.Close()
				jobs := sub.Jobs()
				require.Len(t, jobs, 1)
				if body != nil {
					assert.Equal(t, `{"a":1}`, jobs[0].Body, "the body captured while sent")
				}
				return
			}
			require.Nil(t, resp)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.err, "the original error")
			if tt.failedIs != nil {
				assert.ErrorIs(t, err, tt.failedIs, "the forwarding failure is joined")
			}
			assert.Empty(t, sub.Jobs())
		})
	}
}

func TestCallerCancellationNotForwarded(t *testing.T) {
	sub := &fakeSubmitter{}
	ctx, cancel := context.WithCancel(context.Background())
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		cancel()
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: context.Canceled}
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	_, err := tr.RoundTrip(newReq(t, ctx, "GET", "https://api.test/", nil))
	require.Error(t, err)
	assert.Empty(t, sub.Jobs())
}

func TestOverflowIsForwarded(t *testing.T) {
	clk := newFakeClock()
	sub := &fakeSubmitter{}
	var calls int
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		return respond(r, 200, "ok"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithForwarding(sub),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 0.1, Burst: 1}))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://api.test/", nil))
	require.NoError(t, err)
	resp.Body.Close()

	body := newTrackedBody(`{"n":2}`)
	req := newReq(t, deadlineCtx(t, clk.Now().Add(time.Second)), "POST", "https://api.test/items", body)
	ctx, receipt := ezthrottle.WithReceipt(req.Context())
	req = req.WithContext(ctx)
	resp, err = tr.RoundTrip(req)
	require.NoError(t, err)
	assert.Equal(t, 202, resp.StatusCode)
	assert.Equal(t, string(ezthrottle.ReasonOverflow), resp.Header.Get(ezthrottle.HeaderForwardedReason))
	assert.Empty(t, resp.Header.Get(ezthrottle.HeaderUpstreamStatus))
	resp.Body.Close()
	assert.Equal(t, 1, calls, "an overflowing request is never sent upstream")
	assert.True(t, body.Closed())
	jobs := sub.Jobs()
	require.Len(t, jobs, 1)
	assert.Equal(t, "POST", jobs[0].Method, "a write that was never sent is safe to forward")
	assert.Equal(t, `{"n":2}`, jobs[0].Body)
	info, ok := receipt.Info()
	require.True(t, ok)
	assert.Equal(t, ezthrottle.ReasonOverflow, info.Reason)
	assert.Equal(t, "job_1", receipt.JobID())

	// Forwarding fails: the throttle error is returned, joined with the failure.
	sub.err = &ezclient.RateLimitError{StatusCode: 429, Message: "plan"}
	_, err = tr.RoundTrip(newReq(t, deadlineCtx(t, clk.Now().Add(time.Second)), "GET", "https://api.test/", nil))
	require.Error(t, err)
	assert.ErrorIs(t, err, ezthrottle.ErrThrottled)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, ezclient.ErrRateLimited)

	// Overflow forwarding can be turned off.
	tr2 := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithForwarding(&fakeSubmitter{}),
		ezthrottle.WithLimiter(tr.Limiter()), ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 0.1, Burst: 1}),
		ezthrottle.WithForwardOnOverflow(false))
	_, err = tr2.RoundTrip(newReq(t, deadlineCtx(t, clk.Now().Add(time.Second)), "GET", "https://api.test/", nil))
	assert.ErrorIs(t, err, ezthrottle.ErrThrottled)
}

func TestForwardingSuppressed(t *testing.T) {
	clk := newFakeClock()
	sub := &fakeSubmitter{}
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, "busy", "Retry-After", "1"), nil })
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithClock(clk), ezthrottle.WithForwarding(sub),
		ezthrottle.WithPauseJitter(0), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	ctx := ezclient.SuppressForwarding(context.Background())
	resp, err := tr.RoundTrip(newReq(t, ctx, "GET", "https://api.test/", nil))
	require.NoError(t, err)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, "busy", readAll(t, resp.Body))
	assert.Empty(t, sub.Jobs(), "a suppressed request is never forwarded")

	// It is still throttled: the Retry-After pause applies to it, and an
	// overflow fails instead of forwarding.
	_, err = tr.RoundTrip(newReq(t, ezclient.SuppressForwarding(deadlineCtx(t, clk.Now().Add(500*time.Millisecond))), "GET", "https://api.test/", nil))
	assert.ErrorIs(t, err, ezthrottle.ErrThrottled)
	assert.Empty(t, sub.Jobs())

	// Network errors are not forwarded either.
	tr2 := mustNew(t, ezthrottle.WithBase(rtFunc(func(*http.Request) (*http.Response, error) { return nil, io.ErrUnexpectedEOF })),
		ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	_, err = tr2.RoundTrip(newReq(t, ezclient.SuppressForwarding(context.Background()), "GET", "https://api.test/", nil))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Empty(t, sub.Jobs())
}

func TestForwardedErrorOption(t *testing.T) {
	sub := &fakeSubmitter{}
	var upstreamBody *trackedBody
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		resp := respond(r, 502, strings.Repeat("z", 100))
		upstreamBody = resp.Body.(*trackedBody)
		return resp, nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub), ezthrottle.WithForwardedError(),
		ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get("https://api.test/models")
	require.Nil(t, resp)
	var fe *ezthrottle.ForwardedError
	require.ErrorAs(t, err, &fe)
	assert.ErrorIs(t, err, ezthrottle.ErrForwarded)
	assert.Equal(t, "job_1", fe.Submission.JobID)
	assert.Equal(t, 502, fe.UpstreamStatus)
	assert.Contains(t, err.Error(), "job_1")
	assert.True(t, upstreamBody.Closed(), "the discarded upstream response is closed")
	assert.Equal(t, int64(100), upstreamBody.read.Load(), "and drained")
}

func TestDiscardedResponseDrainedAndClosed(t *testing.T) {
	sub := &fakeSubmitter{}
	var upstreamBody *trackedBody
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		resp := respond(r, 429, "retry later")
		upstreamBody = resp.Body.(*trackedBody)
		return resp, nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1e9, MaxInFlight: 1}))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://api.test/", nil))
	require.NoError(t, err)
	assert.Equal(t, 202, resp.StatusCode)
	assert.True(t, upstreamBody.Closed())
	assert.Equal(t, int64(len("retry later")), upstreamBody.read.Load())
	s, _ := tr.Limiter().(*ezthrottle.MemoryLimiter).Stats("https://api.test:443")
	assert.Equal(t, 0, s.InFlight, "the slot is released with the discarded response")
	resp.Body.Close()
}

func TestBodyNotReplayableWhenNotFullySent(t *testing.T) {
	sub := &fakeSubmitter{}
	// The upstream answers without reading the body (as servers do for an early 429).
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		buf := make([]byte, 3)
		_, _ = io.ReadFull(r.Body, buf)
		resp := respond(&http.Request{}, 429, "early")
		resp.Request = r
		return resp, nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	body := newTrackedBody("0123456789")
	req := newReq(t, context.Background(), "PUT", "https://api.test/", body)
	ctx, receipt := ezthrottle.WithReceipt(req.Context())
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	require.NoError(t, err)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, "early", readAll(t, resp.Body))
	assert.ErrorIs(t, receipt.Err(), ezthrottle.ErrBodyNotReplayable)
	assert.Empty(t, sub.Jobs())
}

func TestIdempotencyKeys(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, ""), nil })
	run := func(t *testing.T, opts []ezthrottle.Option, ctx context.Context, hdrKey string) *ezclient.Job {
		sub := &fakeSubmitter{}
		tr := mustNew(t, append([]ezthrottle.Option{ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub),
			ezthrottle.WithDefaultLimit(ezthrottle.Unlimited())}, opts...)...)
		req := newReq(t, ctx, "POST", "https://api.test/p", io.NopCloser(strings.NewReader("b")))
		if hdrKey != "" {
			req.Header.Set("Idempotency-Key", hdrKey)
		}
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		jobs := sub.Jobs()
		require.Len(t, jobs, 1)
		return jobs[0]
	}
	bg := context.Background()
	assert.Equal(t, "", run(t, nil, bg, "").IdempotentKey, "HASH: left to the engine")
	u1 := run(t, []ezthrottle.Option{ezthrottle.WithKeyStrategy(ezthrottle.UniqueKeys())}, bg, "").IdempotentKey
	u2 := run(t, []ezthrottle.Option{ezthrottle.WithKeyStrategy(ezthrottle.UniqueKeys())}, bg, "").IdempotentKey
	assert.Len(t, u1, 36)
	assert.NotEqual(t, u1, u2, "UNIQUE: fresh keys")
	custom := ezthrottle.KeyStrategy(func(in ezthrottle.KeyInput) string { return "c:" + in.Method + ":" + string(in.Body) })
	assert.Equal(t, "c:POST:b", run(t, []ezthrottle.Option{ezthrottle.WithKeyStrategy(custom)}, bg, "").IdempotentKey)
	assert.Equal(t, "hdr", run(t, []ezthrottle.Option{ezthrottle.WithKeyStrategy(custom)}, bg, "hdr").IdempotentKey, "the header wins")
	ctx := ezthrottle.WithJobOptions(bg, ezthrottle.JobIdempotentKey("order-7"))
	assert.Equal(t, "order-7", run(t, nil, ctx, "").IdempotentKey)
	assert.Equal(t, "hdr", run(t, nil, ctx, "hdr").IdempotentKey, "the header wins over a per-request key")
	ctx = ezthrottle.WithJobOptions(bg, ezthrottle.JobKeyStrategy(ezthrottle.UniqueKeys()))
	assert.Len(t, run(t, nil, ctx, "").IdempotentKey, 36)
}

func TestJobDefaultsAndPerRequestOptions(t *testing.T) {
	sub := &fakeSubmitter{}
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 503, "", "Retry-After", "1"), nil })
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
		ezthrottle.WithForwarding(sub, ezthrottle.JobWebhook("https://app.test/default"), ezthrottle.JobMeta("team", "billing")),
		ezthrottle.WithJobDefaults(ezthrottle.JobExecutionMode(ezclient.ExecutionFanout),
			ezthrottle.JobRetryPolicy(ezclient.RetryPolicy{MaxRetries: 3, RetryCodes: []int{429}})),
		ezthrottle.WithoutForwardHeaders("Cookie"))
	ctx := ezthrottle.WithJobOptions(context.Background(),
		ezthrottle.JobMeta("order", "42"), ezthrottle.JobRegions(ezclient.RegionORD),
		ezthrottle.JobRegionPolicy(ezclient.RegionPolicyStrict), ezthrottle.JobWebhookQuorum(2),
		ezthrottle.JobWebhooks(ezclient.Webhook{URL: "https://app.test/extra"}),
		ezthrottle.JobHeader("X-Added", "1"), ezthrottle.JobHeader("X-Remove", ""))
	ctx = ezthrottle.WithJobOptions(ctx, ezthrottle.JobEdit(func(j *ezclient.Job) { j.OnFailureTimeout = time.Second }))
	req := newReq(t, ctx, "GET", "https://api.test/r#frag", nil)
	req.Header.Set("Cookie", "a=1")
	req.Header.Set("X-Remove", "x")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	j := sub.Jobs()[0]
	assert.Equal(t, "https://api.test/r", j.URL, "the fragment is not part of the job")
	assert.Equal(t, []ezclient.Webhook{{URL: "https://app.test/default"}, {URL: "https://app.test/extra"}}, j.Webhooks)
	assert.Equal(t, map[string]any{"team": "billing", "order": "42"}, j.Metadata)
	assert.Equal(t, []ezclient.Region{ezclient.RegionORD}, j.Regions)
	assert.Equal(t, ezclient.RegionPolicyStrict, j.RegionPolicy)
	assert.Equal(t, ezclient.ExecutionFanout, j.ExecutionMode)
	assert.Equal(t, 3, j.RetryPolicy.MaxRetries)
	assert.Equal(t, 2, j.WebhookQuorum)
	assert.Equal(t, time.Second, j.OnFailureTimeout)
	assert.Equal(t, "1", j.Headers["X-Added"])
	assert.NotContains(t, j.Headers, "X-Remove")
	assert.NotContains(t, j.Headers, "Cookie", "deny list")

	// Another request without options gets only the defaults (no leaking).
	resp, err = tr.RoundTrip(newReq(t, context.Background(), "GET", "https://api.test/r2", nil))
	require.NoError(t, err)
	resp.Body.Close()
	j2 := sub.Jobs()[1]
	assert.Equal(t, []ezclient.Webhook{{URL: "https://app.test/default"}}, j2.Webhooks)
	assert.Equal(t, map[string]any{"team": "billing"}, j2.Metadata)
}

func TestForwardHeaderAllowList(t *testing.T) {
	sub := &fakeSubmitter{}
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, ""), nil })
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
		ezthrottle.WithForwardHeaders("content-type", "authorization"), ezthrottle.WithoutForwardHeaders("Authorization"))
	req := newReq(t, context.Background(), "GET", "https://api.test/", nil)
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Authorization", "secret")
	req.Header.Set("X-Other", "o")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, map[string]string{"Content-Type": "text/plain"}, sub.Jobs()[0].Headers)
}

func TestForwardStatusesOption(t *testing.T) {
	sub := &fakeSubmitter{}
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 500, "e"), nil })
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()),
		ezthrottle.WithForwardStatuses(429))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "GET", "https://api.test/", nil))
	require.NoError(t, err)
	assert.Equal(t, 500, resp.StatusCode)
	resp.Body.Close()
	assert.Empty(t, sub.Jobs())
	_, err = ezthrottle.New(ezthrottle.WithForwardStatuses(42))
	assert.Error(t, err)
}

func TestReceiptNotForwarded(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "fine"), nil })
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(&fakeSubmitter{}), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	ctx, receipt := ezthrottle.WithReceipt(context.Background())
	resp, err := tr.RoundTrip(newReq(t, ctx, "GET", "https://api.test/", nil))
	require.NoError(t, err)
	resp.Body.Close()
	assert.False(t, receipt.Forwarded())
	assert.Equal(t, "", receipt.JobID())
	assert.NoError(t, receipt.Err())
	_, ok := receipt.Info()
	assert.False(t, ok)
	assert.False(t, ezthrottle.IsForwarded(resp))
	_, ok = ezthrottle.JobFromResponse(resp)
	assert.False(t, ok)
}

func TestHeadForwardedHasNoBody(t *testing.T) {
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 429, ""), nil })
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(&fakeSubmitter{}), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	resp, err := tr.RoundTrip(newReq(t, context.Background(), "HEAD", "https://api.test/", nil))
	require.NoError(t, err)
	assert.Equal(t, 202, resp.StatusCode)
	assert.Equal(t, http.NoBody, resp.Body)
}

func TestGetBodyUsedForReplay(t *testing.T) {
	sub := &fakeSubmitter{}
	var got *http.Request
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		got = r
		return respond(r, 503, "", "Retry-After", "2"), nil
	})
	tr := mustNew(t, ezthrottle.WithBase(base), ezthrottle.WithForwarding(sub), ezthrottle.WithDefaultLimit(ezthrottle.Unlimited()))
	req, err := http.NewRequest("POST", "https://api.test/p", bytes.NewReader([]byte("payload")))
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.True(t, got == req, "a body with GetBody needs no capture: the request is passed as is")
	assert.Equal(t, "payload", sub.Jobs()[0].Body, "503 with Retry-After proves non-processing: POST forwarded")
}

func TestAutoForward(t *testing.T) {
	sub := &fakeSubmitter{}
	calls := 0
	fn := func(ctx context.Context) (string, error) {
		calls++
		return "", &ezthrottle.ForwardError{Job: ezclient.Job{URL: "https://api.test/charge", Method: "post", Body: "{}",
			Metadata: map[string]any{"order": "1"}}, Cause: errors.New("429")}
	}
	v, s, err := ezthrottle.AutoForward(context.Background(), sub, fn, ezthrottle.JobWebhook("https://app.test/h"), ezthrottle.JobIdempotentKey("order-1"))
	require.NoError(t, err)
	assert.Equal(t, "", v)
	require.NotNil(t, s)
	assert.Equal(t, "job_1", s.JobID)
	assert.Equal(t, 1, calls, "never re-run")
	j := sub.Jobs()[0]
	assert.Equal(t, "https://api.test/charge", j.URL)
	assert.Equal(t, "order-1", j.IdempotentKey)
	assert.Equal(t, []ezclient.Webhook{{URL: "https://app.test/h"}}, j.Webhooks)

	// Plain values and errors pass through.
	v, s, err = ezthrottle.AutoForward(context.Background(), sub, func(context.Context) (string, error) { return "ok", nil })
	assert.Equal(t, "ok", v)
	assert.Nil(t, s)
	assert.NoError(t, err)
	plain := errors.New("plain")
	_, s, err = ezthrottle.AutoForward(context.Background(), sub, func(context.Context) (string, error) { return "", plain })
	assert.Nil(t, s)
	assert.Equal(t, plain, err)

	// A wrapped ForwardError is found; a failed submission is reported.
	sub.err = &ezclient.EngineError{StatusCode: 500}
	_, s, err = ezthrottle.AutoForward(context.Background(), sub, func(context.Context) (int, error) {
		return 0, fmt.Errorf("wrapped: %w", &ezthrottle.ForwardError{Job: ezclient.Job{URL: "https://api.test/"}})
	})
	assert.Nil(t, s)
	var fe *ezthrottle.ForwardError
	assert.ErrorAs(t, err, &fe)
	assert.ErrorIs(t, err, ezclient.ErrEngine)

	// Suppressed: returned as is, nothing submitted.
	n := len(sub.Jobs())
	_, s, err = ezthrottle.AutoForward(ezclient.SuppressForwarding(context.Background()), sub, fn)
	assert.Nil(t, s)
	assert.ErrorAs(t, err, &fe)
	assert.Len(t, sub.Jobs(), n)
}

func TestWrapDoesNotMutateClient(t *testing.T) {
	jar := &noJar{}
	orig := &http.Client{Timeout: 7 * time.Second, Jar: jar}
	wrapped, err := ezthrottle.Wrap(orig)
	require.NoError(t, err)
	assert.Nil(t, orig.Transport, "original untouched")
	assert.NotSame(t, orig, wrapped)
	assert.Equal(t, 7*time.Second, wrapped.Timeout)
	assert.Equal(t, jar, wrapped.Jar)
	tr := wrapped.Transport.(*ezthrottle.Transport)
	assert.Equal(t, http.DefaultTransport, tr.Base())

	base := &closeCounter{}
	orig2 := &http.Client{Transport: base}
	w2, err := ezthrottle.Wrap(orig2)
	require.NoError(t, err)
	assert.Equal(t, base, orig2.Transport)
	w2.CloseIdleConnections()
	assert.Equal(t, 1, base.n, "CloseIdleConnections is forwarded")

	// ... to the submitter too (an *ezclient.Client's pooled connections).
	sub := &closingSubmitter{}
	w4, err := ezthrottle.Wrap(orig2, ezthrottle.WithForwarding(sub))
	require.NoError(t, err)
	w4.CloseIdleConnections()
	assert.Equal(t, 2, base.n)
	assert.Equal(t, 1, sub.n, "CloseIdleConnections reaches the submitter")

	w3, err := ezthrottle.Wrap(nil)
	require.NoError(t, err)
	assert.NotNil(t, w3.Transport)

	_, err = ezthrottle.Wrap(orig, ezthrottle.WithMaxWait(-1))
	assert.Error(t, err)
}

type noJar struct{}

func (*noJar) SetCookies(*url.URL, []*http.Cookie) {}
func (*noJar) Cookies(*url.URL) []*http.Cookie     { return nil }

type closeCounter struct{ n int }

func (c *closeCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	return respond(r, 200, ""), nil
}
func (c *closeCounter) CloseIdleConnections() { c.n++ }

type closingSubmitter struct{ n int }

func (s *closingSubmitter) Submit(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
	return nil, errors.New("not used")
}
func (s *closingSubmitter) CloseIdleConnections() { s.n++ }

func TestMiddlewareSharesLimiter(t *testing.T) {
	mw, err := ezthrottle.Middleware(ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: math.Inf(1), MaxInFlight: 1}))
	require.NoError(t, err)
	base := rtFunc(func(r *http.Request) (*http.Response, error) { return respond(r, 200, "x"), nil })
	a, b := mw(base), mw(base)
	ra, err := a.RoundTrip(newReq(t, context.Background(), "GET", "https://api.test/", nil))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	_, err = b.RoundTrip(newReq(t, ctx, "GET", "https://api.test/", nil))
	assert.Error(t, err, "the second transport sees the first one's slot")
	ra.Body.Close()
	rb, err := b.RoundTrip(newReq(t, context.Background(), "GET", "https://api.test/", nil))
	require.NoError(t, err)
	rb.Body.Close()
	_, err = ezthrottle.Middleware(ezthrottle.WithLimiter(nil))
	assert.Error(t, err)
}
