package main

// The canary test of the README's Security section. It lives in the CLI's
// package because only from here can one test reach every sink: the
// Transport, ezclient, the webhook Handler, the local engine and the CLI.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
	"github.com/ezthrottle/ezthrottle-go/internal/testnet"
	"github.com/ezthrottle/ezthrottle-go/redislimit"
)

// Every canary secret contains the word canaryWord, and nothing else in
// the test does: a sink that contains the word leaks a secret, in whatever
// encoding (percent-encoded and JSON-escaped forms keep the word).
const (
	canaryWord    = "CANARY"
	cAPIKey       = "ezt_CANARY_apikey_0001"
	cBearer       = "CANARY_bearer_tok_0002"
	cCookie       = "CANARY_cookie_0003"
	cXAPIKey      = "CANARY_xapikey_0004"
	cUser         = "CANARYuser05"
	cPass         = "CANARY_pass_0006"
	cAPIKeyParam  = "CANARY_apikeyparam_0007"
	cTokenEncoded = "tk%2FCANARY_q%2BEnc%3D%3D" // decoded: tk/CANARY_q+Enc==
	cHookSecret   = "whsec_CANARY_hook_000000008"
	cRedisPass    = "CANARY_redis_0009"
	cSetCookie    = "CANARY_setcookie_0010"
	cAccessToken  = "CANARY_access_token_0011"
	cCustomCred   = "CANARY_custom_0012" // in a header named only by WithSensitiveHeaders
)

// canaryURL is a destination URL carrying user info and secret query
// values (one percent-encoded) on host.
func canaryURL(host string) string {
	return "http://" + cUser + ":" + cPass + "@" + host + "/v1/charges?limit=1&api_key=" + cAPIKeyParam + "&token=" + cTokenEncoded
}

func canaryHeaders() map[string]string {
	return map[string]string{"Authorization": "Bearer " + cBearer, "Cookie": "sid=" + cCookie, "X-Api-Key": cXAPIKey,
		"Content-Type": "application/json"}
}

func canaryJob(host, hook string) *ezclient.Job {
	return &ezclient.Job{URL: canaryURL(host), Method: "POST", Headers: canaryHeaders(), Body: `{"amount":1}`,
		Webhooks: []ezclient.Webhook{{URL: hook}}}
}

// sinks collects everything a path produced: log records at debug level,
// spans (attributes, events, statuses) and texts (errors in every fmt verb,
// HTTP replies, CLI output).
type sinks struct {
	logs  *buffer
	rec   *tracetest.SpanRecorder
	tp    *sdktrace.TracerProvider
	texts []string
}

func newSinks() *sinks {
	rec := tracetest.NewSpanRecorder()
	return &sinks{logs: &buffer{}, rec: rec, tp: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))}
}

func (s *sinks) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// text adds outputs.
func (s *sinks) text(ts ...string) { s.texts = append(s.texts, ts...) }

// value adds v in every fmt verb.
func (s *sinks) value(v any) {
	s.text(fmt.Sprintf("%v", v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v), fmt.Sprintf("%s", v))
}

// err adds err in every verb, and each of the library's own errors in its
// tree in every verb too.
func (s *sinks) err(err error) {
	if err == nil {
		return
	}
	var walk func(error, int)
	walk = func(e error, depth int) {
		if e == nil || depth > 16 {
			return
		}
		t := reflect.TypeOf(e)
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if depth == 0 || strings.HasPrefix(t.PkgPath(), "github.com/ezthrottle/") {
			s.value(e)
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x, depth+1)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap(), depth+1)
		}
	}
	walk(err, 0)
}

// spans renders every recorded span: name, status, attributes, events and
// their attributes, links' attributes.
func (s *sinks) spans() string {
	var b strings.Builder
	for _, sp := range s.rec.Ended() {
		fmt.Fprintf(&b, "%s status=%q\n", sp.Name(), sp.Status().Description)
		for _, kv := range sp.Attributes() {
			fmt.Fprintf(&b, "  %s=%s\n", kv.Key, kv.Value.String())
		}
		for _, ev := range sp.Events() {
			fmt.Fprintf(&b, "  event %s\n", ev.Name)
			for _, kv := range ev.Attributes {
				fmt.Fprintf(&b, "    %s=%s\n", kv.Key, kv.Value.String())
			}
		}
		for _, l := range sp.Links() {
			for _, kv := range l.Attributes {
				fmt.Fprintf(&b, "  link %s=%s\n", kv.Key, kv.Value.String())
			}
		}
	}
	return b.String()
}

// echoEngine answers every call with status, echoing what it received:
// the raw body, its percent-decoded form, the Cloud envelope's inner job
// and every request header (the proxy call's Authorization carries the API
// key). With forwarded, a Cloud reply is the proxy's 200 wrapping the
// engine's failure (forwarded_response), else the proxy's own failure.
func echoEngine(t *testing.T, status int, forwarded bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		parts := []string{"raw: " + string(b)}
		if d, err := url.QueryUnescape(string(b)); err == nil {
			parts = append(parts, "decoded: "+d)
		}
		var env struct {
			Body string `json:"body"`
		}
		if json.Unmarshal(b, &env) == nil && env.Body != "" {
			parts = append(parts, "inner: "+env.Body)
			var job struct {
				URL string `json:"url"`
			}
			if json.Unmarshal([]byte(env.Body), &job) == nil {
				if d, err := url.QueryUnescape(job.URL); err == nil {
					parts = append(parts, "url: "+d)
				}
			}
		}
		for k, v := range r.Header {
			parts = append(parts, k+": "+strings.Join(v, ", "))
		}
		msg := strings.Join(parts, "\n")
		reply, _ := json.Marshal(map[string]string{"error": msg, "message": "rejected"})
		w.Header().Set("Content-Type", "application/json")
		if forwarded && strings.HasPrefix(r.URL.Path, "/api/v1/proxy") {
			out, _ := json.Marshal(map[string]any{"status": "allowed", "forwarded_response": map[string]any{"status_code": status, "body": string(reply)}})
			_, _ = w.Write(out)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write(reply)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// canaryClient returns an ezclient for dialect d against engineURL, with
// three quick tries and the sinks' logger.
func canaryClient(t *testing.T, s *sinks, selfHosted bool, engineURL string) *ezclient.Client {
	opts := []ezclient.Option{ezclient.WithLogger(s.logger()), ezclient.WithRetry(3, time.Millisecond, 2*time.Millisecond)}
	if selfHosted {
		opts = append(opts, ezclient.WithSelfHosted(engineURL, "user-1"))
	} else {
		opts = append(opts, ezclient.WithAPIKey(cAPIKey), ezclient.WithProxyURL(engineURL), ezclient.WithEngineURL(engineURL))
	}
	c, err := ezclient.New(opts...)
	require.NoError(t, err)
	s.value(c)
	return c
}

// startAPI is a destination that answers with a session cookie and an
// access token in the body.
func startAPI(t *testing.T) *httptest.Server {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "session="+cSetCookie+"; Path=/")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer"}`, cAccessToken)
	}))
	t.Cleanup(api.Close)
	return api
}

// TestCanarySecretsReachNoSink drives every path of the library, for the
// Cloud and the self-hosted dialect, with canary secrets everywhere a
// caller or an engine puts them (Authorization, Cookie, X-Api-Key, URL user
// info, api_key and a percent-encoded token in the query, the EZThrottle API
// key, the webhook secret, a Redis password, a destination's Set-Cookie and
// access token), against engines that echo the job back, with every logger
// at debug level; then greps every sink (log records, recorded spans,
// errors in %v/%+v/%#v/%s, HTTP replies, CLI stdout/stderr) for the
// canaries. A new call site that forgets redaction fails here.
func TestCanarySecretsReachNoSink(t *testing.T) {
	paths := []struct {
		name string
		run  func(t *testing.T, s *sinks, selfHosted bool)
	}{
		{"ezclient retry loop, engine 5xx echoing the job", func(t *testing.T, s *sinks, selfHosted bool) {
			for _, forwarded := range []bool{false, true} {
				eng := echoEngine(t, http.StatusServiceUnavailable, forwarded)
				c := canaryClient(t, s, selfHosted, eng.URL)
				_, err := c.Submit(context.Background(), canaryJob("api.example.com", "https://hooks.example.com/h"))
				require.Error(t, err)
				s.err(err)
			}
			require.Contains(t, s.logs.String(), "engine call failed, retrying")
		}},
		{"ezclient 4xx and 401 echoing the job", func(t *testing.T, s *sinks, selfHosted bool) {
			for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusTooManyRequests} {
				eng := echoEngine(t, code, false)
				c := canaryClient(t, s, selfHosted, eng.URL)
				_, err := c.Submit(context.Background(), canaryJob("api.example.com", "https://hooks.example.com/h"))
				require.Error(t, err)
				s.err(err)
				_, err = c.GetJob(context.Background(), "job_1")
				s.err(err)
			}
		}},
		{"ezclient validation errors", func(t *testing.T, s *sinks, selfHosted bool) {
			c := canaryClient(t, s, selfHosted, "http://127.0.0.1:1")
			for _, u := range []string{"ftp://" + cUser + ":" + cPass + "@h/x?api_key=" + cAPIKeyParam,
				"http://" + cUser + ":" + cPass + "@/x?token=" + cTokenEncoded, "/relative?api_key=" + cAPIKeyParam} {
				j := canaryJob("h", "https://hooks.example.com/h")
				j.URL = u
				_, err := c.Submit(context.Background(), j)
				require.ErrorIs(t, err, ezclient.ErrValidation)
				s.err(err)
				s.err(j.Validate())
			}
			_, err := ezclient.New(ezclient.WithAPIKey(cAPIKey), ezclient.WithProxyURL("ftp://"+cUser+":"+cPass+"@h"))
			require.Error(t, err)
			s.err(err)
		}},
		{"ezclient engine unreachable", func(t *testing.T, s *sinks, selfHosted bool) {
			addr := testnet.RefusedAddr(t)
			c := canaryClient(t, s, selfHosted, "http://"+cUser+":"+cPass+"@"+addr)
			_, err := c.Submit(context.Background(), canaryJob("api.example.com", "https://hooks.example.com/h"))
			require.True(t, ezclient.IsUnreachable(err), "%v", err)
			s.err(err)
		}},
		{"ezclient Steps: FRUGAL local failure forwarded to an echoing engine", func(t *testing.T, s *sinks, selfHosted bool) {
			eng := echoEngine(t, http.StatusServiceUnavailable, true)
			c := canaryClient(t, s, selfHosted, eng.URL)
			dead := testnet.RefusedAddr(t)
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprintf(w, `{"error":"slow down","token":%q}`, cAccessToken)
			}))
			defer api.Close()
			for _, host := range []string{dead, strings.TrimPrefix(api.URL, "http://")} {
				step := c.Step().URL(canaryURL(host)).Method("POST").Headers(canaryHeaders()).Body(`{"a":1}`).
					Type(ezclient.StepFrugal).FallbackOnError(429, 500).Webhook(ezclient.Webhook{URL: "https://hooks.example.com/h"})
				s.value(step)
				res, err := step.Execute(context.Background())
				s.err(err)
				if res != nil {
					s.value(res)
					s.err(res.Err)
					for _, fb := range res.Fallbacks {
						s.err(fb.Err)
					}
				}
			}
			require.Contains(t, s.logs.String(), "local attempt")
		}},
		{"Transport forwarding to an echoing engine", func(t *testing.T, s *sinks, selfHosted bool) {
			eng := echoEngine(t, http.StatusBadGateway, false)
			c := canaryClient(t, s, selfHosted, eng.URL)
			calls := 0
			base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				calls++
				if r.Body != nil {
					_ = r.Body.Close()
				}
				if calls%2 == 0 {
					return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
				}
				return &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
			})
			tr, err := ezthrottle.New(ezthrottle.WithBase(base), ezthrottle.WithClient(c, ezthrottle.JobWebhook("https://hooks.example.com/h")),
				ezthrottle.WithLogger(s.logger()), ezthrottle.WithTracerProvider(s.tp), ezthrottle.WithRequestSpan(),
				ezthrottle.WithForwardOnNetworkError(true), ezthrottle.WithSensitiveHeaders("X-Custom-Cred"))
			require.NoError(t, err)
			s.value(tr)
			for i := 0; i < 2; i++ {
				ctx, receipt := ezthrottle.WithReceipt(context.Background())
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, canaryURL("api.example.com"), strings.NewReader(`{"a":1}`))
				require.NoError(t, err)
				for k, v := range canaryHeaders() {
					req.Header.Set(k, v)
				}
				req.Header.Set("X-Custom-Cred", cCustomCred)
				resp, err := tr.RoundTrip(req)
				if err == nil {
					_ = resp.Body.Close()
				}
				s.err(err)
				require.Error(t, receipt.Err())
				s.err(receipt.Err())
			}
			require.Contains(t, s.logs.String(), "forwarding failed")
		}},
		{"AutoForward and ForwardError", func(t *testing.T, s *sinks, selfHosted bool) {
			eng := echoEngine(t, http.StatusServiceUnavailable, true)
			c := canaryClient(t, s, selfHosted, eng.URL)
			fe := &ezthrottle.ForwardError{Job: *canaryJob("api.example.com", "https://hooks.example.com/h"), Cause: errors.New("upstream 429")}
			s.err(fe)
			s.err(fmt.Errorf("charging: %w", fe))
			ctx, span := s.tp.Tracer("test").Start(context.Background(), "caller")
			_, _, err := ezthrottle.AutoForward(ctx, c, func(context.Context) (int, error) { return 0, fe })
			span.End()
			require.Error(t, err)
			s.err(err)
		}},
		{"webhook Handler and Verifier", func(t *testing.T, s *sinks, _ bool) {
			h, err := webhook.NewHandler(webhook.WithSecret(cHookSecret), webhook.WithLogger(s.logger()), webhook.WithTracerProvider(s.tp))
			require.NoError(t, err)
			defer h.Close()
			s.value(h)
			v := webhook.Verifier{Primary: cHookSecret, Secondary: cHookSecret + "_old"}
			s.value(v)
			s.value(&v)
			body := []byte(`{"job_id":"job_1","idempotent_key":"k1","status":"success","response":{"status_code":200,` +
				`"headers":{"Set-Cookie":"session=` + cSetCookie + `"},"body":"{\"access_token\":\"` + cAccessToken + `\"}"},"metadata":{}}`)
			now := time.Now()
			for _, sig := range []string{webhook.Sign(cHookSecret, now, body), webhook.Sign(cHookSecret, now, body),
				webhook.Sign("whsec_wrong_wrong_wrong", now, body), webhook.Sign(cHookSecret, now.Add(-time.Hour), body), "t=1,v1=" + cHookSecret} {
				req := httptest.NewRequest(http.MethodPost, "/hook?token="+cTokenEncoded, strings.NewReader(string(body)))
				req.Header.Set(webhook.SignatureHeader, sig)
				req.Header.Set("Authorization", "Bearer "+cBearer)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				s.text(rec.Body.String(), fmt.Sprint(rec.Header()))
				s.err(v.Verify(sig, body))
			}
			s.err(webhook.Verify("t=1,v1="+cHookSecret, body, cHookSecret))
		}},
		{"local engine (ezlocal) with a webhook receiver", func(t *testing.T, s *sinks, selfHosted bool) {
			api := startAPI(t)
			h, err := webhook.NewHandler(webhook.WithSecret(cHookSecret), webhook.WithLogger(s.logger()), webhook.WithTracerProvider(s.tp))
			require.NoError(t, err)
			defer h.Close()
			hook := httptest.NewServer(h)
			defer hook.Close()
			e, err := ezlocal.Start(ezlocal.WithLogger(s.logger()), ezlocal.WithTracerProvider(s.tp), ezlocal.WithAPIKey(cAPIKey, "cus_1"),
				ezlocal.WithWebhookSecrets("cus_1", cHookSecret, ""), ezlocal.WithRetryDelay(time.Millisecond),
				ezlocal.WithWebhookRetries())
			require.NoError(t, err)
			defer e.Close()
			if selfHosted {
				require.NoError(t, e.SetWebhookSecrets("user-1", cHookSecret, ""))
			}
			c := canaryClient(t, s, selfHosted, e.URL())
			job := canaryJob(strings.TrimPrefix(api.URL, "http://"), hook.URL+"/hook")
			sub, err := c.Submit(context.Background(), job)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			info, err := e.WaitJob(ctx, sub.JobID)
			require.NoError(t, err)
			require.NoError(t, e.WaitIdle(ctx))
			require.Equal(t, ezclient.StatusCompleted, info.Status)
			for _, ev := range info.Events {
				s.text(ev.String())
			}
			// A destination that cannot be reached: the transport error,
			// which quotes the URL, goes into events and logs.
			dead := testnet.RefusedAddr(t)
			sub, err = c.Submit(context.Background(), canaryJob(dead, hook.URL+"/hook"))
			require.NoError(t, err)
			info, err = e.WaitJob(ctx, sub.JobID)
			require.NoError(t, err)
			require.NoError(t, e.WaitIdle(ctx))
			for _, ev := range info.Events {
				s.text(ev.String())
			}
			// The engine's refusals quote what they refuse.
			j := canaryJob("h", hook.URL)
			j.URL = "ftp://" + cUser + ":" + cPass + "@h/x?api_key=" + cAPIKeyParam
			b, _ := json.Marshal(map[string]any{"target_url": j.URL, "method": "POST", "body": "{}"})
			req, _ := http.NewRequest(http.MethodPost, e.URL()+"/api/v1/proxy", strings.NewReader(string(b)))
			req.Header.Set("Authorization", "Bearer "+cAPIKey)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			rb, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			s.text(string(rb))
			http.DefaultClient.CloseIdleConnections()
			require.Contains(t, s.logs.String(), "ezlocal: job event")
		}},
		{"CLI submit to an echoing engine", func(t *testing.T, s *sinks, selfHosted bool) {
			eng := echoEngine(t, http.StatusServiceUnavailable, true)
			args := []string{"submit", "--url", canaryURL("api.example.com"), "--method", "POST", "--body", `{"a":1}`,
				"--header", "Authorization: Bearer " + cBearer, "--header", "Cookie: sid=" + cCookie, "--header", "X-Api-Key: " + cXAPIKey,
				"--webhook", "https://hooks.example.com/h?token=" + cTokenEncoded, "--attempts", "2"}
			e := env{"EZTHROTTLE_API_KEY": cAPIKey, "EZTHROTTLE_PROXY_URL": eng.URL, "EZTHROTTLE_URL": eng.URL}
			if selfHosted {
				args = append(args, "--self-hosted", eng.URL, "--user-id", "user-1")
			}
			code, out, errs := exec(t, context.Background(), e, "", args...)
			require.Equal(t, 1, code, errs)
			s.text(out, errs)
			code, out, errs = exec(t, context.Background(), e, "", append(args, "--dry-run")...)
			require.Equal(t, 0, code, errs)
			_ = out // --dry-run prints the job the user typed, on purpose
			s.text(errs)
		}},
		{"CLI dev --verbose and listen", func(t *testing.T, s *sinks, selfHosted bool) {
			api := startAPI(t)
			dev := background(t, env{"EZTHROTTLE_WEBHOOK_SECRET": cHookSecret},
				"dev", "--addr", "127.0.0.1:0", "--webhook-retries", "none", "--retry-delay", "1ms", "--verbose")
			engineURL := dev.out.waitFor(t, `export EZTHROTTLE_URL=(\S+)`)
			apiKey := dev.out.waitFor(t, `export EZTHROTTLE_API_KEY=(\S+)`)
			// dev signs deliveries for its Cloud customer only.
			lisEnv := env{"EZTHROTTLE_WEBHOOK_SECRET": cHookSecret}
			if selfHosted {
				lisEnv = env{}
			}
			lis := background(t, lisEnv, "listen", "--addr", "127.0.0.1:0", "--max-body", "0")
			hookURL := lis.out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)
			lisJSON := background(t, lisEnv, "listen", "--addr", "127.0.0.1:0", "--json")
			hookJSON := lisJSON.out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)
			e := env{"EZTHROTTLE_API_KEY": apiKey, "EZTHROTTLE_PROXY_URL": engineURL, "EZTHROTTLE_URL": engineURL}
			for _, hook := range []string{hookURL, hookJSON} {
				args := []string{"submit", "--url", canaryURL(strings.TrimPrefix(api.URL, "http://")), "--method", "POST",
					"--header", "Authorization: Bearer " + cBearer, "--header", "Cookie: sid=" + cCookie, "--webhook", hook, "--unique"}
				if selfHosted {
					args = append(args, "--self-hosted", engineURL, "--user-id", "user-1")
				}
				code, out, errs := exec(t, context.Background(), e, "", args...)
				require.Equal(t, 0, code, errs)
				s.text(out, errs)
			}
			lis.out.waitFor(t, `(── delivery #1)`)
			lisJSON.out.waitFor(t, `("job_id")`)
			dev.err.waitFor(t, `(webhook_delivered)`)
			assert.Equal(t, 0, lis.stop())
			assert.Equal(t, 0, lisJSON.stop())
			assert.Equal(t, 0, dev.stop())
			s.text(dev.out.String(), dev.err.String(), lis.out.String(), lis.err.String(), lisJSON.out.String(), lisJSON.err.String())
		}},
		{"secret holders in every verb", func(t *testing.T, s *sinks, _ bool) {
			rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", Password: cRedisPass, MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
			defer rdb.Close()
			l, err := redislimit.New(rdb, redislimit.WithLogger(s.logger()), redislimit.WithPrefix("canary-test:"))
			require.NoError(t, err)
			defer l.Close()
			s.value(l)
			e, err := ezlocal.New(ezlocal.WithAPIKey(cAPIKey, "cus_1"), ezlocal.WithWebhookSecrets("cus_1", cHookSecret, ""))
			require.NoError(t, err)
			defer e.Close()
			s.value(e)
			type holder struct {
				L *redislimit.Limiter
				V webhook.Verifier
				E *ezlocal.Engine
			}
			s.value(holder{l, webhook.Verifier{Primary: cHookSecret}, e})
			job := canaryJob("api.example.com", "https://hooks.example.com/h?token="+cTokenEncoded)
			job.OnSuccess = canaryJob("api.example.com", "https://hooks.example.com/h")
			s.value(job)
			s.value(*job)
		}},
	}
	for _, p := range paths {
		for _, selfHosted := range []bool{false, true} {
			dialect := "cloud"
			if selfHosted {
				dialect = "self-hosted"
			}
			t.Run(p.name+"/"+dialect, func(t *testing.T) {
				s := newSinks()
				p.run(t, s, selfHosted)
				require.NoError(t, s.tp.Shutdown(context.Background()))
				all := map[string]string{"logs": s.logs.String(), "spans": s.spans(), "errors and outputs": strings.Join(s.texts, "\n")}
				for sink, text := range all {
					if i := strings.Index(text, canaryWord); i >= 0 {
						t.Errorf("%s leak a canary secret: …%s…", sink, excerpt(text, i))
					}
				}
			})
		}
	}
}

// excerpt returns the text around i.
func excerpt(s string, i int) string {
	lo, hi := max(0, i-200), min(len(s), i+100)
	return s[lo:hi]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
