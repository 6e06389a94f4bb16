package webhook_test

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

	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

type fuzzBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *fuzzBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *fuzzBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Signing modes of FuzzHandler: the header as fuzzed, or a signature the
// harness computes (valid, wrong secret, stale) so that the fuzzer reaches
// the payload decoder behind the signature check.
const (
	sigAsIs = iota
	sigValid
	sigWrongSecret
	sigStale
	sigModes
)

// FuzzHandler drives the webhook Handler as a whole, as an http.Handler:
// method, signature header (as fuzzed or computed), Content-Type, body and
// the signing mode come from the fuzzer. Every reply must be one of the
// documented statuses with a JSON body; a 200 only for a delivery whose
// signature verifies; the secret never appears in the reply or the logs;
// a stored result is what the body says.
func FuzzHandler(f *testing.F) {
	valid := `{"job_id":"job_1","idempotent_key":"k1","status":"success","response":{"status_code":200,"headers":{"content-type":"application/json"},"body":"{\"ok\":true}"},"metadata":{"a":1}}`
	f.Add("POST", uint8(sigValid), "", "application/json", []byte(valid))
	f.Add("POST", uint8(sigValid), "", "", []byte(`{"job_id":"j2","status":"failed","error":"boom","response":null}`))
	f.Add("POST", uint8(sigValid), "", "", []byte(`{"job_id":"","status":"success"}`))
	f.Add("POST", uint8(sigValid), "", "", []byte(`{"job_id":"j3","status":"success","response":{"status_code":"200","body":{"x":[1,2]}}}`))
	f.Add("POST", uint8(sigValid), "", "", []byte(`[`))
	f.Add("POST", uint8(sigWrongSecret), "", "", []byte(valid))
	f.Add("POST", uint8(sigStale), "", "", []byte(valid))
	f.Add("POST", uint8(sigAsIs), "t=1700000000,v1=00", "", []byte(valid))
	f.Add("POST", uint8(sigAsIs), "t=,v1=,v1=zz,,=", "", []byte(""))
	f.Add("GET", uint8(sigValid), "", "", []byte(valid))
	f.Add("POST", uint8(sigValid), "", "", bytes.Repeat([]byte("x"), 5000))
	const secret = "whsec_fuzz_SECRET_0123456789"
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, method string, mode uint8, header, contentType string, body []byte) {
		logs := &fuzzBuffer{}
		got := make(chan webhook.Result, 4)
		h, err := webhook.NewHandler(webhook.WithSecret(secret), webhook.WithClock(func() time.Time { return now }),
			webhook.WithLogger(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
			webhook.WithMaxBodyBytes(4096), webhook.WithCallback(func(_ context.Context, r webhook.Result) {
				select {
				case got <- r:
				default:
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if !validToken(method) {
			method = http.MethodPost
		}
		switch mode % sigModes {
		case sigValid:
			header = webhook.Sign(secret, now, body)
		case sigWrongSecret:
			header = webhook.Sign("whsec_other_0123456789abcd", now, body)
		case sigStale:
			header = webhook.Sign(secret, now.Add(-time.Hour), body)
		}
		req := httptest.NewRequest(method, "/hook", bytes.NewReader(body))
		req.Header.Set(webhook.SignatureHeader, header)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		var reply map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
			t.Fatalf("%d reply is not a JSON object: %q", rec.Code, rec.Body.String())
		}
		switch rec.Code {
		case http.StatusOK:
			if (&webhook.Verifier{Primary: secret, Now: func() time.Time { return now }}).Verify(header, body) != nil {
				t.Fatalf("accepted a delivery whose signature does not verify: %q", header)
			}
			res, err := webhook.Decode(body)
			if err != nil {
				t.Fatalf("accepted a payload Decode refuses: %v", err)
			}
			if reply["job_id"] != res.JobID || res.JobID == "" {
				t.Fatalf("reply %v for job %q", reply, res.JobID)
			}
			stored, ok := h.Store().Lookup(webhook.Key{JobID: res.JobID})
			if !ok || stored.JobID != res.JobID {
				t.Fatalf("accepted result not stored: %v", reply)
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge:
			if reply["error"] == nil {
				t.Fatalf("%d reply without error: %v", rec.Code, reply)
			}
		default:
			t.Fatalf("unexpected status %d: %v", rec.Code, reply)
		}
		if strings.Contains(rec.Body.String(), secret) || strings.Contains(logs.String(), secret) {
			t.Fatalf("the secret leaked")
		}
	})
}

// validToken reports whether m can be an HTTP method (an RFC 9110 token).
func validToken(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
