package webhook

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	cloudSuccess = `{"job_id":"job_1763674210055_853341","idempotent_key":"order:42/a","status":"success",
		"response":{"status_code":200,"headers":{"content-type":"application/json"},"body":"{\"result\": \"data\"}"},
		"metadata":{"order_id":"42"}}`
	cloudFailed     = `{"job_id":"job_2","idempotent_key":"k2","status":"failed","response":{"status_code":503,"headers":{},"body":"down"},"metadata":{}}`
	selfCompleted   = `{"job_id":"0123456789abcdef0123456789abcdef","status":"completed","response_status":201,"body":"created"}`
	selfFailed      = `{"job_id":"0123456789abcdef0123456789abcdef","status":"failed","reason":"connection refused"}`
	selfCompleted5x = `{"job_id":"j5","status":"completed","response_status":500,"body":"boom"}`
)

func TestDecodeForms(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Result
	}{
		{name: "cloud success", in: cloudSuccess, want: Result{
			JobID: "job_1763674210055_853341", IdempotentKey: "order:42/a", Succeeded: true, Status: "success",
			StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: `{"result": "data"}`,
			Metadata: map[string]any{"order_id": "42"}, Form: FormCloud,
		}},
		{name: "cloud failed", in: cloudFailed, want: Result{
			JobID: "job_2", IdempotentKey: "k2", Status: "failed", StatusCode: 503, Body: "down",
			Metadata: map[string]any{}, Form: FormCloud,
		}},
		{name: "cloud failed without response", in: `{"job_id":"j","idempotent_key":"k","status":"failed","response":null,"metadata":null}`,
			want: Result{JobID: "j", IdempotentKey: "k", Status: "failed", Form: FormCloud}},
		{name: "self-hosted completed", in: selfCompleted, want: Result{
			JobID: "0123456789abcdef0123456789abcdef", Succeeded: true, Status: "completed", StatusCode: 201, Body: "created", Form: FormSelfHosted,
		}},
		{name: "self-hosted completed with 5xx is not a success", in: selfCompleted5x, want: Result{
			JobID: "j5", Status: "completed", StatusCode: 500, Body: "boom", Form: FormSelfHosted,
		}},
		{name: "self-hosted failed", in: selfFailed, want: Result{
			JobID: "0123456789abcdef0123456789abcdef", Status: "failed", Reason: "connection refused", Form: FormSelfHosted,
		}},
		{name: "bare failed", in: `{"job_id":"j","status":"failed"}`, want: Result{JobID: "j", Status: "failed", Form: FormSelfHosted}},
		{name: "unknown fields ignored", in: `{"job_id":"j","status":"completed","response_status":200,"attempts":3}`,
			want: Result{JobID: "j", Status: "completed", StatusCode: 200, Succeeded: true, Form: FormSelfHosted}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.in))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name, in, field string
	}{
		{"empty", ``, ""},
		{"whitespace", "  \n", ""},
		{"not json", `job_id=1`, ""},
		{"array", `[{"job_id":"j"}]`, ""},
		{"truncated", `{"job_id":"j","status":"succ`, ""},
		{"null", `null`, ""},
		{"missing job_id", `{"status":"success","response":{"status_code":200}}`, "job_id"},
		{"empty job_id", `{"job_id":" ","status":"success"}`, "job_id"},
		{"numeric job_id", `{"job_id":12,"status":"success"}`, "job_id"},
		{"missing status", `{"job_id":"j"}`, "status"},
		{"unknown cloud status", `{"job_id":"j","status":"completed","response":{"status_code":200}}`, ""},
		{"unknown status", `{"job_id":"j","status":"done"}`, "status"},
		{"cloud status on self-hosted form", `{"job_id":"j","status":"success","response_status":200}`, ""},
		{"bad status code", `{"job_id":"j","status":"success","response":{"status_code":42}}`, "response.status_code"},
		{"bad response_status", `{"job_id":"j","status":"completed","response_status":-1}`, "response_status"},
		{"string response_status", `{"job_id":"j","status":"completed","response_status":"200"}`, "response_status"},
		{"metadata not an object", `{"job_id":"j","status":"success","metadata":[1]}`, "metadata"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.in))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformedPayload)
			var pe *PayloadError
			require.ErrorAs(t, err, &pe)
			if tc.field != "" {
				assert.Equal(t, tc.field, pe.Field, err.Error())
			}
		})
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, in := range []string{cloudSuccess, cloudFailed, selfCompleted, selfFailed, selfCompleted5x} {
		r, err := Decode([]byte(in))
		require.NoError(t, err)
		b, err := json.Marshal(r.Payload())
		require.NoError(t, err)
		back, err := Decode(b)
		require.NoError(t, err, string(b))
		assert.Equal(t, r, back, string(b))
	}
	// The wire types marshal as protocol §4 shows.
	b, err := json.Marshal(CloudPayload{JobID: "j", IdempotentKey: "k", Status: CloudSuccess,
		Response: &CloudResponse{StatusCode: 200, Headers: map[string]string{"content-type": "text/plain"}, Body: "hi"}, Metadata: map[string]any{}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"job_id":"j","idempotent_key":"k","status":"success","response":{"status_code":200,"headers":{"content-type":"text/plain"},"body":"hi"},"metadata":{}}`, string(b))
	b, err = json.Marshal(SelfHostedPayload{JobID: "j", Status: SelfHostedCompleted, ResponseStatus: 200, Body: "ok"})
	require.NoError(t, err)
	assert.JSONEq(t, `{"job_id":"j","status":"completed","response_status":200,"body":"ok"}`, string(b))
	assert.Equal(t, "cloud", FormCloud.String())
	assert.Equal(t, "self-hosted", FormSelfHosted.String())
	assert.Equal(t, "Form(0)", Form(0).String())
}

// FuzzDecode checks the payload decoder never panics, returns only
// *PayloadError, and that whatever it accepts is coherent and survives a
// round trip through its wire form.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{cloudSuccess, cloudFailed, selfCompleted, selfFailed, selfCompleted5x,
		`{}`, `null`, `[]`, `{"job_id":"j","status":"failed"}`, `{"job_id":"j","status":"success","metadata":{"a":[1,{"b":null}]}}`,
		`{"job_id":"j","status":"success","response":{"status_code":1e3}}`, "{\"job_id\":\"\xff\",\"status\":\"failed\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Decode(body)
		if err != nil {
			var pe *PayloadError
			if !errors.As(err, &pe) || !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("error %v is not a *PayloadError", err)
			}
			return
		}
		if r.JobID == "" || r.Status == "" || (r.Form != FormCloud && r.Form != FormSelfHosted) {
			t.Fatalf("incoherent result %+v", r)
		}
		if r.Succeeded && r.Status == "failed" {
			t.Fatalf("failed status reported as success: %+v", r)
		}
		b, err := json.Marshal(r.Payload())
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := Decode(b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if back.JobID != r.JobID || back.Status != r.Status || back.Form != r.Form || back.StatusCode != r.StatusCode ||
			back.Body != r.Body || back.Succeeded != r.Succeeded || back.IdempotentKey != r.IdempotentKey {
			t.Fatalf("round trip changed %+v into %+v", r, back)
		}
	})
}
