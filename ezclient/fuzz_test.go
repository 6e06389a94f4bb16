package ezclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// Fuzz tests for every decoder of untrusted replies. `go test` runs the seed
// corpus; `go test -fuzz FuzzXxx ./ezclient` explores further.

func fxFuzzClient() *Client {
	now := time.Date(2025, 11, 20, 12, 0, 0, 0, time.UTC)
	return &Client{apiKey: redact.NewSecret(fxKey), now: func() time.Time { return now }}
}

// fxCheckTypedError checks the invariants every reply error must keep.
func fxCheckTypedError(t *testing.T, err error, body []byte) {
	t.Helper()
	var (
		re *RateLimitError
		ae *AuthError
		ee *EngineError
	)
	switch {
	case errors.As(err, &re):
		if re.RetryAfter < 0 || re.RetryAfter > maxRetryAfter {
			t.Fatalf("RetryAfter %v out of range", re.RetryAfter)
		}
	case errors.As(err, &ae):
	case errors.As(err, &ee):
		if len(ee.Body) > maxErrorBody {
			t.Fatalf("EngineError.Body %d bytes", len(ee.Body))
		}
		if bytes.Contains(ee.Body, []byte(fxKey)) {
			t.Fatalf("EngineError.Body leaks the key")
		}
	default:
		t.Fatalf("untyped error %T: %v", err, err)
	}
	if strings.Contains(err.Error(), fxKey) {
		t.Fatalf("error leaks the key: %v", err)
	}
}

func FuzzProxyReply(f *testing.F) {
	f.Add(200, "", []byte(`{"status":"allowed","breach_status":{},"forwarded_response":{"status_code":201,"headers":{"a":"b"},"body":"{\"job_id\":\"j\",\"status\":\"queued\"}"}}`))
	f.Add(200, "", []byte(`{"status":"allowed","forwarded_response":{"status_code":200,"body":{"job_id":"j"}}}`))
	f.Add(200, "", []byte(`{"status":"allowed","forwarded_response":{"status_code":"201","body":null}}`))
	f.Add(200, "", []byte(`{"status":"denied","error":"Plan limit exceeded","retry_after":3600}`))
	f.Add(200, "", []byte(`{"status":"allowed"}`))
	f.Add(429, "", []byte(`{"status":"denied","error":"Plan limit exceeded","retry_after":3600}`))
	f.Add(429, "", []byte(`{"error":"Too Many Requests","retry_after_seconds":300}`))
	f.Add(429, "120", []byte(`{"retry_at":"2025-11-20T12:05:00Z"}`))
	f.Add(429, "Thu, 20 Nov 2025 12:01:00 GMT", []byte(`{}`))
	f.Add(400, "", []byte(`{"error":"bad envelope"}`))
	f.Add(401, "", []byte(`{"error":"Unauthorized","message":"Invalid API key `+fxKey+`"}`))
	f.Add(403, "", []byte(`{"error":{"message":"nested"}}`))
	f.Add(413, "", []byte(`Payload Too Large`))
	f.Add(500, "", []byte("Internal Server Error"))
	f.Add(502, "", []byte("Proxy Error"))
	f.Add(200, "", []byte(`{"status":"allowed","forwarded_response":{"status_code":1e400,"body":"x"}}`))
	f.Add(200, "", []byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		c := fxFuzzClient()
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		r, err := c.proxyResult(status, h, body)
		if err != nil {
			fxCheckTypedError(t, err, body)
			if r.status != 0 || r.body != nil {
				t.Fatalf("reply returned with an error")
			}
			return
		}
		if status != http.StatusOK {
			t.Fatalf("success from a proxy %d", status)
		}
		if r.status < 100 || r.status > 599 {
			t.Fatalf("forwarded status %d", r.status)
		}
		// The engine's reply may go on to the submission decoder.
		if sub, err := decodeSubmission(r.status, r.body); err == nil && sub.JobID == "" {
			t.Fatalf("submission without job ID")
		}
	})
}

func FuzzEngineErrorReply(f *testing.F) {
	f.Add(400, "", []byte(`{"error":"<reason>"}`))
	f.Add(413, "", []byte(`{"error":"request body too large","limit_bytes":1048576}`))
	f.Add(429, "3", []byte(`{"error":"admission rejected: queue full","limit_reason":"queue_depth"}`))
	f.Add(429, "-1", []byte(`{"retry_after":"1e9","retry_at":-1}`))
	f.Add(404, "", []byte(`{"error":"job not found"}`))
	f.Add(500, "", []byte(`not json`))
	f.Add(503, "NaN", []byte(`{"message":["a"],"error":null}`))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		c := fxFuzzClient()
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		err := c.replyError(reply{status: status, header: h, body: body})
		if err == nil {
			t.Fatal("no error")
		}
		fxCheckTypedError(t, err, body)
	})
}

func FuzzSubmissionReply(f *testing.F) {
	f.Add(201, []byte(`{"job_id":"job_1763674210055_853341","status":"queued","idempotent_key":"a:b/c","queued_at":1763674210055,"estimated_processing_time":5}`))
	f.Add(200, []byte(`{"job_id":"0123456789abcdef0123456789abcdef","status":"queued","duplicate":true}`))
	f.Add(201, []byte(`{"job_id":"j","status":"racing","queued_at":"2025-11-20T21:30:10Z"}`))
	f.Add(201, []byte(`{"job_id":1,"queued_at":1e308,"estimated_processing_time":-1e308,"duplicate":"yes"}`))
	f.Add(201, []byte(`{"status":"queued"}`))
	f.Add(201, []byte(`[]`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		sub, err := decodeSubmission(status, body)
		if err != nil {
			fxCheckTypedError(t, err, body)
			return
		}
		if strings.TrimSpace(sub.JobID) == "" || sub.Status == "" {
			t.Fatalf("incomplete submission %+v", sub)
		}
		if sub.EstimatedProcessingTime < 0 {
			t.Fatalf("negative estimate")
		}
	})
}

func FuzzStatusReply(f *testing.F) {
	f.Add([]byte(`{"job_id":"abc","status":"in_flight","url":"https://a.b","method":"GET","created_at":1763674210055}`))
	f.Add([]byte(`{"status":"completed","created_at":"2025-11-20T21:30:10Z"}`))
	f.Add([]byte(`{"job_id":"abc"}`))
	f.Add([]byte(`{"error":"job not found"}`))
	f.Add([]byte(`{"status":{"a":1},"created_at":[1]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		info, err := decodeJobInfo("fallback-id", body)
		if err != nil {
			fxCheckTypedError(t, err, body)
			return
		}
		if info.Status == "" || info.JobID == "" {
			t.Fatalf("incomplete info %+v", info)
		}
		if !json.Valid(info.Raw) {
			t.Fatalf("Raw is not the JSON reply")
		}
	})
}

func FuzzSSE(f *testing.F) {
	f.Add("event: queued\ndata: {\"job_id\":\"j\"}\n\n")
	f.Add("event: position\r\ndata: {\"position\":3}\r\n\r\n")
	f.Add(": keepalive\n\nevent: dispatching\n\n")
	f.Add("id: 1\nevent: completed\ndata: {\"job_id\":\"j\",\"response_status\":200,\"body\":\"ok\"}\n\n")
	f.Add("event: failed\rdata: {\"job_id\":\"j\",\"reason\":\"boom\"}\r\r")
	f.Add("data: {\"type\":\"completed\",\"status_code\":\"204\",\"body\":{\"a\":[1]}}\n\n")
	f.Add("\ufeffdata: a\ndata: b\nid: x\x00y\nretry: 5\n\nevent: completed")
	f.Add("data: \xff\xfe\n\n")
	f.Fuzz(func(t *testing.T, stream string) {
		r := newSSEReader(strings.NewReader(stream))
		for n := 0; ; n++ {
			se, err := r.next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, errSSETooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if se.keepalive {
				if se.event != "" || se.data != "" {
					t.Fatalf("keepalive with fields: %+v", se)
				}
				continue
			}
			if n > len(stream)+1 {
				t.Fatalf("more events than input bytes")
			}
			if strings.ContainsAny(se.event+se.id, "\r\n") || strings.ContainsRune(se.id, 0) {
				t.Fatalf("line breaks or NUL in a field: %+v", se)
			}
			ev := decodeEvent("job", se)
			if ev.Type == "" {
				t.Fatalf("event without a type")
			}
			if ev.Terminal() && ev.Type != EventCompleted && ev.Type != EventFailed {
				t.Fatalf("bad terminal type")
			}
		}
	})
}

func FuzzSecretsReply(f *testing.F) {
	f.Add(200, []byte(`{"customer_id":"cus_1","primary_secret":"abcd****efgh","secondary_secret":null,"has_secondary":false}`))
	f.Add(200, []byte(`{"customer_id":"cus_1","primary_secret":"abcd****efgh","secondary_secret":"ijkl****mnop","has_secondary":true}`))
	f.Add(200, []byte(`{"status":"ok","message":"saved"}`))
	f.Add(200, []byte(`{"status":"error","message":"could not save"}`))
	f.Add(404, []byte(`{"error":"No webhook secret configured"}`))
	f.Add(500, []byte(`boom`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		c := fxFuzzClient()
		if info, err := decodeSecretInfo(body); err == nil {
			if info.Primary == "" || (info.Secondary != "" && !info.HasSecondary) {
				t.Fatalf("inconsistent info %+v", info)
			}
		} else {
			fxCheckTypedError(t, err, body)
		}
		if err := c.checkSecretsReply(reply{status: status, body: body}); err != nil {
			fxCheckTypedError(t, err, body)
		} else if status < 200 || status > 299 {
			t.Fatalf("accepted a %d", status)
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "1.5", "-1", "NaN", "+Inf", "1e400", "Thu, 20 Nov 2025 12:01:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "soon", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		now := time.Date(2025, 11, 20, 12, 0, 0, 0, time.UTC)
		if d, ok := parseRetryAfter(v, now); ok && (d < 0 || d > maxRetryAfter) {
			t.Fatalf("parseRetryAfter(%q) = %v", v, d)
		} else if !ok && d != 0 {
			t.Fatalf("non-zero wait with ok=false")
		}
		raw, _ := json.Marshal(v)
		for _, r := range []json.RawMessage{raw, json.RawMessage(v)} {
			if at, ok := parseRetryAt(r, now); ok && (at.Sub(now) > maxRetryAfter || now.Sub(at) > maxRetryAfter) {
				t.Fatalf("parseRetryAt(%s) = %v", r, at)
			}
		}
	})
}

// FuzzJobJSON: decoding any job and encoding it again is stable after one
// normalisation (method upper-cased, defaults dropped), and never panics.
func FuzzJobJSON(f *testing.F) {
	for _, j := range fxGoldenJobs() {
		b, _ := marshalNoEscape(j)
		f.Add(b)
	}
	f.Add([]byte(`{"url":"x","method":"","on_failure_timeout_ms":9223372036854775807,"retry_at":-9223372036854775808}`))
	f.Add([]byte(`{"fallback_job":{"trigger":{"type":"on_timeout","timeout_ms":-1}},"webhook_quorum":-3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var j Job
		if json.Unmarshal(data, &j) != nil {
			return
		}
		first, err := marshalNoEscape(&j)
		if err != nil {
			t.Fatalf("decoded job does not encode: %v", err)
		}
		var k Job
		if err := json.Unmarshal(first, &k); err != nil {
			t.Fatalf("encoded job does not decode: %v\n%s", err, first)
		}
		second, err := marshalNoEscape(&k)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("not stable:\n%s\n%s", first, second)
		}
		if !utf8.Valid(first) && utf8.Valid(data) {
			t.Fatalf("invalid UTF-8 produced")
		}
		_ = k.Validate() // must not panic
	})
}
