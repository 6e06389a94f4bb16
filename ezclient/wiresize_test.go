package ezclient

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// doubleEncodedLen is the size of body escaped twice by the encoder the
// client uses, without the surrounding quotes.
func doubleEncodedLen(t testing.TB, body string) int {
	e1, err := marshalNoEscape(body)
	require.NoError(t, err)
	e2, err := marshalNoEscape(string(e1))
	require.NoError(t, err)
	return len(e2) - 6 // `"\"` ... `\""`
}

var wireSizeCases = []string{
	"", "plain", `"`, `\`, "\n\r\t\b\f", "\x00\x01\x1f\x7f", "<>&", "é日本🎉", "\u2028\u2029",
	"\xff\xfe", "a\xc3", `{"a":"b\"c","d":[1,2]}`, strings.Repeat(`"`, 1000),
}

func TestWireBodySizeMatchesEncoder(t *testing.T) {
	for _, s := range wireSizeCases {
		assert.Equal(t, doubleEncodedLen(t, s), WireBodySize(s), "%q", s)
	}
}

func FuzzWireBodySize(f *testing.F) {
	for _, s := range wireSizeCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := WireBodySize(s), doubleEncodedLen(t, s); got != want {
			t.Fatalf("WireBodySize(%q) = %d, encoder says %d", s, got, want)
		}
	})
}

// TestEnvelopeSizeLimit: the size limit is measured on the bytes actually
// sent, and a request over it is refused before sending with a typed error
// (issue 13 item 9). A 256 KiB body of quotes becomes an envelope over
// 1 MiB, which the proxy would refuse with 413.
func TestEnvelopeSizeLimit(t *testing.T) {
	quotes := strings.Repeat(`"`, 256<<10)
	t.Run("cloud: quotes double twice", func(t *testing.T) {
		srv := fxNewServer(t, fxForward(201, `{"job_id":"j","status":"queued"}`))
		c, _ := fxCloud(t, srv)
		_, err := c.Submit(context.Background(), &Job{URL: "https://a.example", Method: "PUT", Body: quotes})
		var tl *TooLargeError
		require.ErrorAs(t, err, &tl)
		assert.Greater(t, tl.Size, DefaultMaxRequestBytes)
		assert.Equal(t, DefaultMaxRequestBytes, tl.Limit)
		assert.True(t, errors.Is(err, ErrTooLarge))
		assert.True(t, errors.Is(err, ErrValidation))
		assert.Empty(t, srv.requests(), "nothing sent")
	})
	t.Run("cloud: limit is exact on the envelope", func(t *testing.T) {
		srv := fxNewServer(t, fxForward(201, `{"job_id":"j","status":"queued"}`))
		c, _ := fxCloud(t, srv)
		job := &Job{URL: "https://a.example", Method: "PUT", Body: "x"}
		_, err := c.Submit(context.Background(), job)
		require.NoError(t, err)
		base := len(srv.requests()[0].rawEnvelope(t))
		// Grow the body until the envelope is exactly at the limit, then one
		// byte over, with characters that escape differently.
		for _, unit := range []string{"a", `"`, "\n", "\x01"} {
			grow := WireBodySize(unit)
			n := (1<<20 - base) / grow
			body := "x" + strings.Repeat(unit, n)
			pad := 1<<20 - base - n*grow
			body += strings.Repeat("a", pad)
			srv := fxNewServer(t, fxForward(201, `{"job_id":"j","status":"queued"}`))
			c, _ := fxCloud(t, srv)
			_, err := c.Submit(context.Background(), &Job{URL: "https://a.example", Method: "PUT", Body: body})
			require.NoError(t, err, "unit %q", unit)
			require.Len(t, srv.requests(), 1)
			assert.Len(t, srv.requests()[0].rawEnvelope(t), 1<<20, "unit %q: exactly at the limit", unit)
			_, err = c.Submit(context.Background(), &Job{URL: "https://a.example", Method: "PUT", Body: body + "a"})
			assert.ErrorIs(t, err, ErrTooLarge, "unit %q: one byte over", unit)
			assert.Len(t, srv.requests(), 1)
		}
	})
	t.Run("self-hosted", func(t *testing.T) {
		srv := fxNewServer(t, fxReply{status: 201, body: `{"job_id":"j","status":"queued"}`})
		c, _ := fxSelfHosted(t, srv, WithMaxRequestBytes(1000))
		_, err := c.Submit(context.Background(), &Job{URL: "https://a.example", Body: strings.Repeat(`"`, 500), Webhooks: []Webhook{{URL: "https://h.example"}}})
		assert.ErrorIs(t, err, ErrTooLarge)
		assert.Empty(t, srv.requests())
	})
	t.Run("option", func(t *testing.T) {
		_, err := New(withGetenv(fxNoEnv), WithAPIKey(fxKey), WithMaxRequestBytes(0))
		assert.Error(t, err)
	})
}

// rawEnvelope is the request body as received.
func (r fxRequest) rawEnvelope(t *testing.T) []byte {
	t.Helper()
	require.Equal(t, http.MethodPost, r.Method)
	return r.Body
}
