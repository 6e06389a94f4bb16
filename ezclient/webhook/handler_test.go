package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// post delivers body to h through a ResponseRecorder, signed at signAt with
// secret when secret is non-empty.
func post(t *testing.T, h http.Handler, body string, secret string, signAt time.Time) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set(SignatureHeader, Sign(secret, signAt, []byte(body)))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

type reply struct {
	OK         bool   `json:"ok"`
	JobID      string `json:"job_id"`
	Duplicate  bool   `json:"duplicate"`
	Error      string `json:"error"`
	Code       string `json:"code"`
	LimitBytes int64  `json:"limit_bytes"`
}

func decodeReply(t *testing.T, rec *httptest.ResponseRecorder) reply {
	t.Helper()
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var r reply
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &r), rec.Body.String())
	return r
}

func TestHandlerSignatures(t *testing.T) {
	clk := newFakeClock()
	now := clk.Now()
	tests := []struct {
		name     string
		opts     []Option
		secret   string // signing secret; "" = unsigned
		signAt   time.Time
		body     string
		header   string // overrides the signature header when set
		tamper   bool   // change the body after signing
		wantCode int
		wantErr  string
	}{
		{name: "valid", opts: []Option{WithSecret(testSecret)}, secret: testSecret, signAt: now, body: cloudSuccess, wantCode: 200},
		{name: "valid self-hosted form", opts: []Option{WithSecret(testSecret)}, secret: testSecret, signAt: now, body: selfCompleted, wantCode: 200},
		{name: "tampered body", opts: []Option{WithSecret(testSecret)}, secret: testSecret, signAt: now, body: cloudSuccess, tamper: true, wantCode: 401, wantErr: "does not match"},
		{name: "wrong secret", opts: []Option{WithSecret(testSecret)}, secret: "an-attacker-secret-xyz", signAt: now, body: cloudSuccess, wantCode: 401, wantErr: "does not match"},
		{name: "rotated: old secret still accepted as secondary", opts: []Option{WithSecret("the-new-primary-secret"), WithSecondarySecret(testSecret)}, secret: testSecret, signAt: now, body: cloudSuccess, wantCode: 200},
		{name: "rotated: new primary accepted", opts: []Option{WithSecret("the-new-primary-secret"), WithSecondarySecret(testSecret)}, secret: "the-new-primary-secret", signAt: now, body: cloudSuccess, wantCode: 200},
		{name: "expired", opts: []Option{WithSecret(testSecret)}, secret: testSecret, signAt: now.Add(-DefaultTolerance - time.Second), body: cloudSuccess, wantCode: 401, wantErr: "outside the tolerance"},
		{name: "future", opts: []Option{WithSecret(testSecret)}, secret: testSecret, signAt: now.Add(DefaultTolerance + time.Second), body: cloudSuccess, wantCode: 401, wantErr: "outside the tolerance"},
		{name: "custom tolerance", opts: []Option{WithSecret(testSecret), WithTolerance(time.Hour)}, secret: testSecret, signAt: now.Add(-30 * time.Minute), body: cloudSuccess, wantCode: 200},
		{name: "missing header", opts: []Option{WithSecret(testSecret)}, body: cloudSuccess, wantCode: 401, wantErr: "missing X-EZThrottle-Signature"},
		{name: "missing v1", opts: []Option{WithSecret(testSecret)}, header: "t=1763674210", body: cloudSuccess, wantCode: 401, wantErr: "no v1"},
		{name: "bad timestamp", opts: []Option{WithSecret(testSecret)}, header: "t=yesterday,v1=" + strings.Repeat("ab", 32), body: cloudSuccess, wantCode: 401, wantErr: "timestamp"},
		{name: "no secret configured: unsigned accepted", body: cloudSuccess, wantCode: 200},
		{name: "no secret configured: bad signature ignored", header: "garbage", body: cloudSuccess, wantCode: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHandler(append([]Option{WithClock(clk.Now)}, tc.opts...)...)
			require.NoError(t, err)
			defer h.Close()

			req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(tc.body))
			if tc.secret != "" {
				req.Header.Set(SignatureHeader, Sign(tc.secret, tc.signAt, []byte(tc.body)))
			}
			if tc.header != "" {
				req.Header.Set(SignatureHeader, tc.header)
			}
			if tc.tamper {
				req = httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(strings.Replace(tc.body, `"success"`, `"failed"`, 1)))
				req.Header.Set(SignatureHeader, Sign(tc.secret, tc.signAt, []byte(tc.body)))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			assert.Equal(t, tc.wantCode, rec.Code, rec.Body.String())
			rep := decodeReply(t, rec)
			assert.NotContains(t, rec.Body.String(), testSecret)
			if tc.wantCode == 200 {
				assert.True(t, rep.OK)
				assert.Equal(t, 1, h.Store().Len())
			} else {
				assert.Equal(t, "invalid_signature", rep.Code)
				assert.Contains(t, rep.Error, tc.wantErr)
				assert.Zero(t, h.Store().Len(), "a rejected delivery stores nothing")
			}
		})
	}
}

func TestHandlerConfigErrors(t *testing.T) {
	_, err := NewHandler(WithSecret(""))
	assert.ErrorContains(t, err, "empty secret")
	_, err = NewHandler(WithSecondarySecret("old-secret-xxxxxxxxxx"))
	assert.ErrorContains(t, err, "needs WithSecret")
	h, err := NewHandler(WithSecret(testSecret), WithSecondarySecret(""))
	require.NoError(t, err)
	require.NoError(t, h.Close())
}

func TestHandlerBadRequests(t *testing.T) {
	h, err := NewHandler(WithMaxBodyBytes(1024))
	require.NoError(t, err)
	defer h.Close()

	t.Run("method not allowed", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(m, "/webhook", nil))
			assert.Equal(t, http.StatusMethodNotAllowed, rec.Code, m)
			assert.Equal(t, http.MethodPost, rec.Header().Get("Allow"))
		}
	})
	t.Run("oversized body with Content-Length", func(t *testing.T) {
		body := `{"job_id":"big","status":"completed","body":"` + strings.Repeat("x", 2000) + `"}`
		rec := post(t, h, body, "", time.Time{})
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		rep := decodeReply(t, rec)
		assert.Equal(t, "body_too_large", rep.Code)
		assert.Equal(t, int64(1024), rep.LimitBytes)
	})
	t.Run("oversized body without Content-Length", func(t *testing.T) {
		body := `{"job_id":"big","status":"completed","body":"` + strings.Repeat("x", 2000) + `"}`
		req := httptest.NewRequest(http.MethodPost, "/webhook", struct{ *strings.Reader }{strings.NewReader(body)})
		req.ContentLength = -1
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	})
	for _, tc := range []struct{ name, body, wantErr string }{
		{"malformed JSON", `{"job_id":"j","status":`, "invalid JSON"},
		{"empty body", ``, "empty body"},
		{"missing job_id", `{"status":"success"}`, "job_id"},
		{"unknown status", `{"job_id":"j","status":"exploded"}`, "status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := post(t, h, tc.body, "", time.Time{})
			assert.Equal(t, http.StatusBadRequest, rec.Code)
			rep := decodeReply(t, rec)
			assert.Equal(t, "malformed_payload", rep.Code)
			assert.Contains(t, rep.Error, tc.wantErr)
		})
	}
	assert.Zero(t, h.Store().Len())
}

func TestHandlerDuplicateDelivery(t *testing.T) {
	clk := newFakeClock()
	var mu sync.Mutex
	var calls []string
	called := make(chan struct{}, 10)
	h, err := NewHandler(WithSecret(testSecret), WithClock(clk.Now), WithCallback(func(_ context.Context, r Result) {
		mu.Lock()
		calls = append(calls, r.JobID)
		mu.Unlock()
		called <- struct{}{}
	}))
	require.NoError(t, err)
	defer h.Close()
	ch, unsub := h.Subscribe(context.Background())
	defer unsub()

	// The engine redelivers after 1, 2, 4, 8 s: each retry is freshly signed.
	for i, d := range []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		clk.Advance(d)
		rec := post(t, h, cloudSuccess, testSecret, clk.Now())
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		rep := decodeReply(t, rec)
		assert.Equal(t, i > 0, rep.Duplicate, "delivery %d", i)
		assert.Equal(t, "job_1763674210055_853341", rep.JobID)
	}
	<-called
	require.NoError(t, h.Close()) // waits for the callback workers
	mu.Lock()
	assert.Equal(t, []string{"job_1763674210055_853341"}, calls, "callback runs once")
	mu.Unlock()
	assert.Equal(t, "job_1763674210055_853341", (<-ch).JobID)
	_, open := <-ch
	assert.False(t, open, "subscriber sees one result; channel closed by Close")
}

func TestHandlerWaitBothForms(t *testing.T) {
	h, err := NewHandler()
	require.NoError(t, err)
	defer h.Close()

	// Wait before arrival (self-hosted: by job ID).
	done := make(chan Result, 1)
	go func() {
		r, err := h.WaitJob(context.Background(), "0123456789abcdef0123456789abcdef")
		assert.NoError(t, err)
		done <- r
	}()
	require.Eventually(t, func() bool { return h.Store().waiting() == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, http.StatusOK, post(t, h, selfCompleted, "", time.Time{}).Code)
	r := <-done
	assert.Equal(t, FormSelfHosted, r.Form)
	assert.Equal(t, 201, r.StatusCode)
	assert.Equal(t, "created", r.Body)
	assert.True(t, r.Succeeded)

	// Wait after arrival (Cloud: by idempotent key).
	require.Equal(t, http.StatusOK, post(t, h, cloudSuccess, "", time.Time{}).Code)
	r, err = h.WaitKey(context.Background(), "order:42/a")
	require.NoError(t, err)
	assert.Equal(t, FormCloud, r.Form)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, "42", r.Metadata["order_id"])
	r, err = h.Wait(context.Background(), Key{JobID: "job_1763674210055_853341"})
	require.NoError(t, err)
	assert.Equal(t, "order:42/a", r.IdempotentKey)
}

func TestHandlerCallbackCannotCrashOrBeDropped(t *testing.T) {
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))

	release := make(chan struct{})
	started := make(chan string, 10)
	h, err := NewHandler(WithLogger(logger), WithCallbackConcurrency(1, 1), WithCallbackWait(time.Millisecond),
		WithCallback(func(ctx context.Context, r Result) {
			started <- r.JobID
			if r.JobID == "panic" {
				panic("callback bug")
			}
			if r.JobID == "block" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
		}))
	require.NoError(t, err)

	deliver := func(id string) *httptest.ResponseRecorder {
		return post(t, h, `{"job_id":"`+id+`","status":"completed","response_status":200}`, "", time.Time{})
	}
	require.Equal(t, 200, deliver("panic").Code)
	assert.Equal(t, "panic", <-started)
	require.Equal(t, 200, deliver("block").Code) // occupies the only worker
	assert.Equal(t, "block", <-started)
	require.Equal(t, 200, deliver("queued").Code) // fills the queue of 1

	// The queue is full: the delivery is not acknowledged, and nothing of
	// it is kept (the engine's redelivery must be taken as new).
	rec := deliver("refused")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, "a result that cannot reach the callback is never acknowledged")
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
	assert.Equal(t, "callback_busy", decodeReply(t, rec).Code)
	_, ok := h.Store().Lookup(Key{JobID: "refused"})
	assert.False(t, ok, "a refused result is not stored")
	for _, id := range []string{"panic", "block", "queued"} {
		_, ok := h.Store().Lookup(Key{JobID: id})
		assert.True(t, ok, "%s stored", id)
	}

	close(release)
	assert.Equal(t, "queued", <-started)
	// The redelivery is new, and is handed over.
	rec = deliver("refused")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	assert.False(t, decodeReply(t, rec).Duplicate, "a refused delivery was not remembered")
	assert.Equal(t, "refused", <-started)
	require.NoError(t, h.Close())
	assert.Empty(t, started)

	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	assert.Contains(t, out, "callback panicked")
	assert.Contains(t, out, "callback bug")
	assert.Contains(t, out, "callback queue full; delivery refused with 503")
	assert.Contains(t, out, "job_id=refused")
	assert.Contains(t, out, "no secret configured")
}

func TestHandlerCloseCancelsCallbacks(t *testing.T) {
	started := make(chan struct{})
	h, err := NewHandler(WithCallback(func(ctx context.Context, _ Result) {
		close(started)
		<-ctx.Done() // a callback that honours ctx returns on Close
	}))
	require.NoError(t, err)
	wait := make(chan error, 1)
	go func() {
		_, err := h.WaitJob(context.Background(), "never")
		wait <- err
	}()
	require.Equal(t, 200, post(t, h, selfFailed, "", time.Time{}).Code)
	<-started
	require.NoError(t, h.Close())
	assert.ErrorIs(t, <-wait, ErrClosed, "own store closed with the handler")
	rec := post(t, h, selfCompleted, "", time.Time{})
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, "closed", decodeReply(t, rec).Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
}

func TestHandlerSharedStore(t *testing.T) {
	s := NewStore()
	defer s.Close()
	h1, err := NewHandler(WithStore(s))
	require.NoError(t, err)
	h2, err := NewHandler(WithStore(s), WithSecret(testSecret))
	require.NoError(t, err)
	require.Equal(t, 200, post(t, h1, selfCompleted, "", time.Time{}).Code)
	rec := post(t, h2, selfCompleted, testSecret, time.Now())
	require.Equal(t, 200, rec.Code)
	assert.True(t, decodeReply(t, rec).Duplicate, "dedup spans handlers sharing a store")
	require.NoError(t, h1.Close())
	require.NoError(t, h2.Close())
	_, ok := s.Lookup(Key{JobID: "0123456789abcdef0123456789abcdef"})
	assert.True(t, ok, "a shared store stays open")
}

// TestHandlerOverHTTP runs the handler behind a real server: concurrent
// duplicate deliveries are answered 200 and stored once.
func TestHandlerOverHTTP(t *testing.T) {
	h, err := NewHandler(WithSecret(testSecret))
	require.NoError(t, err)
	defer h.Close()
	srv := httptest.NewServer(h)
	defer srv.Close()

	body := []byte(cloudFailed)
	var wg sync.WaitGroup
	dups := make(chan bool, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
			req.Header.Set(SignatureHeader, Sign(testSecret, time.Now(), body))
			resp, err := srv.Client().Do(req)
			if !assert.NoError(t, err) {
				return
			}
			defer resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode)
			var rep reply
			assert.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
			dups <- rep.Duplicate
		}()
	}
	wg.Wait()
	close(dups)
	fresh := 0
	for d := range dups {
		if !d {
			fresh++
		}
	}
	assert.Equal(t, 1, fresh, "exactly one delivery is new")
	r, err := h.WaitKey(context.Background(), "k2")
	require.NoError(t, err)
	assert.False(t, r.Succeeded)
	assert.Equal(t, 503, r.StatusCode)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
