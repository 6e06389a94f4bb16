package redact

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

const canary = "CANARYx9Q"

// TestTextScrubsEveryForm: each input carries the canary in one of the
// forms a credential travels in; Text alone (knowing no value) removes it
// and keeps the surrounding text.
func TestTextScrubsEveryForm(t *testing.T) {
	for _, tc := range []struct{ name, in, keep string }{
		{"userinfo", "GET https://user" + canary + ":pw" + canary + "@api.example.com/x failed", "api.example.com/x failed"},
		{"userinfo user only", "http://" + canary + "@h/", "@h/"},
		{"userinfo JSON-escaped", `{"url":"https:\/\/u:` + canary + `@h\/x"}`, `@h\/x`},
		{"userinfo percent-encoded", "next=https%3A%2F%2Fu%3A" + canary + "%40h%2Fx", "%40h%2Fx"},
		{"query", "https://h/x?a=1&api_key=" + canary + "&b=2", "&b=2"},
		{"query encoded value", "https://h/x?token=tk%2F" + canary + "%2BEnc%3D%3D&b=2", "&b=2"},
		{"query decoded value", "url https://h/x?token=tk/" + canary + "+Enc== failed", " failed"},
		{"query encoded name", "https://h/x?api%5Fkey=" + canary, "https://h/x?api%5Fkey="},
		{"query JSON-escaped amp", `"https://h/x?a=1\u0026access_token=` + canary + `"`, `"https://h/x?a=1\u0026access_token=`},
		{"form body", "client_secret=" + canary + "&grant_type=x", "&grant_type=x"},
		{"header line", "Authorization: Bearer " + canary + "\r\nAccept: */*", "Accept: */*"},
		{"header JSON", `{"headers":{"Authorization":"Bearer ` + canary + `","Cookie":"sid=` + canary + `; a=` + canary + `","X-Api-Key":"` + canary + `"}}`, `"headers"`},
		{"header JSON escaped", `{\"X-Auth-Token\":\"` + canary + `\"}`, `X-Auth-Token`},
		{"header Go map", `map[Cookie:sid=` + canary + ` X-Client-Secret:` + canary + `]`, `map[Cookie:`},
		{"bare bearer", "rejected Bearer " + canary + " because", " because"},
		{"bare basic", "rejected Basic dXNlcjpw" + canary + "= because", " because"},
		{"set-cookie", "Set-Cookie: session=" + canary + "; Path=/", "Set-Cookie: "},
		{"signature header", "X-EZThrottle-Signature: t=1,v1=" + canary, "X-EZThrottle-Signature: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := Text(tc.in)
			assert.NotContains(t, out, canary, "in %q", tc.in)
			assert.Contains(t, out, tc.keep)
			assert.Equal(t, out, Text(out), "idempotent")
		})
	}
}

// TestTextKeepsOrdinaryText: prose, idempotency keys and already masked
// values are left alone.
func TestTextKeepsOrdinaryText(t *testing.T) {
	for _, s := range []string{
		"ezthrottle: engine error (HTTP 503): service unavailable",
		"ezthrottle: unauthorized (HTTP 401): Invalid API key",
		"https://api.example.com/v1/x?limit=10&page=2",
		`{"job_id":"job_1","idempotent_key":"order-42","status":"queued"}`,
		"Idempotency-Key: order-42",
		"Authorization: Bearer ****",
		"https://REDACTED:REDACTED@h/x?api_key=REDACTED",
		"a basic job",
		"",
	} {
		assert.Equal(t, s, Text(s))
	}
}

// TestSecretsEveryEncoding: a known value is replaced as is,
// percent-encoded in either hex case, and JSON-escaped.
func TestSecretsEveryEncoding(t *testing.T) {
	v := "tk/" + canary + "+Enc==<&>"
	s := NewSecrets("****", "Bearer "+v)
	for _, in := range []string{v, "tk%2F" + canary + "%2BEnc%3D%3D%3C%26%3E", "tk%2f" + canary + "%2bEnc%3d%3d%3c%26%3e",
		`tk/` + canary + `+Enc==\u003c\u0026\u003e`, "tk%2F" + canary + "+Enc==%3C&%3E"} {
		out := s.Scrub("value " + in + " echoed")
		assert.NotContains(t, out, canary, "form %q", in)
	}
	var nilSet *Secrets
	assert.Equal(t, "x", nilSet.Scrub("x"))
	assert.Zero(t, NewSecrets("", "short").Len(), "short values are not scrubbed")
}

// TestHandlerScrubsEveryAttr drives the handler with a secret in the
// message, string, error, Stringer, any and group attributes, WithAttrs, a
// sensitive key and the context's secrets, at debug level.
func TestHandlerScrubsEveryAttr(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), NewSecrets("", "static"+canary)))
	ctx := ContextWithSecrets(context.Background(), NewSecrets("", "ctx"+canary))
	l = l.With("with", "https://u:"+canary+"@h/")
	l.WithGroup("g").DebugContext(ctx, "msg static"+canary,
		"s", "ctx"+canary, "err", errors.New("Bearer "+canary), "any", map[string]string{"Cookie": canary},
		"authorization", "plain"+canary, slog.Group("grp", "x", "api_key="+canary))
	out := buf.String()
	assert.NotContains(t, out, canary)
	assert.Equal(t, 7, strings.Count(out, "REDACTED"), out)
}
