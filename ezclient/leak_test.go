package ezclient

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests of issue 14, items 1, 3, 4 and 6. Every secret contains
// leakWord; nothing else does.
const leakWord = "SECRETX"

// leakJob carries secrets in user info, the query (one percent-encoded:
// tk/SECRETX_q+Enc== as sent) and credential headers.
func leakJob() *Job {
	return &Job{
		URL:    "https://usr_SECRETX:pw_SECRETX@api.example.com/v1/x?api_key=k_SECRETX_1&token=tk%2FSECRETX_q%2BEnc%3D%3D",
		Method: "POST", Body: `{"a":1}`,
		Headers:  map[string]string{"Authorization": "Bearer bt_SECRETX_2", "Cookie": "sid=ck_SECRETX_3", "X-Api-Key": "xk_SECRETX_4"},
		Webhooks: []Webhook{{URL: "https://hooks.example.com/h"}},
	}
}

// formats renders v in every verb.
func formats(v any) string {
	return fmt.Sprintf("%v\n%+v\n%#v\n%s", v, v, v, v)
}

// echoBody is an engine reply echoing what it received, raw and decoded.
func echoBody(r fxRequest) string {
	body := string(r.Body)
	if r.Env.Body != "" {
		body += " inner: " + r.Env.Body
	}
	decoded := strings.NewReplacer("%2F", "/", "%2B", "+", "%3D", "=").Replace(body)
	lower := strings.NewReplacer("%2F", "%2f", "%2B", "%2b", "%3D", "%3d").Replace(body)
	return fmt.Sprintf(`{"error":%q}`, "rejected "+body+" decoded "+decoded+" lower "+lower+" auth "+r.Header.Get("Authorization"))
}

// TestRetryLogAndErrorsScrubEchoedJob (items 1 and 3): an engine (or the
// proxy) whose 5xx and 4xx replies echo the job, decoded or percent-encoded
// in either hex case, puts no secret in the retry loop's Warn lines or in
// the error Submit returns, on both dialects.
func TestRetryLogAndErrorsScrubEchoedJob(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cloud bool
		reply func(r fxRequest) fxReply
	}{
		{"cloud proxy 503", true, func(r fxRequest) fxReply { return fxReply{status: 503, body: echoBody(r)} }},
		{"cloud engine 503 behind the proxy", true, func(r fxRequest) fxReply { return fxForward(503, echoBody(r)) }},
		{"cloud engine 400", true, func(r fxRequest) fxReply { return fxForward(400, echoBody(r)) }},
		{"self-hosted 503", false, func(r fxRequest) fxReply { return fxReply{status: 503, body: echoBody(r)} }},
		{"self-hosted 422", false, func(r fxRequest) fxReply { return fxReply{status: 422, body: echoBody(r)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := fxNewServer(t)
			srv.handle = func(_ int, r fxRequest) fxReply { return tc.reply(r) }
			logger, logs := fxLogs()
			var c *Client
			if tc.cloud {
				c, _ = fxCloud(t, srv, WithLogger(logger), WithRetry(3, 0, 0))
			} else {
				c, _ = fxSelfHosted(t, srv, WithLogger(logger), WithRetry(3, 0, 0))
			}
			_, err := c.Submit(context.Background(), leakJob())
			require.Error(t, err)
			assert.NotContains(t, formats(err), leakWord)
			assert.NotContains(t, logs.String(), leakWord)
			assert.Contains(t, err.Error(), "rejected", "the echo is there, scrubbed")
		})
	}
}

// TestValidationErrorRedactsCredentials (item 4): every way a URL can be
// invalid quotes it without its credentials, in Error, in every verb and
// in the Reason field itself.
func TestValidationErrorRedactsCredentials(t *testing.T) {
	for _, u := range []string{
		"ftp://usr_SECRETX:pw_SECRETX@h/x",
		"https://usr_SECRETX:pw_SECRETX@/x",
		"/relative?api_key=k_SECRETX_1&token=tk%2FSECRETX_q%2BEnc%3D%3D",
		"mailto:x?access_token=tk_SECRETX",
		"http://h/x?sig=s_SECRETX\x7f",
	} {
		j := leakJob()
		j.URL = u
		for _, err := range []error{j.Validate(), ValidateURL("url", u), fxSubmitErr(t, j)} {
			require.ErrorIs(t, err, ErrValidation, u)
			assert.NotContains(t, formats(err), leakWord, u)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.NotContains(t, ve.Reason, leakWord)
		}
		_, err := New(withGetenv(fxNoEnv), WithAPIKey(fxKey), WithProxyURL(u))
		require.Error(t, err)
		assert.NotContains(t, formats(err), leakWord, u)
	}
	// A hand-made one is rendered redacted too.
	ve := &ValidationError{Field: "url", Reason: `"https://u:pw_SECRETX@h/" is odd`}
	assert.NotContains(t, formats(ve), leakWord)
}

func fxSubmitErr(t *testing.T, j *Job) error {
	c, _ := fxSelfHosted(t, fxNewServer(t))
	_, err := c.Submit(context.Background(), j)
	return err
}

// TestClientHidesAPIKeyFromEveryDumper (item 6): no fmt verb on the client,
// by pointer or by value, and no reflection-based dumper walking its
// fields (unexported ones included, down to the logger's handler) finds
// the API key.
func TestClientHidesAPIKeyFromEveryDumper(t *testing.T) {
	const key = "ezt_live_SECRETX_0123456789"
	logger, _ := fxLogs()
	c, err := New(withGetenv(fxNoEnv), WithAPIKey(key), WithLogger(logger))
	require.NoError(t, err)
	assert.NotContains(t, formats(c), leakWord)
	assert.NotContains(t, formats(*c), leakWord)
	assert.NotContains(t, formats(struct{ C *Client }{c}), leakWord)
	assert.Contains(t, fmt.Sprintf("%#v", c), "****6789")
	assert.Empty(t, dumpStrings(reflect.ValueOf(c), map[uintptr]bool{}, leakWord), "a field holds the key")
	// The key still authenticates the calls.
	srv := fxNewServer(t, fxForward(201, `{"job_id":"job_1"}`))
	c2, _ := fxCloud(t, srv)
	_, err = c2.Submit(context.Background(), fxJob())
	require.NoError(t, err)
	assert.Equal(t, "Bearer "+fxKey, srv.requests()[0].Header.Get("Authorization"))
	_ = http.MethodGet
}

// dumpStrings walks v as a reflection-based dumper would (spew, a
// debugger) and returns the strings containing word.
func dumpStrings(v reflect.Value, seen map[uintptr]bool, word string) []string {
	var out []string
	switch v.Kind() {
	case reflect.String:
		if strings.Contains(v.String(), word) {
			out = append(out, v.String())
		}
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		if v.Kind() == reflect.Pointer {
			if seen[v.Pointer()] {
				return nil
			}
			seen[v.Pointer()] = true
		}
		out = append(out, dumpStrings(v.Elem(), seen, word)...)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			out = append(out, dumpStrings(v.Field(i), seen, word)...)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			out = append(out, dumpStrings(v.Index(i), seen, word)...)
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			out = append(out, dumpStrings(it.Key(), seen, word)...)
			out = append(out, dumpStrings(it.Value(), seen, word)...)
		}
	}
	return out
}

// TestStepAndResultHideCredentials (item 6): a Step and a StepResult print
// no credential of the request or of the destination's reply in any verb.
func TestStepAndResultHideCredentials(t *testing.T) {
	c, _ := fxSelfHosted(t, fxNewServer(t))
	j := leakJob()
	step := c.Step().URL(j.URL).Headers(j.Headers).Method("POST")
	assert.NotContains(t, formats(step), leakWord)
	res := &StepResult{Step: step, Method: "POST", URL: j.URL, StatusCode: 429,
		Header: http.Header{"Set-Cookie": {"s=ck_SECRETX_9"}}, Body: []byte(`{"token":"tk_SECRETX"}`),
		Err: fmt.Errorf("Post %q: refused", j.URL), Fallbacks: []*StepResult{{URL: j.URL}}}
	assert.NotContains(t, formats(res), leakWord)
	assert.Contains(t, fmt.Sprint(res), "status: 429")
}

// TestJobPrintsNoCredential (item 6): a job holds the caller's credentials;
// no fmt verb prints them, by value or by pointer, nested jobs included.
func TestJobPrintsNoCredential(t *testing.T) {
	j := leakJob()
	j.Webhooks = []Webhook{{URL: "https://hooks.example.com/h?token=wt_SECRETX_5"}}
	j.OnSuccess = leakJob()
	j.Fallback = &Fallback{Job: leakJob()}
	assert.NotContains(t, formats(j), leakWord)
	assert.NotContains(t, formats(*j), leakWord)
	assert.NotContains(t, formats([]*Job{j}), leakWord)
	assert.Contains(t, fmt.Sprint(j), "api.example.com/v1/x")
}
