package ezlocal

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

func FuzzParsePace(f *testing.F) {
	for _, s := range [][2]string{{"2", "2"}, {"0.5", "10"}, {"0", "0"}, {"-1", "-1"}, {"NaN", "1e3"}, {"+Inf", " 3 "}, {"", ""}, {"1e400", "99999999999999999999"}} {
		f.Add(s[0], s[1], s[0])
	}
	f.Fuzz(func(t *testing.T, rps, conc, aqueduct string) {
		h := http.Header{}
		h.Set("X-EZTHROTTLE-RPS", rps)
		h.Set("X-EZTHROTTLE-MAX-CONCURRENT", conc)
		h.Set("X-Aqueduct-Rps", aqueduct)
		r, rok, c, cok := parsePace(h)
		if rok && (math.IsNaN(r) || r <= 0 || r > maxPaceRPS) {
			t.Fatalf("accepted rps %v from %q/%q", r, rps, aqueduct)
		}
		if cok && (c < 1 || c > maxPaceConcurrency) {
			t.Fatalf("accepted concurrency %d from %q", c, conc)
		}
		if !rok && r != 0 || !cok && c != 0 {
			t.Fatalf("value without ok: %v %d", r, c)
		}
	})
}

// stubTransport answers every destination and webhook call with 200.
type stubTransport struct{}

func (stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
}

func FuzzProxyEnvelope(f *testing.F) {
	f.Add([]byte(`{"scope":"customer","metric_name":"","target_url":"http://e.test/api/v1/jobs","method":"POST","headers":{},"body":"{\"url\":\"http://d.test\",\"regions\":[\"iad\",\"lax\"],\"webhooks\":[{\"url\":\"http://h.test\"}]}"}`))
	f.Add([]byte(`{"target_url":"http://e.test/api/v1/jobs","method":"POST","body":"{\"url\":\"http://d.test\",\"fallback_job\":{\"url\":\"http://f.test\",\"trigger\":{\"type\":\"on_timeout\",\"timeout_ms\":5}},\"on_success\":{\"url\":\"http://s.test\"}}"}`))
	f.Add([]byte(`{"target_url":"http://e.test/api/v1/webhook-secrets","method":"POST","body":"{\"primary_secret\":\"0123456789abcdef\"}"}`))
	f.Add([]byte(`{"target_url":"http://e.test/api/v1/jobs","method":"POST","body":null}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := New(WithClock(newTestClock()), WithHTTPClient(&http.Client{Transport: stubTransport{}}), WithBodyLimits(4096, 0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/proxy", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.APIKey())
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("reply is not JSON: %q", rec.Body.String())
		}
		switch rec.Code {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if m["error"] == nil {
				t.Fatalf("error reply without error: %v", m)
			}
		case http.StatusOK:
			fr, _ := m["forwarded_response"].(map[string]any)
			s, ok := fr["body"].(string)
			if !ok {
				t.Fatalf("forwarded body not a string: %v", m)
			}
			var inner map[string]any
			if err := json.Unmarshal([]byte(s), &inner); err != nil {
				t.Fatalf("forwarded body not a JSON object: %q", s)
			}
			if code, _ := fr["status_code"].(float64); code == http.StatusCreated && inner["job_id"] == nil {
				t.Fatalf("201 without job_id: %v", inner)
			}
		default:
			t.Fatalf("unexpected status %d: %v", rec.Code, m)
		}
	})
}

func FuzzSelfHostedJob(f *testing.F) {
	f.Add([]byte(`{"user_id":"u","idempotent_key":"k","url":"http://d.test","method":"GET","webhook_url":"http://h.test"}`))
	f.Add([]byte(`{"user_id":"u","idempotent_key":"k","url":"http://d.test","method":"post","webhook_url":"http://h.test","headers":{"A":"b"},"body":"x"}`))
	f.Add([]byte(`{"user_id":"","url":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		sj, err := decodeSelfHostedJob(body)
		if err != nil {
			return
		}
		if sj.UserID == "" || sj.IdempotentKey == "" || sj.Method == "" {
			t.Fatalf("accepted a job without required fields: %+v", sj)
		}
		if ezclient.ValidateURL("url", sj.URL) != nil || ezclient.ValidateURL("webhook_url", sj.WebhookURL) != nil {
			t.Fatalf("accepted bad URLs: %+v", sj)
		}
	})
}
