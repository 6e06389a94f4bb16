package ezclient

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fxUpdateGolden rewrites the golden files: go test ./ezclient -run TestJobGolden -update-job-golden
var fxUpdateGolden = flag.Bool("update-job-golden", false, "rewrite ezclient/testdata/job_*.golden.json")

var fxRetryAt = time.UnixMilli(1763674210055)

// fxGoldenJobs are the jobs pinned byte for byte by testdata/job_<name>.golden.json.
func fxGoldenJobs() map[string]*Job {
	return map[string]*Job{
		// Only the required field: method defaults to GET, everything else omitted.
		"minimal": {URL: "https://api.example.com/endpoint"},
		// Method upper-cased; HTML characters not escaped; body kept byte for byte.
		"post_body": {
			URL:     "https://api.example.com/search?q=a&b=<c>",
			Method:  "post",
			Headers: map[string]string{"Content-Type": "application/json", "X-B": "2", "Authorization": "Bearer sk_test"},
			Body:    `{"amount":1000,"currency":"usd","note":"<b>&</b>"}`,
		},
		// Defaults sent by the caller explicitly are still omitted.
		"defaults_omitted": {
			URL:              "https://api.example.com/x",
			Method:           "GET",
			Headers:          map[string]string{},
			Metadata:         map[string]any{},
			Webhooks:         []Webhook{},
			WebhookQuorum:    1,
			Regions:          []Region{},
			RegionPolicy:     RegionPolicyFallback,
			ExecutionMode:    ExecutionRace,
			OnFailureTimeout: 0,
		},
		// Webhook fan-out: has_quorum_vote false must be sent, nil omitted, regions per webhook.
		"webhook_fanout": {
			URL:    "https://api.stripe.com/charges",
			Method: "POST",
			Webhooks: []Webhook{
				{URL: "https://app.com/payment-complete", HasQuorumVote: Bool(true)},
				{URL: "https://analytics.com/track", HasQuorumVote: Bool(false)},
				{URL: "https://notify.com/alert"},
				{URL: "https://backup.com/webhook", Regions: []Region{RegionIAD, RegionLAX}, HasQuorumVote: Bool(true)},
			},
			WebhookQuorum: 2,
		},
		// Every top-level field of protocol §1.2.
		"every_field": {
			URL:              "https://api.example.com/process",
			Method:           "put",
			Headers:          map[string]string{"X-Request-Id": "r-1"},
			Body:             "plain text body\nwith a newline and \"quotes\"",
			Metadata:         map[string]any{"order_id": "order_12345", "amount": json.Number("1000"), "nested": map[string]any{"deep": []any{json.Number("1"), "two", true, nil}}},
			Webhooks:         []Webhook{{URL: "https://app.com/webhook"}, {URL: "https://app.com/webhook2", HasQuorumVote: Bool(true)}},
			WebhookQuorum:    2,
			Regions:          []Region{RegionIAD, RegionLAX, RegionORD},
			RegionPolicy:     RegionPolicyStrict,
			ExecutionMode:    ExecutionFanout,
			RetryPolicy:      &RetryPolicy{MaxRetries: 5, MaxReroutes: 3, RetryCodes: []int{429, 503}, RerouteCodes: []int{500, 502, 504}},
			Fallback:         &Fallback{Trigger: OnError(500, 502, 503), Job: &Job{URL: "https://backup-api.com"}},
			OnSuccess:        &Job{URL: "https://analytics.com/track", Method: "post"},
			OnFailure:        &Job{URL: "https://hooks.slack.com/webhook", Method: "POST", Body: `{"text":"failed"}`},
			OnFailureTimeout: 30 * time.Second,
			IdempotentKey:    "order-12345:charge/v1",
			RetryAt:          fxRetryAt,
		},
		// A retry policy with zero counts keeps them (they are meaningful) and drops empty code lists.
		"retry_policy_zero": {
			URL:         "https://api.example.com/x",
			RetryPolicy: &RetryPolicy{},
		},
		// A three-deep fallback chain, each with its own trigger (or none), headers, webhooks, keys and children.
		"fallback_chain": {
			URL:    "https://primary-api.com/charge",
			Method: "POST",
			Body:   `{"n":1}`,
			Fallback: &Fallback{
				Trigger: OnError(500, 502, 503),
				Job: &Job{
					URL:           "https://secondary-api.com/charge",
					Method:        "POST",
					Headers:       map[string]string{"X-Fallback": "1"},
					Webhooks:      []Webhook{{URL: "https://app.com/fb1", HasQuorumVote: Bool(false)}},
					IdempotentKey: "fb-1",
					OnSuccess:     &Job{URL: "https://analytics.com/fb1-ok"},
					Fallback: &Fallback{
						Trigger: OnTimeout(500 * time.Millisecond),
						Job: &Job{
							URL:      "https://tertiary-api.com/charge",
							Regions:  []Region{RegionFRA},
							Fallback: &Fallback{Job: &Job{URL: "https://last-resort.com/charge", Method: "delete"}},
						},
					},
				},
			},
		},
		// Nested workflows: on_success and on_failure are full jobs with their own children, snake_case at every depth.
		"workflow": {
			URL:  "https://api.openai.com/v1/chat/completions",
			Body: "{}",
			OnSuccess: &Job{
				URL:           "https://api.sendgrid.com/send",
				Method:        "POST",
				Webhooks:      []Webhook{{URL: "https://app.com/email-sent", HasQuorumVote: Bool(false)}},
				WebhookQuorum: 1,
				Regions:       []Region{"iad", "lax", "ord"},
				RetryPolicy:   &RetryPolicy{MaxRetries: 2, RetryCodes: []int{429}},
				IdempotentKey: "send-1",
				OnSuccess:     &Job{URL: "https://analytics.com/track", Metadata: map[string]any{"step": "3"}},
				OnFailure:     &Job{URL: "https://hooks.slack.com/a", OnFailureTimeout: 1500 * time.Millisecond},
			},
			OnFailure: &Job{
				URL:      "https://hooks.slack.com/b",
				Fallback: &Fallback{Trigger: OnError(429), Job: &Job{URL: "https://pager.example.com/page", RetryAt: fxRetryAt}},
			},
		},
	}
}

func TestJobGolden(t *testing.T) {
	for name, job := range fxGoldenJobs() {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, job.Validate())
			got, err := json.Marshal(job) // through the public path, as users would
			require.NoError(t, err)
			raw, err := marshalNoEscape(job) // the bytes Submit sends
			require.NoError(t, err)
			path := filepath.Join("testdata", "job_"+name+".golden.json")
			if *fxUpdateGolden {
				require.NoError(t, os.WriteFile(path, append(raw, '\n'), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			want = bytes.TrimSuffix(want, []byte("\n"))
			assert.Equal(t, string(want), string(raw), "wire bytes")
			// json.Marshal escapes HTML characters but must be the same JSON.
			assert.JSONEq(t, string(want), string(got))

			// Round trip: decoding the golden and encoding again gives the same bytes.
			var back Job
			require.NoError(t, json.Unmarshal(want, &back))
			again, err := marshalNoEscape(&back)
			require.NoError(t, err)
			assert.Equal(t, string(want), string(again), "round trip")
			require.NoError(t, back.Validate())

			// No camelCase key anywhere (the official Go and Node SDKs' bug).
			assertSnakeCase(t, want)
		})
	}
}

// assertSnakeCase fails when any object key in the JSON document, at any
// depth, has an upper-case letter (headers and metadata are user data and
// are skipped).
func assertSnakeCase(t *testing.T, doc []byte) {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(doc, &v))
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if k == "headers" || k == "metadata" {
					continue
				}
				assert.Equal(t, strings.ToLower(k), k, "camelCase key %q at %s", k, path)
				walk(e, path+"."+k)
			}
		case []any:
			for _, e := range x {
				walk(e, path+"[]")
			}
		}
	}
	walk(v, "$")
}

func TestJobJSONDetails(t *testing.T) {
	tests := []struct {
		name string
		job  Job
		want string
	}{
		{"empty body omitted", Job{URL: "https://a.b"}, `{"url":"https://a.b","method":"GET"}`},
		{"has_quorum_vote false is sent", Job{URL: "https://a.b", Webhooks: []Webhook{{URL: "https://w", HasQuorumVote: Bool(false)}}},
			`{"url":"https://a.b","method":"GET","webhooks":[{"url":"https://w","has_quorum_vote":false}]}`},
		{"has_quorum_vote nil is omitted", Job{URL: "https://a.b", Webhooks: []Webhook{{URL: "https://w"}}},
			`{"url":"https://a.b","method":"GET","webhooks":[{"url":"https://w"}]}`},
		{"quorum 0 omitted", Job{URL: "https://a.b", WebhookQuorum: 0}, `{"url":"https://a.b","method":"GET"}`},
		{"quorum 3 sent", Job{URL: "https://a.b", WebhookQuorum: 3}, `{"url":"https://a.b","method":"GET","webhook_quorum":3}`},
		{"strict and fanout sent", Job{URL: "https://a.b", RegionPolicy: RegionPolicyStrict, ExecutionMode: ExecutionFanout},
			`{"url":"https://a.b","method":"GET","region_policy":"strict","execution_mode":"fanout"}`},
		{"on_timeout trigger in ms", Job{URL: "https://a.b", Fallback: &Fallback{Trigger: OnTimeout(1500 * time.Millisecond), Job: &Job{URL: "https://c.d"}}},
			`{"url":"https://a.b","method":"GET","fallback_job":{"url":"https://c.d","method":"GET","trigger":{"type":"on_timeout","timeout_ms":1500}}}`},
		{"on_error trigger codes", Job{URL: "https://a.b", Fallback: &Fallback{Trigger: OnError(500), Job: &Job{URL: "https://c.d"}}},
			`{"url":"https://a.b","method":"GET","fallback_job":{"url":"https://c.d","method":"GET","trigger":{"type":"on_error","codes":[500]}}}`},
		{"fallback without trigger", Job{URL: "https://a.b", Fallback: &Fallback{Job: &Job{URL: "https://c.d"}}},
			`{"url":"https://a.b","method":"GET","fallback_job":{"url":"https://c.d","method":"GET"}}`},
		{"retry_at in epoch ms", Job{URL: "https://a.b", RetryAt: fxRetryAt}, `{"url":"https://a.b","method":"GET","retry_at":1763674210055}`},
		{"on_failure_timeout_ms", Job{URL: "https://a.b", OnFailureTimeout: 2 * time.Second}, `{"url":"https://a.b","method":"GET","on_failure_timeout_ms":2000}`},
		{"unicode body verbatim", Job{URL: "https://a.b", Body: "héllo \u2028 <>&"}, "{\"url\":\"https://a.b\",\"method\":\"GET\",\"body\":\"héllo \\u2028 <>&\"}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := marshalNoEscape(&tt.job)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
}

func TestJobUnmarshal(t *testing.T) {
	t.Run("top-level trigger is ignored", func(t *testing.T) {
		var j Job
		require.NoError(t, json.Unmarshal([]byte(`{"url":"https://a.b","trigger":{"type":"on_error","codes":[500]}}`), &j))
		assert.Nil(t, j.Fallback)
		assert.Equal(t, "https://a.b", j.URL)
	})
	t.Run("fallback trigger decoded", func(t *testing.T) {
		var j Job
		require.NoError(t, json.Unmarshal([]byte(`{"url":"https://a.b","fallback_job":{"url":"https://c","trigger":{"type":"on_timeout","timeout_ms":250}}}`), &j))
		require.NotNil(t, j.Fallback)
		assert.Equal(t, &Trigger{Type: TriggerOnTimeout, Timeout: 250 * time.Millisecond}, j.Fallback.Trigger)
		assert.Equal(t, "https://c", j.Fallback.Job.URL)
	})
	t.Run("null fallback", func(t *testing.T) {
		var j Job
		require.NoError(t, json.Unmarshal([]byte(`{"url":"https://a.b","fallback_job":null}`), &j))
		assert.Nil(t, j.Fallback)
	})
	t.Run("large metadata integers survive", func(t *testing.T) {
		in := `{"url":"https://a.b","method":"GET","metadata":{"id":12345678901234567890}}`
		var j Job
		require.NoError(t, json.Unmarshal([]byte(in), &j))
		out, err := marshalNoEscape(&j)
		require.NoError(t, err)
		assert.Equal(t, in, string(out))
	})
	for _, bad := range []string{`[]`, `{"url":1}`, `{"fallback_job":{"url":2}}`, `{"fallback_job":7}`, `{"on_success":"x"}`, `{"webhooks":{}}`, `{"retry_at":"soon"}`,
		`{"on_failure_timeout_ms":9223372036854775807}`, `{"fallback_job":{"trigger":{"type":"on_timeout","timeout_ms":-9223372036854775807}}}`} {
		var j Job
		assert.Error(t, json.Unmarshal([]byte(bad), &j), bad)
	}
}

func TestJobClone(t *testing.T) {
	orig := fxGoldenJobs()["every_field"]
	orig.Fallback.Job.Fallback = &Fallback{Trigger: OnTimeout(time.Second), Job: &Job{URL: "https://x.y"}}
	before, err := marshalNoEscape(orig)
	require.NoError(t, err)
	c := orig.Clone()
	after, err := marshalNoEscape(c)
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))

	// Mutating every nested part of the clone leaves the original unchanged.
	c.Headers["X-Request-Id"] = "changed"
	c.Metadata["order_id"] = "changed"
	c.Metadata["nested"].(map[string]any)["deep"].([]any)[1] = "changed"
	c.Webhooks[0].URL = "https://changed"
	*c.Webhooks[1].HasQuorumVote = false
	c.Regions[0] = "changed"
	c.RetryPolicy.RetryCodes[0] = 1
	c.Fallback.Trigger.Codes[0] = 1
	c.Fallback.Job.URL = "https://changed"
	c.Fallback.Job.Fallback.Trigger.Timeout = 0
	c.OnSuccess.URL = "https://changed"
	c.OnFailure.Body = "changed"
	unchanged, err := marshalNoEscape(orig)
	require.NoError(t, err)
	assert.Equal(t, string(before), string(unchanged))

	var nilJob *Job
	assert.Nil(t, nilJob.Clone())
	assert.Nil(t, (&Job{URL: "https://a"}).Clone().Regions)
}

func TestWebhookVotes(t *testing.T) {
	assert.True(t, Webhook{}.Votes())
	assert.True(t, Webhook{HasQuorumVote: Bool(true)}.Votes())
	assert.False(t, Webhook{HasQuorumVote: Bool(false)}.Votes())
}

func TestJobValidate(t *testing.T) {
	ok := func() *Job { return &Job{URL: "https://api.example.com/x"} }
	cycle := ok()
	cycle.OnSuccess = cycle
	wide := ok()
	for n := wide; ; {
		// Each level points both children at the next one: 2^depth paths.
		next := ok()
		n.OnSuccess, n.OnFailure = next, next
		if n = next; strings.Count(wideDepthMarker(wide), "x") > 20 {
			break
		}
	}
	tests := []struct {
		name  string
		job   *Job
		field string
	}{
		{"nil job", nil, ""},
		{"missing url", &Job{}, "url"},
		{"relative url", &Job{URL: "/x"}, "url"},
		{"ftp url", &Job{URL: "ftp://a.b/x"}, "url"},
		{"no host", &Job{URL: "https:///x"}, "url"},
		{"unparsable url", &Job{URL: "https://a b\x7f/"}, "url"},
		{"bad method", &Job{URL: "https://a.b", Method: "FETCH"}, "method"},
		{"bad header name", &Job{URL: "https://a.b", Headers: map[string]string{"Bad Name": "v"}}, "headers"},
		{"bad header value", &Job{URL: "https://a.b", Headers: map[string]string{"X": "a\r\nb"}}, "headers"},
		{"binary body", &Job{URL: "https://a.b", Body: "\xff\xfe"}, "body"},
		{"metadata not JSON", &Job{URL: "https://a.b", Metadata: map[string]any{"f": func() {}}}, "metadata"},
		{"webhook url", &Job{URL: "https://a.b", Webhooks: []Webhook{{URL: "https://ok"}, {URL: "nope"}}}, "webhooks[1].url"},
		{"webhook empty region", &Job{URL: "https://a.b", Webhooks: []Webhook{{URL: "https://ok", Regions: []Region{" "}}}}, "webhooks[0].regions"},
		{"negative quorum", &Job{URL: "https://a.b", WebhookQuorum: -1}, "webhook_quorum"},
		{"quorum above voters", &Job{URL: "https://a.b", WebhookQuorum: 2, Webhooks: []Webhook{{URL: "https://a"}, {URL: "https://b", HasQuorumVote: Bool(false)}}}, "webhook_quorum"},
		{"empty region", &Job{URL: "https://a.b", Regions: []Region{""}}, "regions"},
		{"region policy", &Job{URL: "https://a.b", RegionPolicy: "nearest"}, "region_policy"},
		{"execution mode", &Job{URL: "https://a.b", ExecutionMode: "parallel"}, "execution_mode"},
		{"max retries", &Job{URL: "https://a.b", RetryPolicy: &RetryPolicy{MaxRetries: -1}}, "retry_policy.max_retries"},
		{"max reroutes", &Job{URL: "https://a.b", RetryPolicy: &RetryPolicy{MaxReroutes: -1}}, "retry_policy.max_reroutes"},
		{"retry codes", &Job{URL: "https://a.b", RetryPolicy: &RetryPolicy{RetryCodes: []int{42}}}, "retry_policy.retry_codes"},
		{"reroute codes", &Job{URL: "https://a.b", RetryPolicy: &RetryPolicy{RerouteCodes: []int{600}}}, "retry_policy.reroute_codes"},
		{"negative failure timeout", &Job{URL: "https://a.b", OnFailureTimeout: -time.Second}, "on_failure_timeout_ms"},
		{"sub-ms failure timeout", &Job{URL: "https://a.b", OnFailureTimeout: time.Microsecond}, "on_failure_timeout_ms"},
		{"fallback without job", &Job{URL: "https://a.b", Fallback: &Fallback{Trigger: OnError(500)}}, "fallback_job"},
		{"on_error without codes", &Job{URL: "https://a.b", Fallback: &Fallback{Trigger: OnError(), Job: ok()}}, "fallback_job.trigger.codes"},
		{"on_error bad code", &Job{URL: "https://a.b", Fallback: &Fallback{Trigger: OnError(99), Job: ok()}}, "fallback_job.trigger.codes"},
		{"on_timeout zero", &Job{URL: "https://a.b", Fallback: &Fallback{Trigger: OnTimeout(0), Job: ok()}}, "fallback_job.trigger.timeout_ms"},
		{"on_timeout sub-ms", &Job{URL: "https://a.b", Fallback: &Fallback{Trigger: OnTimeout(time.Microsecond), Job: ok()}}, "fallback_job.trigger.timeout_ms"},
		{"unknown trigger", &Job{URL: "https://a.b", Fallback: &Fallback{Trigger: &Trigger{Type: "on_moon"}, Job: ok()}}, "fallback_job.trigger.type"},
		{"nested fallback url", &Job{URL: "https://a.b", Fallback: &Fallback{Job: &Job{URL: "https://c", Fallback: &Fallback{Job: &Job{}}}}}, "fallback_job.fallback_job.url"},
		{"on_success url", &Job{URL: "https://a.b", OnSuccess: &Job{URL: "x"}}, "on_success.url"},
		{"on_failure method", &Job{URL: "https://a.b", OnFailure: &Job{URL: "https://c", Method: "NOPE"}}, "on_failure.method"},
		{"deep in a workflow", &Job{URL: "https://a.b", OnSuccess: &Job{URL: "https://c", OnFailure: &Job{URL: "https://d", Webhooks: []Webhook{{URL: ""}}}}}, "on_success.on_failure.webhooks[0].url"},
		{"cycle", cycle, "on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success.on_success"},
		{"shared children explode", wide, "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.job.Validate()
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrValidation)
			assert.NotErrorIs(t, err, ErrUnsupported)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			if tt.field != "*" {
				assert.Equal(t, tt.field, ve.Field)
			}
			assert.NotEmpty(t, ve.Reason)
			assert.Contains(t, err.Error(), ve.Reason)
		})
	}
	for name, job := range fxGoldenJobs() {
		assert.NoError(t, job.Validate(), name)
		assert.NoError(t, job.ValidateFor(DialectCloud), name)
	}
}

// wideDepthMarker returns one "x" per level of the OnSuccess chain.
func wideDepthMarker(j *Job) string {
	var b strings.Builder
	for ; j != nil; j = j.OnSuccess {
		b.WriteByte('x')
	}
	return b.String()
}

func TestValidateForSelfHosted(t *testing.T) {
	base := func() *Job {
		return &Job{URL: "https://api.example.com/x", Method: "POST", Headers: map[string]string{"A": "b"}, Body: "{}",
			Webhooks: []Webhook{{URL: "https://app.com/hook"}}, WebhookQuorum: 1, RegionPolicy: RegionPolicyFallback,
			ExecutionMode: ExecutionRace, IdempotentKey: "k"}
	}
	require.NoError(t, base().ValidateFor(DialectSelfHosted), "a plain job with one webhook is fine")
	tests := []struct {
		field string
		edit  func(j *Job)
	}{
		{"metadata", func(j *Job) { j.Metadata = map[string]any{"a": 1} }},
		{"regions", func(j *Job) { j.Regions = []Region{RegionIAD} }},
		{"region_policy", func(j *Job) { j.RegionPolicy = RegionPolicyStrict }},
		{"execution_mode", func(j *Job) { j.ExecutionMode = ExecutionFanout }},
		{"webhook_quorum", func(j *Job) { j.WebhookQuorum = 2; j.Webhooks = append(j.Webhooks, Webhook{URL: "https://b"}) }},
		{"retry_policy", func(j *Job) { j.RetryPolicy = &RetryPolicy{MaxRetries: 1} }},
		{"fallback_job", func(j *Job) { j.Fallback = &Fallback{Job: &Job{URL: "https://b"}} }},
		{"on_success", func(j *Job) { j.OnSuccess = &Job{URL: "https://b"} }},
		{"on_failure", func(j *Job) { j.OnFailure = &Job{URL: "https://b"} }},
		{"on_failure_timeout_ms", func(j *Job) { j.OnFailureTimeout = time.Second }},
		{"retry_at", func(j *Job) { j.RetryAt = fxRetryAt }},
		{"webhooks", func(j *Job) { j.Webhooks = append(j.Webhooks, Webhook{URL: "https://b"}) }},
		{"webhooks[0].regions", func(j *Job) { j.Webhooks[0].Regions = []Region{RegionIAD} }},
		{"webhooks[0].has_quorum_vote", func(j *Job) { j.Webhooks[0].HasQuorumVote = Bool(false) }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			j := base()
			tt.edit(j)
			require.NoError(t, j.ValidateFor(DialectCloud), "Cloud carries it")
			err := j.ValidateFor(DialectSelfHosted)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrUnsupported)
			assert.ErrorIs(t, err, ErrValidation)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tt.field, ve.Field)
			assert.True(t, ve.Unsupported)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
	t.Run("no webhook", func(t *testing.T) {
		j := base()
		j.Webhooks = nil
		err := j.ValidateFor(DialectSelfHosted)
		assert.ErrorIs(t, err, ErrValidation)
		assert.NotErrorIs(t, err, ErrUnsupported)
	})
	t.Run("has_quorum_vote true is fine", func(t *testing.T) {
		j := base()
		j.Webhooks[0].HasQuorumVote = Bool(true)
		assert.NoError(t, j.ValidateFor(DialectSelfHosted))
	})
}

func TestValidateHelpers(t *testing.T) {
	assert.NoError(t, ValidateURL("u", "http://localhost:8080/x?y=1"))
	assert.Error(t, ValidateURL("u", ""))
	assert.NoError(t, ValidateMethod("m", ""))
	assert.NoError(t, ValidateMethod("m", "patch"))
	assert.Error(t, ValidateMethod("m", "GO"))
	assert.Equal(t, `ezthrottle: invalid input: nil job`, (&ValidationError{Reason: "nil job"}).Error())
}
