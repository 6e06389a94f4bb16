package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
	"github.com/ezthrottle/ezthrottle-go/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testSecret = "whsec_test_0123456789abcdef"

// buffer is a goroutine-safe output buffer a test can wait on.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits until the output matches re and returns the first submatch
// (or the whole match). The bound only guards against a hang.
func (b *buffer) waitFor(t *testing.T, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(b.String()); m != nil {
			return m[len(m)-1]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("output never matched %q:\n%s", re, b.String())
	return ""
}

// env is a fake environment.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// exec runs the CLI in-process with the given environment and stdin.
func exec(t *testing.T, ctx context.Context, e env, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb buffer
	a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: e.get}
	code = a.run(ctx, args)
	return code, out.String(), errb.String()
}

// proc is a long-lived command (dev, listen) running in a goroutine.
type proc struct {
	out, err *buffer
	cancel   context.CancelFunc
	done     chan int
	once     sync.Once
	code     int
}

// background runs a long-lived command until stop is called (or it ends).
func background(t *testing.T, e env, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{out: &buffer{}, err: &buffer{}, cancel: cancel, done: make(chan int, 1)}
	a := &app{stdin: strings.NewReader(""), stdout: p.out, stderr: p.err, getenv: e.get}
	go func() { p.done <- a.run(ctx, args) }()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop cancels the command's context (as SIGINT would) and returns its exit
// status.
func (p *proc) stop() int {
	p.once.Do(func() { p.cancel(); p.code = <-p.done })
	return p.code
}

// exited waits for the command to end on its own; the bound only guards
// against a hang.
func (p *proc) exited(t *testing.T) int {
	t.Helper()
	select {
	case code := <-p.done:
		p.once.Do(func() { p.cancel(); p.code = code })
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("command did not exit on its own:\n%s", p.out.String())
		return -1
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"},
		{"dev", "--help"}, {"listen", "--help"}, {"submit", "--help"}, {"submit", "-h"}, {"help", "submit"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errs := exec(t, context.Background(), env{}, "", args...)
			assert.Equal(t, 0, code)
			assert.Empty(t, errs)
			assert.Contains(t, out, "Usage:")
			assert.Equal(t, 1, strings.Count(out, "Usage:"), "the help is printed once:\n%s", out)
			if len(args) == 2 && args[0] != "help" {
				assert.Contains(t, out, "ezthrottle "+args[0])
				assert.Contains(t, out, "Flags:")
				assert.Equal(t, 1, strings.Count(out, "Flags:"), "the help is printed once")
			}
		})
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"deploy"}, `unknown command "deploy"`},
		{"unknown flag", []string{"submit", "--nope"}, "flag provided but not defined: -nope"},
		{"stray argument", []string{"submit", "--url", "https://a.example", "extra"}, `unexpected argument "extra"`},
		{"missing url", []string{"submit"}, "--url is required"},
		{"relative url", []string{"submit", "--url", "/x", "--dry-run"}, `invalid job`},
		{"bad header", []string{"submit", "--url", "https://a.example", "--header", "nocolon"}, "want 'Name: value'"},
		{"bad metadata", []string{"submit", "--url", "https://a.example", "--metadata", "x"}, "want key=value"},
		{"json and url", []string{"submit", "--json", "-", "--url", "https://a.example"}, "--json cannot be combined with --url"},
		{"body and body-file", []string{"submit", "--url", "https://a.example", "--body", "x", "--body-file", "f"}, "mutually exclusive"},
		{"key and unique", []string{"submit", "--url", "https://a.example", "--idempotency-key", "k", "--unique"}, "mutually exclusive"},
		{"user-id without self-hosted", []string{"submit", "--url", "https://a.example", "--user-id", "u"}, "--user-id only applies"},
		{"self-hosted without user", []string{"submit", "--url", "https://a.example", "--self-hosted", "http://127.0.0.1:1"}, "needs --user-id"},
		{"self-hosted regions", []string{"submit", "--url", "https://a.example", "--self-hosted", "http://127.0.0.1:1", "--user-id", "u", "--region", "iad", "--webhook", "https://h.example"}, "regions"},
		{"bad region code", []string{"submit", "--url", "https://a.example", "--region", "IAD", "--dry-run"}, `"IAD" is not a region code`},
		{"bad region policy", []string{"submit", "--url", "https://a.example", "--region-policy", "maybe", "--dry-run"}, "region_policy"},
		{"zero timeout", []string{"submit", "--url", "https://a.example", "--timeout", "0s"}, "--timeout"},
		{"bad flag value", []string{"submit", "--timeout", "soon"}, `invalid value "soon" for flag -timeout`},
		{"dev unknown flag", []string{"dev", "--nope"}, "flag provided but not defined: -nope"},
		{"listen unknown flag", []string{"listen", "-x"}, "flag provided but not defined: -x"},
		{"help for unknown command", []string{"help", "deploy"}, `unknown command "deploy"`},
		{"dev bad rps", []string{"dev", "--rps", "0"}, "--rps"},
		{"dev bad latency", []string{"dev", "--latency", "lax"}, "region=duration"},
		{"dev unknown latency region", []string{"dev", "--regions", "iad", "--latency", "lax=1s"}, `unknown region "lax"`},
		{"dev unknown down region", []string{"dev", "--regions", "iad", "--down", "lax"}, `unknown region "lax"`},
		{"dev repeated region", []string{"dev", "--regions", "iad,lax,iad"}, `--regions: region "iad" repeated`},
		{"dev short secret", []string{"dev", "--webhook-secret", "short"}, "at least 16"},
		{"dev bad retries", []string{"dev", "--webhook-retries", "1s,soon"}, "--webhook-retries"},
		{"dev negative max finished jobs", []string{"dev", "--max-finished-jobs", "-1"}, "--max-finished-jobs"},
		{"listen bad path", []string{"listen", "--path", "hook"}, "--path must start"},
		{"listen secondary alone", []string{"listen", "--secondary-secret", testSecret}, "needs --secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := exec(t, context.Background(), env{}, "", tt.args...)
			assert.Equal(t, 2, code, "stdout: %s\nstderr: %s", out, errs)
			assert.Contains(t, errs, tt.want)
			// A usage error is a short message on stderr: no help dump.
			assert.Empty(t, out, "nothing on stdout")
			assert.NotContains(t, errs, "Flags:")
			assert.NotContains(t, errs, "Usage:")
			assert.LessOrEqual(t, strings.Count(errs, "\n"), 2, "short:\n%s", errs)
		})
	}
}

func TestSubmitDryRun(t *testing.T) {
	dir := t.TempDir()
	bodyFile := filepath.Join(dir, "body.json")
	require.NoError(t, os.WriteFile(bodyFile, []byte(`{"amount":1000}`), 0o600))
	code, out, errs := exec(t, context.Background(), env{}, "",
		"submit", "--dry-run", "--url", "https://api.example.com/charges", "--method", "post",
		"--header", "Content-Type: application/json", "--header", "X-Trace:abc",
		"--body-file", bodyFile, "--webhook", "https://app.example/a", "--webhook", "https://app.example/b",
		"--region", "iad,lax", "--region", "ord", "--execution-mode", "fanout", "--region-policy", "strict",
		"--webhook-quorum", "2", "--idempotency-key", "order-42", "--metadata", "order=42")
	require.Equal(t, 0, code, errs)
	assert.JSONEq(t, `{
		"url":"https://api.example.com/charges","method":"POST",
		"headers":{"Content-Type":"application/json","X-Trace":"abc"},
		"body":"{\"amount\":1000}",
		"metadata":{"order":"42"},
		"webhooks":[{"url":"https://app.example/a"},{"url":"https://app.example/b"}],
		"webhook_quorum":2,
		"regions":["iad","lax","ord"],
		"region_policy":"strict","execution_mode":"fanout",
		"idempotent_key":"order-42"}`, out)
}

func TestSubmitJSONFromStdinDryRun(t *testing.T) {
	in := `{"url":"https://httpbin.org/status/500","fallback_job":{"url":"https://httpbin.org/status/200","trigger":{"type":"on_error","codes":[500]}}}`
	code, out, errs := exec(t, context.Background(), env{}, in, "submit", "--json", "-", "--dry-run")
	require.Equal(t, 0, code, errs)
	assert.JSONEq(t, `{"url":"https://httpbin.org/status/500","method":"GET",
		"fallback_job":{"url":"https://httpbin.org/status/200","method":"GET","trigger":{"type":"on_error","codes":[500]}}}`, out)

	code, _, errs = exec(t, context.Background(), env{}, `{"url":`, "submit", "--json", "-")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "not a valid job object")
}

func TestSubmitUniqueKeysDiffer(t *testing.T) {
	var keys []string
	for range 2 {
		code, out, errs := exec(t, context.Background(), env{}, "", "submit", "--dry-run", "--url", "https://a.example", "--unique")
		require.Equal(t, 0, code, errs)
		var j struct {
			Key string `json:"idempotent_key"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &j))
		require.NotEmpty(t, j.Key)
		keys = append(keys, j.Key)
	}
	assert.NotEqual(t, keys[0], keys[1])
}

func TestSubmitRuntimeErrorsExit1(t *testing.T) {
	e, err := ezlocal.Start()
	require.NoError(t, err)
	defer e.Close()

	t.Run("missing API key", func(t *testing.T) {
		code, out, errs := exec(t, context.Background(), env{}, "", "submit", "--url", "https://a.example")
		assert.Equal(t, 1, code)
		assert.Empty(t, out)
		assert.Contains(t, errs, "EZTHROTTLE_API_KEY is not set")
	})
	t.Run("wrong API key is never printed", func(t *testing.T) {
		const key = "sk_wrong_but_secret_key_123456"
		code, out, errs := exec(t, context.Background(),
			env{"EZTHROTTLE_API_KEY": key, "EZTHROTTLE_PROXY_URL": e.URL(), "EZTHROTTLE_URL": e.URL()}, "",
			"submit", "--url", "https://a.example")
		assert.Equal(t, 1, code)
		assert.Empty(t, out)
		assert.Contains(t, errs, "unauthorized")
		assert.NotContains(t, errs, key)
		assert.NotContains(t, errs, key[len(key)-6:])
	})
	t.Run("unreachable engine", func(t *testing.T) {
		dead := "http://" + testnet.RefusedAddr(t)
		code, _, errs := exec(t, context.Background(),
			env{"EZTHROTTLE_API_KEY": e.APIKey()}, "",
			"submit", "--url", "https://a.example", "--proxy-url", dead, "--engine-url", dead, "--attempts", "1")
		assert.Equal(t, 1, code)
		assert.Contains(t, errs, "is the engine running?")
		assert.NotContains(t, errs, e.APIKey())
	})
}

func TestSubmitSelfHosted(t *testing.T) {
	e, err := ezlocal.Start()
	require.NoError(t, err)
	defer e.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer api.Close()

	args := []string{"submit", "--self-hosted", e.URL(), "--url", api.URL + "/x", "--method", "POST", "--body", "hi", "--webhook", api.URL + "/hook"}
	code, out, errs := exec(t, context.Background(), env{"EZTHROTTLE_USER_ID": "user-1"}, "", args...)
	require.Equal(t, 0, code, errs)
	var sub ezclient.Submission
	require.NoError(t, json.Unmarshal([]byte(out), &sub))
	assert.Regexp(t, `^[0-9a-f]{32}$`, sub.JobID)
	assert.False(t, sub.Duplicate)

	// The same request again is de-duplicated by the derived HASH key.
	code, out, errs = exec(t, context.Background(), env{"EZTHROTTLE_USER_ID": "user-1"}, "", args...)
	require.Equal(t, 0, code, errs)
	var dup ezclient.Submission
	require.NoError(t, json.Unmarshal([]byte(out), &dup))
	assert.Equal(t, sub.JobID, dup.JobID)
	assert.True(t, dup.Duplicate)

	info, err := e.WaitJob(context.Background(), sub.JobID)
	require.NoError(t, err)
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
}

func TestDevPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	code, _, errs := exec(t, context.Background(), env{}, "", "dev", "--addr", ln.Addr().String())
	assert.Equal(t, 1, code)
	assert.Contains(t, errs, "listen")
}

// TestDevSubmitListen runs the three commands against each other on
// loopback: the dev engine signs deliveries, the receiver verifies them,
// and submit sends a job whose result travels engine → API → receiver.
func TestDevSubmitListen(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"charged":true,"method":%q}`, r.Method)
	}))
	defer api.Close()

	dev := background(t, env{"EZTHROTTLE_WEBHOOK_SECRET": testSecret},
		"dev", "--addr", "127.0.0.1:0", "--regions", "iad,lax", "--down", "lax", "--webhook-retries", "none", "--verbose")
	engineURL := dev.out.waitFor(t, `export EZTHROTTLE_URL=(\S+)`)
	apiKey := dev.out.waitFor(t, `export EZTHROTTLE_API_KEY=(\S+)`)
	assert.Equal(t, ezlocal.DefaultAPIKey, apiKey)
	assert.Contains(t, dev.out.String(), "lax (down)")
	assert.Contains(t, dev.out.String(), "webhook signing on")

	lis := background(t, env{"EZTHROTTLE_WEBHOOK_SECRET": testSecret},
		"listen", "--addr", "127.0.0.1:0", "--path", "/hooks/ezthrottle")
	hookURL := lis.out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)
	assert.Contains(t, lis.out.String(), "signatures verified")

	e := env{"EZTHROTTLE_API_KEY": apiKey, "EZTHROTTLE_PROXY_URL": engineURL, "EZTHROTTLE_URL": engineURL}
	code, out, errs := exec(t, context.Background(), e, "",
		"submit", "--url", api.URL+"/v1/charges", "--method", "POST", "--body", `{"amount":1000}`,
		"--webhook", hookURL, "--metadata", "order=42", "--idempotency-key", "order-42")
	require.Equal(t, 0, code, errs)
	var sub ezclient.Submission
	require.NoError(t, json.Unmarshal([]byte(out), &sub))
	require.NotEmpty(t, sub.JobID)
	assert.Equal(t, "order-42", sub.IdempotentKey)
	assert.Equal(t, ezclient.StatusQueued, sub.Status)

	lis.out.waitFor(t, regexp.QuoteMeta(sub.JobID))
	block := lis.out.waitFor(t, `(?s)(── delivery #1.*"charged": true.*)`)
	assert.Contains(t, block, "✓ succeeded")
	assert.Contains(t, block, "key         order-42")
	assert.Contains(t, block, "status      success (HTTP 200 OK)")
	assert.Contains(t, block, "signature   verified")
	assert.Contains(t, block, `metadata    {"order":"42"}`)

	// The engine's verbose log tells the job's story on stderr.
	dev.err.waitFor(t, `job_id=`+regexp.QuoteMeta(sub.JobID)+`.*webhook_delivered`)

	// A forged delivery is rejected with 401, and reported.
	payload := `{"job_id":"job_forged","idempotent_key":"k","status":"success","response":{"status_code":200,"body":"x"},"metadata":{}}`
	req, err := http.NewRequest(http.MethodPost, hookURL, strings.NewReader(payload))
	require.NoError(t, err)
	req.Header.Set(webhook.SignatureHeader, webhook.Sign("some-other-secret-0000", time.Now(), []byte(payload)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	lis.out.waitFor(t, `✗ rejected POST /hooks/ezthrottle from \S+: 401 Unauthorized: .*signature`)
	assert.NotContains(t, lis.out.String(), "job_forged\n")
	http.DefaultClient.CloseIdleConnections()

	assert.Equal(t, 0, lis.stop())
	assert.Contains(t, lis.out.String(), "Stopped after 1 delivery(ies).")
	assert.Empty(t, lis.err.String())
	assert.Equal(t, 0, dev.stop())
	assert.Contains(t, dev.out.String(), "Engine stopped (1 job(s)")
}

func TestListenJSONUnsignedDuplicates(t *testing.T) {
	lis := background(t, env{}, "listen", "--addr", "127.0.0.1:0", "--json")
	hookURL := lis.out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)
	assert.Contains(t, lis.out.String(), "NOT verified")

	body := `{"job_id":"0123abcd","status":"completed","response_status":201,"body":"created"}`
	for range 2 { // the second delivery is a duplicate, not printed again
		resp, err := http.Post(hookURL, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	line := lis.out.waitFor(t, `(\{"job_id".*\})`)
	assert.JSONEq(t, `{"job_id":"0123abcd","succeeded":true,"status":"completed","status_code":201,"body":"created",
		"form":"self-hosted","signature_verified":false,"received_at":"X"}`,
		regexp.MustCompile(`"received_at":"[^"]*"`).ReplaceAllString(line, `"received_at":"X"`))
	assert.Equal(t, 0, lis.stop())
	assert.Equal(t, 1, strings.Count(lis.out.String(), `"job_id"`))
	assert.Contains(t, lis.out.String(), "Stopped after 1 delivery(ies).")
}

func TestListenCountExitsOnItsOwn(t *testing.T) {
	lis := background(t, env{}, "listen", "--addr", "127.0.0.1:0", "--count", "1")
	hookURL := lis.out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)
	resp, err := http.Post(hookURL, "application/json", strings.NewReader(`{"job_id":"j1","status":"failed","reason":"boom"}`))
	require.NoError(t, err)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	assert.Equal(t, 0, lis.exited(t))
	out := lis.out.String()
	assert.Contains(t, out, "✗ failed")
	assert.Contains(t, out, "reason      boom")
}

// Ctrl-C (a cancelled ctx) stops 'submit --json -' while it waits for stdin:
// main catches SIGINT, so a read that ignores ctx hangs until EOF.
func TestSubmitStdinInterrupted(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var errb buffer
	a := &app{stdin: pr, stdout: &buffer{}, stderr: &errb, getenv: env{}.get}
	done := make(chan int, 1)
	go func() { done <- a.run(ctx, []string{"submit", "--json", "-", "--dry-run"}) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 1, code)
		assert.Contains(t, errb.String(), "interrupted")
	case <-time.After(5 * time.Second):
		_ = pw.Close()
		<-done
		t.Fatal("submit kept reading stdin after the interrupt")
	}
}

// TestSubmitHeaderIdempotencyKey: --header 'Idempotency-Key: …' becomes
// the job's idempotent_key, in the dry run and on the wire of both dialects
// (issue 13 item 8).
func TestSubmitHeaderIdempotencyKey(t *testing.T) {
	code, out, errs := exec(t, context.Background(), env{}, "", "submit", "--dry-run", "--url", "https://a.example",
		"--header", "idempotency-key: order-7")
	require.Equal(t, 0, code, errs)
	var j struct {
		Key string `json:"idempotent_key"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &j))
	assert.Equal(t, "order-7", j.Key)

	var (
		mu   sync.Mutex
		sent map[string]any
	)
	eng := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewDecoder(r.Body).Decode(&sent)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued"}`)
	}))
	defer eng.Close()
	code, out, errs = exec(t, context.Background(), env{}, "", "submit", "--self-hosted", eng.URL, "--user-id", "u",
		"--url", "https://a.example/x", "--webhook", "https://h.example/", "--header", "Idempotency-Key: order-8")
	require.Equal(t, 0, code, errs)
	var sub ezclient.Submission
	require.NoError(t, json.Unmarshal([]byte(out), &sub))
	assert.Equal(t, "order-8", sub.IdempotentKey)
	mu.Lock()
	assert.Equal(t, "order-8", sent["idempotent_key"])
	mu.Unlock()
}

// TestDevSelfHostedSubmitListen: the self-hosted path end to end with a
// webhook secret set for both dev and listen. Self-hosted engines (dev too)
// deliver unsigned, so listen accepts the self-hosted delivery and says it
// is not verified, while it still rejects unsigned Cloud-form deliveries;
// the banners say so (issue 13 item 12).
func TestDevSelfHostedSubmitListen(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "pong") }))
	defer api.Close()
	secretEnv := env{"EZTHROTTLE_WEBHOOK_SECRET": testSecret}
	dev := background(t, secretEnv, "dev", "--addr", "127.0.0.1:0", "--webhook-retries", "none")
	engineURL := dev.out.waitFor(t, `export EZTHROTTLE_URL=(\S+)`)
	assert.Contains(t, dev.out.String(), "self-hosted jobs (POST /jobs) are delivered unsigned")

	lis := background(t, secretEnv, "listen", "--addr", "127.0.0.1:0")
	hookURL := lis.out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)
	assert.Contains(t, lis.out.String(), "self-hosted deliveries: accepted NOT verified")

	code, out, errs := exec(t, context.Background(), env{}, "", "submit", "--self-hosted", engineURL, "--user-id", "u1",
		"--url", api.URL+"/ping", "--webhook", hookURL)
	require.Equal(t, 0, code, errs)
	var sub ezclient.Submission
	require.NoError(t, json.Unmarshal([]byte(out), &sub))
	block := lis.out.waitFor(t, `(?s)(── delivery #1.*pong.*)`)
	assert.Contains(t, block, sub.JobID)
	assert.Contains(t, block, "✓ succeeded")
	assert.Contains(t, block, "signature   NOT verified (self-hosted engines do not sign deliveries)")
	assert.Contains(t, block, "form        self-hosted")
	assert.NotContains(t, lis.out.String(), "✗ rejected")

	// An unsigned Cloud-form delivery is still rejected.
	payload := `{"job_id":"job_forged","idempotent_key":"k","status":"success","response":{"status_code":200,"body":"x"},"metadata":{}}`
	resp, err := http.Post(hookURL, "application/json", strings.NewReader(payload))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	http.DefaultClient.CloseIdleConnections()
	lis.out.waitFor(t, `✗ rejected POST / from \S+: 401`)

	assert.Equal(t, 0, lis.stop())
	assert.Equal(t, 0, dev.stop())
}

// TestListenSignedOnly: --signed-only rejects the unsigned self-hosted
// deliveries that a self-hosted engine sends.
func TestListenSignedOnly(t *testing.T) {
	lis := background(t, env{"EZTHROTTLE_WEBHOOK_SECRET": testSecret}, "listen", "--addr", "127.0.0.1:0", "--signed-only", "--json")
	hookURL := lis.out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)
	assert.Contains(t, lis.out.String(), "--signed-only")
	body := `{"job_id":"0123abcd","status":"completed","response_status":200,"body":"ok"}`
	resp, err := http.Post(hookURL, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	// Signed, it is accepted and shown as verified.
	req, _ := http.NewRequest(http.MethodPost, hookURL, strings.NewReader(body))
	req.Header.Set(webhook.SignatureHeader, webhook.Sign(testSecret, time.Now(), []byte(body)))
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	http.DefaultClient.CloseIdleConnections()
	line := lis.out.waitFor(t, `(\{"job_id".*\})`)
	assert.Contains(t, line, `"signature_verified":true`)
	assert.Equal(t, 0, lis.stop())

	code, _, errs := exec(t, context.Background(), env{}, "", "listen", "--signed-only")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "--signed-only needs --secret")
}

// TestDevMaxFinishedJobs: 'ezthrottle dev' bounds the settled jobs it keeps
// (10,000 by default); a forgotten job's status lookup answers 404 like an
// unknown job.
func TestDevMaxFinishedJobs(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer api.Close()
	dev := background(t, env{}, "dev", "--addr", "127.0.0.1:0", "--max-finished-jobs", "1")
	engineURL := dev.out.waitFor(t, `export EZTHROTTLE_URL=(\S+)`)
	assert.Contains(t, dev.out.String(), "the last 1 settled jobs")
	c, err := ezclient.New(ezclient.WithSelfHosted(engineURL, "u"))
	require.NoError(t, err)
	ctx := context.Background()
	var ids []string
	for i := range 2 {
		sub, err := c.Submit(ctx, &ezclient.Job{URL: api.URL + "/" + strconv.Itoa(i), Webhooks: []ezclient.Webhook{{URL: api.URL + "/hook"}}})
		require.NoError(t, err)
		_, err = c.WaitJob(ctx, sub.JobID)
		require.NoError(t, err)
		ids = append(ids, sub.JobID)
	}
	// The first job is forgotten once the second has settled (its webhook
	// delivered), just after it completed.
	require.Eventually(t, func() bool {
		_, err := c.GetJob(ctx, ids[0])
		return errors.Is(err, ezclient.ErrNotFound)
	}, 20*time.Second, 5*time.Millisecond)
	_, err = c.GetJob(ctx, ids[1])
	require.NoError(t, err)
	c.HTTPClient().CloseIdleConnections()
	assert.Equal(t, 0, dev.stop())
	assert.Contains(t, dev.out.String(), "Engine stopped (2 job(s)")

	// The default keeps 10,000.
	def := background(t, env{}, "dev", "--addr", "127.0.0.1:0")
	def.out.waitFor(t, `(the last 10000 settled jobs)`)
	assert.Equal(t, 0, def.stop())
}

// slowBuffer is a buffer whose writes take a while: a terminal that
// prints slower than results arrive.
type slowBuffer struct{ buffer }

func (b *slowBuffer) Write(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return b.buffer.Write(p)
}

// TestListenPrintsEveryResultUnderLoad: results arriving faster than they
// are printed are all printed, exactly once each: deliveries wait for the
// printer and, past the wait, are refused with 503 (and redelivered, as the
// engine does), never acknowledged and then skipped.
func TestListenPrintsEveryResultUnderLoad(t *testing.T) {
	out := &slowBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	a := &app{stdin: strings.NewReader(""), stdout: out, stderr: &buffer{}, getenv: env{}.get}
	go func() { done <- a.run(ctx, []string{"listen", "--addr", "127.0.0.1:0", "--json"}) }()
	defer func() { cancel(); <-done }()
	hookURL := out.waitFor(t, `Listening for EZThrottle webhooks on (\S+)`)

	const jobs, senders = 2000, 32
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var refused atomic.Int64
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := s; j < jobs; j += senders {
				body := fmt.Sprintf(`{"job_id":"job-%05d","status":"completed","response_status":200,"body":"ok"}`, j)
				for {
					resp, err := client.Post(hookURL, "application/json", strings.NewReader(body))
					if !assert.NoError(t, err) {
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
					if !assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode) {
						return
					}
					refused.Add(1)
					time.Sleep(time.Millisecond) // the engine's redelivery
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d deliveries refused while the printer lagged", refused.Load())
	// Every acknowledged result is printed; the bound only guards a hang.
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(out.String(), `"job_id"`) < jobs && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	printed := out.String()
	for j := range jobs {
		if n := strings.Count(printed, fmt.Sprintf(`"job_id":"job-%05d"`, j)); n != 1 {
			t.Fatalf("job-%05d printed %d times (%d lines in all)", j, n, strings.Count(printed, `"job_id"`))
		}
	}
}
