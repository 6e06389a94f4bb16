package ezthrottle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoSecretsInLogsSpansOrErrors drives the Transport, ezclient and the
// webhook Handler through their failure paths with secrets everywhere a
// caller puts them (Authorization, an API-key header, a configured
// sensitive header, URL credentials and query, the EZThrottle API key, the
// webhook secret) and an engine that echoes everything it receives; no
// secret may reach a log line, a span attribute, event or status, or an
// error string.
func TestNoSecretsInLogsSpansOrErrors(t *testing.T) {
	const (
		authSecret    = "sk_live_AUTH_SECRET"
		apiKeyHeader  = "apikey_SECRET_2"
		partnerSecret = "partner_SECRET_3"
		querySecret   = "qs_SECRET_4"
		passSecret    = "pw_SECRET_5"
		ezAPIKey      = "ezt_APIKEY_SECRET_6"
		hookSecret    = "whsec_SECRET_7_0123456789"
	)
	secrets := []string{authSecret, apiKeyHeader, partnerSecret, querySecret, passSecret, ezAPIKey, hookSecret}

	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	k := newOtelKit(t)
	var errs []string

	// An engine that rejects everything, echoing the request it got
	// (headers and body) in its error message.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		msg, _ := json.Marshal(map[string]string{"error": "rejected " + r.Header.Get("Authorization") + " " + string(b),
			"message": "Invalid API key " + r.Header.Get("Authorization")})
		code := http.StatusBadRequest
		if strings.HasPrefix(r.URL.Path, "/api/") {
			code = http.StatusUnauthorized
		}
		w.WriteHeader(code)
		_, _ = w.Write(msg)
	}))
	defer echo.Close()

	// Transport forwarding to a self-hosted engine that echoes the job.
	selfHosted, err := ezclient.New(ezclient.WithSelfHosted(echo.URL, "user-1"), ezclient.WithLogger(logger), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	calls := 0
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		if calls == 2 {
			_ = r.Body.Close()
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.example.com"}}
		}
		return respond(r, 503, "down"), nil
	})
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base), ezthrottle.WithClient(selfHosted, ezthrottle.JobWebhook("https://hooks.example.com/ezthrottle")),
		ezthrottle.WithRequestSpan(), ezthrottle.WithLogger(logger), ezthrottle.WithSensitiveHeaders("X-Partner-Token"),
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 1, Burst: 2}), ezthrottle.WithMaxWait(time.Millisecond),
		ezthrottle.WithClock(newFakeClock()))...)
	for i := 0; i < 3; i++ { // 503 then network error (both forwarded, both failing), then a throttle rejection
		ctx, receipt := ezthrottle.WithReceipt(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodPut,
			"https://user:"+passSecret+"@api.example.com/v1/x?api_key="+querySecret, strings.NewReader(`{"a":1}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+authSecret)
		req.Header.Set("X-Api-Key", apiKeyHeader)
		req.Header.Set("X-Partner-Token", partnerSecret)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			require.NoError(t, resp.Body.Close())
		}
		if receipt.Err() != nil {
			errs = append(errs, receipt.Err().Error())
		}
	}
	require.Len(t, errs, 5, "failed forwards (receipts) of the 503, the network error and the overflow, and two returned errors: %q", errs)

	// ezclient against Cloud with a wrong API key (echoed by the server).
	cloud, err := ezclient.New(ezclient.WithAPIKey(ezAPIKey), ezclient.WithProxyURL(echo.URL), ezclient.WithEngineURL(echo.URL),
		ezclient.WithLogger(logger), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	_, err = cloud.Submit(context.Background(), &ezclient.Job{URL: "https://api.example.com/v1/x",
		Headers: map[string]string{"Authorization": "Bearer " + authSecret}})
	require.Error(t, err)
	errs = append(errs, err.Error(), cloud.String())
	_, err = cloud.GetWebhookSecret(context.Background())
	require.Error(t, err)
	errs = append(errs, err.Error())

	// The webhook Handler, with bad and good signatures.
	h, err := webhook.NewHandler(webhook.WithSecret(hookSecret), webhook.WithLogger(logger), webhook.WithTracerProvider(k.tp))
	require.NoError(t, err)
	defer h.Close()
	body := []byte(`{"job_id":"job_1","status":"success","metadata":{}}`)
	for _, sig := range []string{webhook.Sign(hookSecret, time.Now(), body), webhook.Sign("whsec_wrong_wrong_wrong", time.Now(), body),
		webhook.Sign(hookSecret, time.Now().Add(-time.Hour), body), "t=1"} {
		req := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
		req.Header.Set(webhook.SignatureHeader, sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		errs = append(errs, rec.Body.String())
	}
	if err := webhook.Verify(webhook.Sign("whsec_wrong_wrong_wrong", time.Now(), body), body, hookSecret); err != nil {
		errs = append(errs, err.Error())
	}

	var spanText strings.Builder
	for _, s := range k.sr.Ended() {
		spanText.WriteString(s.Name() + " " + s.Status().Description + "\n")
		for _, kv := range s.Attributes() {
			spanText.WriteString(string(kv.Key) + "=" + kv.Value.String() + "\n")
		}
		for _, ev := range s.Events() {
			for _, kv := range ev.Attributes {
				spanText.WriteString(ev.Name + " " + string(kv.Key) + "=" + kv.Value.String() + "\n")
			}
		}
	}
	all := map[string]string{"logs": logs.String(), "spans": spanText.String(), "errors": strings.Join(errs, "\n")}
	for where, text := range all {
		for _, s := range secrets {
			assert.NotContains(t, text, s, "%s leak a secret", where)
		}
	}
	// The checks above can fail: the material is there, redacted.
	assert.Contains(t, all["logs"], "forwarding failed")
	assert.Contains(t, all["logs"], "signature rejected")
	assert.Contains(t, all["spans"], "REDACTED")
	assert.Contains(t, all["spans"], ezthrottle.SpanSubmit)
	assert.Contains(t, all["spans"], webhook.SpanName)
	assert.Contains(t, all["errors"], `"Authorization":"****"`, "the echoed job, scrubbed")
	assert.Contains(t, all["errors"], `api_key=****`, "the echoed job URL, scrubbed")
}
