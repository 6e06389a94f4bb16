package ezclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"time"
)

// Region is an EZThrottle region code, such as "iad" or "lax".
type Region string

// Region codes known at the time of writing. Any other code the engine
// accepts can be used as Region("xyz"). A region code is exactly three
// lower-case letters (see ValidRegion); a job or webhook naming anything
// else fails validation before it is sent.
const (
	RegionIAD Region = "iad" // Ashburn, Virginia (US East)
	RegionLAX Region = "lax" // Los Angeles (US West)
	RegionORD Region = "ord" // Chicago (US Central)
	RegionAMS Region = "ams" // Amsterdam
	RegionFRA Region = "fra" // Frankfurt
	RegionLHR Region = "lhr" // London
	RegionNRT Region = "nrt" // Tokyo
	RegionSIN Region = "sin" // Singapore
	RegionSYD Region = "syd" // Sydney
)

// RegionPolicy says what the engine does when a requested region is down.
type RegionPolicy string

const (
	// RegionPolicyFallback routes around a down region (the engine's default).
	RegionPolicyFallback RegionPolicy = "fallback"
	// RegionPolicyStrict fails the job instead of routing around a down region.
	RegionPolicyStrict RegionPolicy = "strict"
)

// ExecutionMode says how a multi-region job runs.
type ExecutionMode string

const (
	// ExecutionRace runs the job in every region and keeps the first
	// completion (the engine's default).
	ExecutionRace ExecutionMode = "race"
	// ExecutionFanout executes the job in every region.
	ExecutionFanout ExecutionMode = "fanout"
)

// TriggerType is the kind of condition that starts a fallback job.
type TriggerType string

const (
	// TriggerOnError starts the fallback when the job ends with one of Codes.
	TriggerOnError TriggerType = "on_error"
	// TriggerOnTimeout starts the fallback when the job takes longer than Timeout.
	TriggerOnTimeout TriggerType = "on_timeout"
)

// Trigger is the condition on which a fallback job runs.
type Trigger struct {
	// Type is TriggerOnError or TriggerOnTimeout.
	Type    TriggerType
	Codes   []int         // for TriggerOnError
	Timeout time.Duration // for TriggerOnTimeout; sent in whole milliseconds
}

// OnError returns a trigger that fires when the primary job ends with one of
// the given HTTP status codes.
func OnError(codes ...int) *Trigger {
	return &Trigger{Type: TriggerOnError, Codes: append([]int(nil), codes...)}
}

// OnTimeout returns a trigger that fires when the primary job has not
// completed within d.
func OnTimeout(d time.Duration) *Trigger {
	return &Trigger{Type: TriggerOnTimeout, Timeout: d}
}

type wireTrigger struct {
	Type      TriggerType `json:"type"`
	Codes     []int       `json:"codes,omitempty"`
	TimeoutMS int64       `json:"timeout_ms,omitempty"`
}

// MarshalJSON encodes the trigger as the engine expects it.
func (t Trigger) MarshalJSON() ([]byte, error) {
	w := wireTrigger{Type: t.Type}
	switch t.Type {
	case TriggerOnError:
		w.Codes = t.Codes
		if w.Codes == nil {
			w.Codes = []int{}
		}
	case TriggerOnTimeout:
		w.TimeoutMS = t.Timeout.Milliseconds()
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes a trigger in the engine's format.
func (t *Trigger) UnmarshalJSON(b []byte) error {
	var w wireTrigger
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if !msInRange(w.TimeoutMS) {
		return fmt.Errorf("ezthrottle: trigger.timeout_ms %d out of range", w.TimeoutMS)
	}
	*t = Trigger{Type: w.Type, Codes: w.Codes, Timeout: time.Duration(w.TimeoutMS) * time.Millisecond}
	return nil
}

// Webhook is a delivery target for a job's result.
type Webhook struct {
	// URL receives the result as a POST (see protocol §4).
	URL string `json:"url"`
	// Regions, when set, restricts which regions deliver this webhook.
	Regions []Region `json:"regions,omitempty"`
	// HasQuorumVote says whether a delivery to this webhook counts toward the
	// job's quorum. nil leaves the engine's default (true); use Bool(false)
	// for a best-effort webhook such as analytics.
	HasQuorumVote *bool `json:"has_quorum_vote,omitempty"`
}

// Votes reports whether the webhook counts toward the quorum (the engine's
// default is true).
func (w Webhook) Votes() bool { return w.HasQuorumVote == nil || *w.HasQuorumVote }

// Bool returns a pointer to b, for optional boolean fields such as
// Webhook.HasQuorumVote.
func Bool(b bool) *bool { return &b }

// RetryPolicy customises the engine's server-side retries.
type RetryPolicy struct {
	// MaxRetries bounds retries in the same region.
	MaxRetries int `json:"max_retries"`
	// MaxReroutes bounds moves to another region.
	MaxReroutes int `json:"max_reroutes"`
	// RetryCodes are status codes retried in the same region.
	RetryCodes []int `json:"retry_codes,omitempty"`
	// RerouteCodes are status codes retried in another region.
	RerouteCodes []int `json:"reroute_codes,omitempty"`
}

// Fallback is a job that runs when its Trigger fires for the job that owns it.
// Several fallbacks form a chain through Job.Fallback.
type Fallback struct {
	// Trigger says when the fallback runs; nil lets the engine decide.
	Trigger *Trigger
	// Job is the fallback request; it is a full job with its own headers,
	// webhooks, keys, children and its own Fallback (the next in the chain).
	Job *Job
}

// Job is the EZThrottle job object (protocol §1.2). Its JSON encoding is
// exactly what the engine expects: snake_case keys at every depth, empty and
// default values omitted, the method upper-cased and defaulted to GET.
//
// The zero value is not a valid job: URL is required.
type Job struct {
	// URL is the full URL the engine calls. Required.
	URL string
	// Method is the HTTP method; empty means GET.
	Method string
	// Headers are sent with the request.
	Headers map[string]string
	// Body is the request body. The wire format carries it as a JSON string,
	// so it must be valid UTF-8 (binary bodies cannot be forwarded).
	Body string
	// Metadata is echoed back in the webhook payload.
	Metadata map[string]any
	// Webhooks receive the result.
	Webhooks []Webhook
	// WebhookQuorum is how many voting webhooks must be delivered for the
	// delivery to count as done; 0 and 1 both mean the engine's default, 1.
	WebhookQuorum int
	// Regions the job runs in.
	Regions []Region
	// RegionPolicy when a region is down; empty means RegionPolicyFallback.
	RegionPolicy RegionPolicy
	// ExecutionMode for multi-region jobs; empty means ExecutionRace.
	ExecutionMode ExecutionMode
	// RetryPolicy customises server-side retries; nil keeps the engine's.
	RetryPolicy *RetryPolicy
	// Fallback is the first fallback of the chain.
	Fallback *Fallback
	// OnSuccess is spawned by the engine after this job succeeds.
	OnSuccess *Job
	// OnFailure is spawned after every execution path of this job failed.
	OnFailure *Job
	// OnFailureTimeout bounds how long the engine waits before declaring
	// failure and spawning OnFailure; sent in whole milliseconds.
	OnFailureTimeout time.Duration
	// IdempotentKey de-duplicates submissions. When empty, the value of
	// the job's own Idempotency-Key header (any case) is sent as the key,
	// on every dialect and at every depth; without either, Cloud derives a
	// deterministic key (HASH strategy); see HashKey for the self-hosted
	// dialect.
	IdempotentKey string
	// RetryAt is the earliest time the engine may execute the job.
	RetryAt time.Time
}

// wireJob is the engine's JSON form of a job; field order fixes key order.
type wireJob struct {
	URL                string            `json:"url"`
	Method             string            `json:"method"`
	Headers            map[string]string `json:"headers,omitempty"`
	Body               *string           `json:"body,omitempty"`
	Metadata           map[string]any    `json:"metadata,omitempty"`
	Webhooks           []Webhook         `json:"webhooks,omitempty"`
	WebhookQuorum      int               `json:"webhook_quorum,omitempty"`
	Regions            []Region          `json:"regions,omitempty"`
	RegionPolicy       RegionPolicy      `json:"region_policy,omitempty"`
	ExecutionMode      ExecutionMode     `json:"execution_mode,omitempty"`
	RetryPolicy        *RetryPolicy      `json:"retry_policy,omitempty"`
	FallbackJob        json.RawMessage   `json:"fallback_job,omitempty"`
	OnSuccess          *Job              `json:"on_success,omitempty"`
	OnFailure          *Job              `json:"on_failure,omitempty"`
	OnFailureTimeoutMS int64             `json:"on_failure_timeout_ms,omitempty"`
	IdempotentKey      string            `json:"idempotent_key,omitempty"`
	RetryAt            int64             `json:"retry_at,omitempty"`
	Trigger            *Trigger          `json:"trigger,omitempty"`
}

func (j *Job) toWire(trigger *Trigger) (wireJob, error) {
	w := wireJob{
		URL:                j.URL,
		Method:             normalizeMethod(j.Method),
		Headers:            j.Headers,
		Metadata:           j.Metadata,
		Webhooks:           j.Webhooks,
		Regions:            j.Regions,
		OnSuccess:          j.OnSuccess,
		OnFailure:          j.OnFailure,
		OnFailureTimeoutMS: j.OnFailureTimeout.Milliseconds(),
		IdempotentKey:      j.customKey(),
		RetryPolicy:        j.RetryPolicy,
		Trigger:            trigger,
	}
	if j.Body != "" {
		b := j.Body
		w.Body = &b
	}
	if j.WebhookQuorum > 1 {
		w.WebhookQuorum = j.WebhookQuorum
	}
	if j.RegionPolicy != "" && j.RegionPolicy != RegionPolicyFallback {
		w.RegionPolicy = j.RegionPolicy
	}
	if j.ExecutionMode != "" && j.ExecutionMode != ExecutionRace {
		w.ExecutionMode = j.ExecutionMode
	}
	if !j.RetryAt.IsZero() {
		w.RetryAt = j.RetryAt.UnixMilli()
	}
	if f := j.Fallback; f != nil && f.Job != nil {
		fw, err := f.Job.toWire(f.Trigger)
		if err != nil {
			return wireJob{}, err
		}
		raw, err := marshalNoEscape(fw)
		if err != nil {
			return wireJob{}, err
		}
		w.FallbackJob = raw
	}
	return w, nil
}

// IdempotencyKeyHeader is the request header whose value a job carries as
// its custom idempotent key when IdempotentKey is empty (protocol §3, the
// convention Stripe and others use).
const IdempotencyKeyHeader = "Idempotency-Key"

// customKey is the idempotent key the caller chose for the job (protocol
// §3): IdempotentKey, else the value of the job's own Idempotency-Key
// header (any case, surrounding white space removed), else "" (the HASH
// strategy). It is applied where a job is encoded, so it holds for every
// job of a tree (fallbacks, on_success, on_failure) and both dialects.
func (j *Job) customKey() string {
	if j.IdempotentKey != "" {
		return j.IdempotentKey
	}
	return headerKey(j.Headers)
}

// HeaderKey returns the idempotent key a job's headers carry: the value of
// its Idempotency-Key header (IdempotencyKeyHeader, any case of the name),
// surrounding white space removed, or "" when there is none or it is blank.
// When several spellings of the name carry a value, the exact spelling wins,
// then the first other spelling in byte order. It is the rule Submit
// applies to a job without IdempotentKey.
func HeaderKey(h map[string]string) string { return headerKey(h) }

// headerKey is the value of the Idempotency-Key header in h (any case,
// surrounding white space removed), or "".
func headerKey(h map[string]string) string {
	if len(h) == 0 {
		return ""
	}
	if v := strings.TrimSpace(h[IdempotencyKeyHeader]); v != "" {
		return v
	}
	// Other spellings of the name: the first in byte order wins, so the
	// choice does not depend on map iteration order.
	best, found := "", false
	for k, v := range h {
		if v = strings.TrimSpace(v); v != "" && k != IdempotencyKeyHeader &&
			strings.EqualFold(k, IdempotencyKeyHeader) && (!found || k < best) {
			best, found = k, true
		}
	}
	if !found {
		return ""
	}
	return strings.TrimSpace(h[best])
}

// MarshalJSON encodes the job in the engine's format (protocol §1.2).
// A job without IdempotentKey whose headers carry an Idempotency-Key is
// sent with that header's value as its idempotent_key, at every depth.
func (j Job) MarshalJSON() ([]byte, error) {
	w, err := j.toWire(nil)
	if err != nil {
		return nil, err
	}
	return marshalNoEscape(w)
}

// UnmarshalJSON decodes a job in the engine's format. A "trigger" key on the
// top-level object is ignored (it only has meaning inside fallback_job).
//
// Numbers inside Metadata decode as json.Number, so that they encode again
// exactly as they were received (no float64 rounding of large integers).
//
// Decoding takes time linear in len(b): the whole tree of nested jobs
// (on_success, on_failure, fallback_job) is decoded in one pass, and a job
// nested deeper than 32 levels is refused as soon as the decoder reaches
// it, before the rest of the input is decoded.
func (j *Job) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	job, _, err := decodeJob(dec, 0)
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("ezthrottle: job: unexpected data after the JSON object")
	}
	if job == nil {
		job = &Job{}
	}
	*j = *job
	return nil
}

// ErrJobTooDeep is returned (wrapped) by Job.UnmarshalJSON for a job nested
// deeper than the engine's limit of 32 levels.
var ErrJobTooDeep = fmt.Errorf("ezthrottle: jobs nested deeper than %d", maxJobDepth)

// wireFields maps the JSON names of wireJob's fields to their indexes.
func wireFields() map[string]int {
	t := reflect.TypeFor[wireJob]()
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = i
		}
	}
	return m
}

// decodeJob reads one job object (or null) from dec, its nested jobs
// recursively, and the trigger it carries (meaningful for fallbacks). The
// nested jobs are read from the same stream, so every byte is decoded once;
// depth counts the jobs above this one.
func decodeJob(dec *json.Decoder, depth int) (*Job, *Trigger, error) {
	if depth > maxJobDepth {
		return nil, nil, ErrJobTooDeep
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if tok == nil {
		return nil, nil, nil // null
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("json: cannot unmarshal %v into a job: want an object", tokenKind(tok))
	}
	var (
		w        wireJob
		rv       = reflect.ValueOf(&w).Elem()
		fields   = wireFields()
		fallback *Job
		fbTrig   *Trigger
		fbSet    bool
	)
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		key, _ := kt.(string)
		switch {
		case strings.EqualFold(key, "on_success"), strings.EqualFold(key, "on_failure"):
			child, _, err := decodeJob(dec, depth+1)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", strings.ToLower(key), err)
			}
			if strings.EqualFold(key, "on_success") {
				w.OnSuccess = child
			} else {
				w.OnFailure = child
			}
		case strings.EqualFold(key, "fallback_job"):
			child, trig, err := decodeJob(dec, depth+1)
			if err != nil {
				return nil, nil, fmt.Errorf("fallback_job: %w", err)
			}
			fallback, fbTrig, fbSet = child, trig, child != nil
		default:
			i, ok := fields[key]
			if !ok {
				for name, idx := range fields {
					if strings.EqualFold(name, key) {
						i, ok = idx, true
						break
					}
				}
			}
			if !ok {
				var skip json.RawMessage
				if err := dec.Decode(&skip); err != nil {
					return nil, nil, err
				}
				continue
			}
			if err := dec.Decode(rv.Field(i).Addr().Interface()); err != nil {
				return nil, nil, err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, err
	}
	w.FallbackJob = nil
	job, err := w.toJob()
	if err != nil {
		return nil, nil, err
	}
	if fbSet {
		job.Fallback = &Fallback{Trigger: fbTrig, Job: fallback}
	}
	return job, w.Trigger, nil
}

// tokenKind names a JSON token for an error message.
func tokenKind(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "array"
	case string:
		return "string"
	case bool:
		return "bool"
	case json.Number, float64:
		return "number"
	}
	return "value"
}

// msInRange reports whether ms milliseconds fit in a time.Duration.
func msInRange(ms int64) bool {
	const limit = math.MaxInt64 / int64(time.Millisecond)
	return ms >= -limit && ms <= limit
}

func (w *wireJob) toJob() (*Job, error) {
	if !msInRange(w.OnFailureTimeoutMS) {
		return nil, fmt.Errorf("ezthrottle: on_failure_timeout_ms %d out of range", w.OnFailureTimeoutMS)
	}
	j := &Job{
		URL:              w.URL,
		Method:           w.Method,
		Headers:          w.Headers,
		Metadata:         w.Metadata,
		Webhooks:         w.Webhooks,
		WebhookQuorum:    w.WebhookQuorum,
		Regions:          w.Regions,
		RegionPolicy:     w.RegionPolicy,
		ExecutionMode:    w.ExecutionMode,
		RetryPolicy:      w.RetryPolicy,
		OnSuccess:        w.OnSuccess,
		OnFailure:        w.OnFailure,
		OnFailureTimeout: time.Duration(w.OnFailureTimeoutMS) * time.Millisecond,
		IdempotentKey:    w.IdempotentKey,
	}
	if w.Body != nil {
		j.Body = *w.Body
	}
	if w.RetryAt != 0 {
		j.RetryAt = time.UnixMilli(w.RetryAt)
	}
	if len(w.FallbackJob) > 0 && !bytes.Equal(w.FallbackJob, []byte("null")) {
		var fw wireJob
		dec := json.NewDecoder(bytes.NewReader(w.FallbackJob))
		dec.UseNumber()
		if err := dec.Decode(&fw); err != nil {
			return nil, fmt.Errorf("fallback_job: %w", err)
		}
		fj, err := fw.toJob()
		if err != nil {
			return nil, err
		}
		j.Fallback = &Fallback{Trigger: fw.Trigger, Job: fj}
	}
	return j, nil
}

// Clone returns a deep copy of the job, so that a template can be reused
// and modified without affecting earlier submissions.
func (j *Job) Clone() *Job {
	if j == nil {
		return nil
	}
	c := *j
	if j.Headers != nil {
		c.Headers = make(map[string]string, len(j.Headers))
		for k, v := range j.Headers {
			c.Headers[k] = v
		}
	}
	if j.Metadata != nil {
		c.Metadata = make(map[string]any, len(j.Metadata))
		for k, v := range j.Metadata {
			c.Metadata[k] = cloneValue(v)
		}
	}
	if j.Webhooks != nil {
		c.Webhooks = make([]Webhook, len(j.Webhooks))
		for i, w := range j.Webhooks {
			w.Regions = append([]Region(nil), w.Regions...)
			if w.HasQuorumVote != nil {
				w.HasQuorumVote = Bool(*w.HasQuorumVote)
			}
			c.Webhooks[i] = w
		}
	}
	c.Regions = append([]Region(nil), j.Regions...)
	if j.Regions == nil {
		c.Regions = nil
	}
	if j.RetryPolicy != nil {
		rp := *j.RetryPolicy
		rp.RetryCodes = append([]int(nil), rp.RetryCodes...)
		rp.RerouteCodes = append([]int(nil), rp.RerouteCodes...)
		c.RetryPolicy = &rp
	}
	if j.Fallback != nil {
		f := Fallback{Job: j.Fallback.Job.Clone()}
		if j.Fallback.Trigger != nil {
			t := *j.Fallback.Trigger
			t.Codes = append([]int(nil), t.Codes...)
			f.Trigger = &t
		}
		c.Fallback = &f
	}
	c.OnSuccess = j.OnSuccess.Clone()
	c.OnFailure = j.OnFailure.Clone()
	return &c
}

// cloneValue deep-copies the JSON-like values found in metadata (maps,
// slices); other values are copied as they are.
func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneValue(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = cloneValue(e)
		}
		return s
	case map[string]string:
		m := make(map[string]string, len(x))
		for k, e := range x {
			m[k] = e
		}
		return m
	case []string:
		return append([]string(nil), x...)
	}
	return v
}

func normalizeMethod(m string) string {
	if m == "" {
		return "GET"
	}
	return strings.ToUpper(m)
}

// marshalNoEscape encodes v without HTML escaping, so URLs and bodies
// containing &, < and > reach the engine byte for byte.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
