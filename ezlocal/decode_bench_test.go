package ezlocal

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// hostileJob returns a job nested depth levels deep through on_success,
// each level padded so that the job is about size bytes.
func hostileJob(depth, size int) string {
	pad := size/depth - 40
	if pad < 0 {
		pad = 0
	}
	level := `{"url":"http://h.example/` + strings.Repeat("a", pad) + `","on_success":`
	var b strings.Builder
	b.Grow(depth*(len(level)+1) + 32)
	for i := 0; i < depth; i++ {
		b.WriteString(level)
	}
	b.WriteString(`null`)
	b.WriteString(strings.Repeat("}", depth))
	return b.String()
}

// hostileEnvelope is a Cloud proxy envelope just under the 1 MiB limit
// whose body is a job nested 9,000 deep (below encoding/json's own
// nesting limit of 10,000, so that only the depth limit of jobs stops it).
func hostileEnvelope(tb testing.TB) []byte {
	for size := 900 << 10; ; size -= 8 << 10 {
		job := hostileJob(9000, size)
		env, err := json.Marshal(map[string]any{"scope": "customer", "target_url": "http://engine.example/api/v1/jobs",
			"method": "POST", "headers": map[string]string{"Content-Type": "application/json"}, "body": job})
		if err != nil {
			tb.Fatal(err)
		}
		if len(env) <= DefaultMaxEnvelopeBytes {
			return env
		}
	}
}

// BenchmarkHostileEnvelope1MiB: the engine refuses a 1 MiB envelope whose
// job is nested 9,000 deep (issue 14, item 8). Compare with
// BenchmarkReadEnvelope1MiB, the cost of merely reading and scanning it.
func BenchmarkHostileEnvelope1MiB(b *testing.B) {
	e, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	env := hostileEnvelope(b)
	h := e.Handler()
	b.SetBytes(int64(len(env)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/proxy", bytes.NewReader(env))
		req.Header.Set("Authorization", "Bearer "+e.APIKey())
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !strings.Contains(rec.Body.String(), "nested deeper") {
			b.Fatalf("not refused for its depth: %d %s", rec.Code, rec.Body.String())
		}
	}
}

// BenchmarkReadEnvelope1MiB is the baseline: reading the same envelope
// and checking that it is JSON (Valid), or decoding it as every proxy call
// must before it knows what it carries (Decode).
func BenchmarkReadEnvelope1MiB(b *testing.B) {
	env := hostileEnvelope(b)
	for _, bc := range []struct {
		name  string
		check func([]byte) bool
	}{
		{"Valid", json.Valid},
		{"Decode", func(raw []byte) bool { _, err := decodeEnvelope(raw); return err == nil }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(env)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/api/v1/proxy", bytes.NewReader(env))
				raw, err := io.ReadAll(req.Body)
				if err != nil || !bc.check(raw) {
					b.Fatal("invalid")
				}
			}
		})
	}
}
