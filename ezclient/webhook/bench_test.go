package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func BenchmarkVerify(b *testing.B) {
	body := []byte(cloudSuccess)
	v := Verifier{Primary: testSecret}
	h := Sign(testSecret, time.Now(), body)
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(h, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(cloudSuccess)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandler measures one signed delivery through ServeHTTP, each a
// new job (so every delivery is stored).
func BenchmarkHandler(b *testing.B) {
	h, err := NewHandler(WithSecret(testSecret), WithMaxResults(1000))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		body := strings.Replace(selfCompleted, "0123456789abcdef", fmt.Sprintf("%016x", i), 1)
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set(SignatureHeader, Sign(testSecret, now, []byte(body)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code, rec.Body.String())
		}
	}
}

func BenchmarkStoreAddWait(b *testing.B) {
	s := NewStore(WithMaxResults(1000))
	defer s.Close()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprint("job_", i)
		if _, err := s.Add(res(id, "")); err != nil {
			b.Fatal(err)
		}
		if _, err := s.WaitJob(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
