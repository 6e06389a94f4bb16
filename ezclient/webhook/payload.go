package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"
)

// Wire status values of the two payload forms (protocol §4).
const (
	// CloudSuccess is a Cloud payload's status for a job that succeeded.
	CloudSuccess = "success"
	// CloudFailed is a Cloud payload's status for a job that failed.
	CloudFailed = "failed"
	// SelfHostedCompleted is a self-hosted payload's status for a job whose
	// request completed (whatever its HTTP status).
	SelfHostedCompleted = "completed"
	// SelfHostedFailed is a self-hosted payload's status for a job that
	// could not be executed.
	SelfHostedFailed = "failed"
)

// CloudPayload is the body EZThrottle Cloud POSTs to a job's webhooks. Engines
// (such as a local test engine) marshal it with encoding/json.
type CloudPayload struct {
	// JobID identifies the job.
	JobID string `json:"job_id"`
	// IdempotentKey is the job's idempotent key (custom or engine-derived).
	IdempotentKey string `json:"idempotent_key"`
	// Status is CloudSuccess or CloudFailed.
	Status string `json:"status"`
	// Response is the target API's final answer, when there was one.
	Response *CloudResponse `json:"response,omitempty"`
	// Metadata is the job's metadata, echoed back.
	Metadata map[string]any `json:"metadata"`
}

// CloudResponse is the target API's answer inside a CloudPayload.
type CloudResponse struct {
	// StatusCode is the HTTP status of the target's response.
	StatusCode int `json:"status_code"`
	// Headers are the target's response headers (one value per name).
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the target's response body, as a string.
	Body string `json:"body"`
}

// SelfHostedPayload is the body self-hosted engines POST to a job's webhook.
type SelfHostedPayload struct {
	// JobID identifies the job.
	JobID string `json:"job_id"`
	// Status is SelfHostedCompleted or SelfHostedFailed.
	Status string `json:"status"`
	// ResponseStatus is the HTTP status of the target's response (0 when
	// there was none).
	ResponseStatus int `json:"response_status,omitempty"`
	// Body is the target's response body.
	Body string `json:"body,omitempty"`
	// Reason explains a failure.
	Reason string `json:"reason,omitempty"`
}

// Form says which payload form a Result was decoded from.
type Form int

// Payload forms.
const (
	// FormCloud is the EZThrottle Cloud payload (status success/failed,
	// response{status_code, headers, body}, idempotent_key, metadata).
	FormCloud Form = iota + 1
	// FormSelfHosted is the self-hosted payload (status completed/failed,
	// response_status, body, reason).
	FormSelfHosted
)

// String returns the form's name ("cloud", "self-hosted").
func (f Form) String() string {
	switch f {
	case FormCloud:
		return "cloud"
	case FormSelfHosted:
		return "self-hosted"
	}
	return fmt.Sprintf("Form(%d)", int(f))
}

// Result is a job's outcome, normalised from either payload form.
//
// A Result handed out by a Store or Handler is a deep copy: its Header and
// Metadata are the caller's own.
type Result struct {
	// JobID identifies the job. Never empty.
	JobID string
	// IdempotentKey is the job's idempotent key (Cloud only; empty for
	// self-hosted payloads, which do not carry it).
	IdempotentKey string
	// Succeeded reports the engine's verdict: Cloud "success", or
	// self-hosted "completed" with a 2xx response status. Use StatusCode
	// for finer decisions.
	Succeeded bool
	// Status is the wire status as sent ("success", "failed", "completed").
	Status string
	// StatusCode is the target API's HTTP status (0 when there was no
	// response).
	StatusCode int
	// Header holds the target's response headers (Cloud only; nil otherwise).
	Header http.Header
	// Body is the target's response body.
	Body string
	// Reason explains a failure when the engine gave one (self-hosted).
	Reason string
	// Metadata is the job's metadata, echoed back (Cloud only).
	Metadata map[string]any
	// Form is the payload form the result came in.
	Form Form
	// ReceivedAt is when the receiver accepted the delivery (zero for a
	// Result from Decode).
	ReceivedAt time.Time
}

// clone returns a copy whose Header map is independent.
func (r Result) clone() Result {
	if r.Header != nil {
		r.Header = r.Header.Clone()
	}
	if r.Metadata != nil {
		r.Metadata = cloneJSON(r.Metadata).(map[string]any)
	}
	return r
}

// cloneJSON deep-copies a value decoded from JSON (maps, slices, scalars),
// so that every consumer of a result gets its own.
func cloneJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(v))
		for k, e := range v {
			c[k] = cloneJSON(e)
		}
		return c
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneJSON(e)
		}
		return c
	}
	return v
}

// ErrMalformedPayload matches every error Decode returns (*PayloadError).
var ErrMalformedPayload = errors.New("webhook: malformed payload")

// PayloadError reports a webhook body that is not a valid payload.
type PayloadError struct {
	// Field names the offending field ("job_id", "status", ...), or is
	// empty when the body is not a JSON object.
	Field string
	// Reason says what is wrong.
	Reason string
}

// Error describes the malformed field and why it was rejected.
func (e *PayloadError) Error() string {
	if e.Field == "" {
		return "webhook: malformed payload: " + e.Reason
	}
	return fmt.Sprintf("webhook: malformed payload: field %q: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrMalformedPayload) true.
func (e *PayloadError) Is(target error) bool { return target == ErrMalformedPayload }

// wirePayload is the union of both forms; pointers detect presence.
type wirePayload struct {
	JobID          *string         `json:"job_id"`
	IdempotentKey  *string         `json:"idempotent_key"`
	Status         *string         `json:"status"`
	Response       *wireResponse   `json:"response"`
	Metadata       json.RawMessage `json:"metadata"`
	ResponseStatus *int            `json:"response_status"`
	Body           *string         `json:"body"`
	Reason         *string         `json:"reason"`
}

type wireResponse struct {
	StatusCode *int              `json:"status_code"`
	Headers    map[string]string `json:"headers"`
	Body       *string           `json:"body"`
}

// Decode parses a webhook body of either form into a Result.
//
// The form is told by the fields: "response", "idempotent_key", "metadata"
// or status "success" mean Cloud; "response_status", "body", "reason" or
// status "completed" mean self-hosted. A body mixing both forms, lacking a
// job_id or a status, or with a status the form does not define, is
// rejected; unknown extra fields are ignored. Errors are *PayloadError
// (errors.Is(err, ErrMalformedPayload)).
func Decode(body []byte) (Result, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return Result{}, &PayloadError{Reason: "empty body"}
	}
	if body[0] != '{' {
		return Result{}, &PayloadError{Reason: "not a JSON object"}
	}
	var w wirePayload
	if err := json.Unmarshal(body, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Result{}, &PayloadError{Field: te.Field, Reason: "wrong type: want " + te.Type.String()}
		}
		return Result{}, &PayloadError{Reason: "invalid JSON: " + err.Error()}
	}
	if w.JobID == nil || strings.TrimSpace(*w.JobID) == "" {
		return Result{}, &PayloadError{Field: "job_id", Reason: "missing or empty"}
	}
	if w.Status == nil || *w.Status == "" {
		return Result{}, &PayloadError{Field: "status", Reason: "missing or empty"}
	}
	status := *w.Status
	cloud := w.Response != nil || w.IdempotentKey != nil || isPresent(w.Metadata) || status == CloudSuccess
	self := w.ResponseStatus != nil || w.Body != nil || w.Reason != nil || status == SelfHostedCompleted
	if cloud && self {
		return Result{}, &PayloadError{Reason: "mixes Cloud fields (response, idempotent_key, metadata) with self-hosted fields (response_status, body, reason)"}
	}
	r := Result{JobID: *w.JobID, Status: status}
	if self || (!cloud && status == SelfHostedFailed) {
		// A bare {"job_id","status":"failed"} is read as self-hosted: the
		// two forms agree on it and neither carries more.
		r.Form = FormSelfHosted
		if status != SelfHostedCompleted && status != SelfHostedFailed {
			return Result{}, &PayloadError{Field: "status", Reason: fmt.Sprintf("%q is not a self-hosted status (completed, failed)", status)}
		}
		if w.ResponseStatus != nil {
			if !validStatus(*w.ResponseStatus, true) {
				return Result{}, &PayloadError{Field: "response_status", Reason: fmt.Sprintf("%d is not an HTTP status", *w.ResponseStatus)}
			}
			r.StatusCode = *w.ResponseStatus
		}
		r.Body = deref(w.Body)
		r.Reason = deref(w.Reason)
		r.Succeeded = status == SelfHostedCompleted && r.StatusCode >= 200 && r.StatusCode < 300
		return r, nil
	}
	r.Form = FormCloud
	if status != CloudSuccess && status != CloudFailed {
		return Result{}, &PayloadError{Field: "status", Reason: fmt.Sprintf("%q is not a Cloud status (success, failed)", status)}
	}
	r.IdempotentKey = deref(w.IdempotentKey)
	if w.Response != nil {
		if w.Response.StatusCode != nil {
			if !validStatus(*w.Response.StatusCode, true) {
				return Result{}, &PayloadError{Field: "response.status_code", Reason: fmt.Sprintf("%d is not an HTTP status", *w.Response.StatusCode)}
			}
			r.StatusCode = *w.Response.StatusCode
		}
		if len(w.Response.Headers) > 0 {
			r.Header = make(http.Header, len(w.Response.Headers))
			for k, v := range w.Response.Headers {
				r.Header.Add(k, v)
			}
		}
		r.Body = deref(w.Response.Body)
	}
	if isPresent(w.Metadata) {
		if err := json.Unmarshal(w.Metadata, &r.Metadata); err != nil {
			return Result{}, &PayloadError{Field: "metadata", Reason: "not a JSON object"}
		}
	}
	r.Succeeded = status == CloudSuccess
	return r, nil
}

// validStatus accepts 0 (no response) when zeroOK, and 100–999.
func validStatus(n int, zeroOK bool) bool {
	return (zeroOK && n == 0) || (n >= 100 && n <= 999)
}

func isPresent(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Payload returns the Result in its wire form: a *CloudPayload for
// FormCloud, a *SelfHostedPayload otherwise. Marshalling it and passing the
// bytes to Decode yields an equal Result (ReceivedAt aside).
func (r Result) Payload() any {
	if r.Form == FormCloud {
		p := &CloudPayload{JobID: r.JobID, IdempotentKey: r.IdempotentKey, Status: r.Status, Metadata: maps.Clone(r.Metadata)}
		if p.Metadata == nil {
			p.Metadata = map[string]any{}
		}
		if r.StatusCode != 0 || r.Body != "" || len(r.Header) > 0 {
			p.Response = &CloudResponse{StatusCode: r.StatusCode, Body: r.Body}
			if len(r.Header) > 0 {
				p.Response.Headers = make(map[string]string, len(r.Header))
				for k, v := range r.Header {
					if len(v) > 0 {
						p.Response.Headers[strings.ToLower(k)] = v[0]
					}
				}
			}
		}
		return p
	}
	return &SelfHostedPayload{JobID: r.JobID, Status: r.Status, ResponseStatus: r.StatusCode, Body: r.Body, Reason: r.Reason}
}
