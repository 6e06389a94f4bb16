package ezclient

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// maxJobDepth bounds nesting (fallback chains, on_success, on_failure); it
// also catches accidental cycles between jobs.
const maxJobDepth = 32

// maxJobCount bounds the number of jobs in one tree (a job shared by
// several parents counts once per parent), so that a small graph of shared
// children cannot make validation or encoding explode.
const maxJobCount = 1000

var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true, http.MethodTrace: true,
}

// Validate checks the job (and every nested job) against the rules that hold
// for every dialect. It returns a *ValidationError naming the first offending
// field, e.g. "fallback_job.url".
func (j *Job) Validate() error {
	budget := maxJobCount
	return j.validate("", 0, &budget)
}

func fieldPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// invalid returns a *ValidationError. The reason may quote the input: what
// it quotes of a credential (URL user info, sensitive query values) is
// redacted in the field itself, not only in Error.
func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: redact.Text(fmt.Sprintf(format, args...))}
}

// ValidateURL checks that raw is an absolute http or https URL with a host.
func ValidateURL(field, raw string) error {
	if raw == "" {
		return invalid(field, "required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid(field, "not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return invalid(field, "%q is not an absolute http(s) URL", raw)
	}
	if u.Host == "" {
		return invalid(field, "%q has no host", raw)
	}
	return nil
}

// ValidateMethod checks that m is a known HTTP method (any case; empty means GET).
func ValidateMethod(field, m string) error {
	if m == "" {
		return nil
	}
	if !knownMethods[strings.ToUpper(m)] {
		return invalid(field, "unknown HTTP method %q", m)
	}
	return nil
}

func validStatus(code int) bool { return code >= 100 && code <= 599 }

func (j *Job) validate(p string, depth int, budget *int) error {
	if j == nil {
		return invalid(p, "nil job")
	}
	if depth > maxJobDepth {
		return invalid(p, "jobs nested deeper than %d (is there a cycle?)", maxJobDepth)
	}
	if *budget--; *budget < 0 {
		return invalid(p, "more than %d jobs in one tree", maxJobCount)
	}
	if err := ValidateURL(fieldPath(p, "url"), j.URL); err != nil {
		return err
	}
	if err := ValidateMethod(fieldPath(p, "method"), j.Method); err != nil {
		return err
	}
	for k, v := range j.Headers {
		if !validHeaderName(k) {
			return invalid(fieldPath(p, "headers"), "invalid header name %q", k)
		}
		if !validJobHeaderValue(v) {
			// The value is never quoted: it may be a credential.
			return invalid(fieldPath(p, "headers"), "the value of header %q contains control characters or invalid UTF-8, which a job header cannot carry", k)
		}
	}
	if err := validateKey(p, j); err != nil {
		return err
	}
	if len(j.Metadata) > 0 {
		if _, err := json.Marshal(j.Metadata); err != nil {
			return invalid(fieldPath(p, "metadata"), "cannot be encoded as JSON: %v", err)
		}
	}
	if !utf8.ValidString(j.Body) {
		return invalid(fieldPath(p, "body"), "not valid UTF-8 (the body travels as a JSON string; binary bodies cannot be carried)")
	}
	voting := 0
	for i, w := range j.Webhooks {
		wp := fmt.Sprintf("%s[%d]", fieldPath(p, "webhooks"), i)
		if err := ValidateURL(wp+".url", w.URL); err != nil {
			return err
		}
		if err := validateRegions(wp+".regions", w.Regions); err != nil {
			return err
		}
		if w.Votes() {
			voting++
		}
	}
	if j.WebhookQuorum < 0 {
		return invalid(fieldPath(p, "webhook_quorum"), "negative (%d)", j.WebhookQuorum)
	}
	if j.WebhookQuorum > 1 && j.WebhookQuorum > voting {
		return invalid(fieldPath(p, "webhook_quorum"), "quorum %d is larger than the %d webhooks with has_quorum_vote", j.WebhookQuorum, voting)
	}
	if err := validateRegions(fieldPath(p, "regions"), j.Regions); err != nil {
		return err
	}
	switch j.RegionPolicy {
	case "", RegionPolicyFallback, RegionPolicyStrict:
	default:
		return invalid(fieldPath(p, "region_policy"), "unknown region policy %q", j.RegionPolicy)
	}
	switch j.ExecutionMode {
	case "", ExecutionRace, ExecutionFanout:
	default:
		return invalid(fieldPath(p, "execution_mode"), "unknown execution mode %q", j.ExecutionMode)
	}
	if rp := j.RetryPolicy; rp != nil {
		rpp := fieldPath(p, "retry_policy")
		if rp.MaxRetries < 0 {
			return invalid(rpp+".max_retries", "negative (%d)", rp.MaxRetries)
		}
		if rp.MaxReroutes < 0 {
			return invalid(rpp+".max_reroutes", "negative (%d)", rp.MaxReroutes)
		}
		for _, c := range rp.RetryCodes {
			if !validStatus(c) {
				return invalid(rpp+".retry_codes", "%d is not an HTTP status code", c)
			}
		}
		for _, c := range rp.RerouteCodes {
			if !validStatus(c) {
				return invalid(rpp+".reroute_codes", "%d is not an HTTP status code", c)
			}
		}
	}
	if j.OnFailureTimeout < 0 || (j.OnFailureTimeout > 0 && j.OnFailureTimeout < time.Millisecond) {
		return invalid(fieldPath(p, "on_failure_timeout_ms"), "must be 0 (unset) or at least 1ms (got %v)", j.OnFailureTimeout)
	}
	if f := j.Fallback; f != nil {
		fp := fieldPath(p, "fallback_job")
		if f.Job == nil {
			return invalid(fp, "fallback without a job")
		}
		if t := f.Trigger; t != nil {
			switch t.Type {
			case TriggerOnError:
				if len(t.Codes) == 0 {
					return invalid(fp+".trigger.codes", "an on_error trigger needs at least one status code")
				}
				for _, c := range t.Codes {
					if !validStatus(c) {
						return invalid(fp+".trigger.codes", "%d is not an HTTP status code", c)
					}
				}
			case TriggerOnTimeout:
				if t.Timeout < time.Millisecond {
					return invalid(fp+".trigger.timeout_ms", "an on_timeout trigger needs a timeout of at least 1ms (got %v)", t.Timeout)
				}
			default:
				return invalid(fp+".trigger.type", "unknown trigger type %q", t.Type)
			}
		}
		if err := f.Job.validate(fp, depth+1, budget); err != nil {
			return err
		}
	}
	if j.OnSuccess != nil {
		if err := j.OnSuccess.validate(fieldPath(p, "on_success"), depth+1, budget); err != nil {
			return err
		}
	}
	if j.OnFailure != nil {
		if err := j.OnFailure.validate(fieldPath(p, "on_failure"), depth+1, budget); err != nil {
			return err
		}
	}
	return nil
}

func unsupported(field, reason string) error {
	return &ValidationError{Field: field, Reason: reason, Unsupported: true}
}

// ValidateFor checks the job for dialect d: Validate, plus the fields that d
// cannot carry. Self-hosted engines take exactly one webhook and none of
// metadata, regions, region_policy, execution_mode, webhook_quorum,
// retry_policy, fallback_job, on_success, on_failure, on_failure_timeout_ms,
// retry_at or per-webhook options; a job using one fails here with an error
// satisfying errors.Is(err, ErrUnsupported) that names the field.
func (j *Job) ValidateFor(d Dialect) error {
	if err := j.Validate(); err != nil {
		return err
	}
	if d != DialectSelfHosted {
		return nil
	}
	const why = "self-hosted engines cannot carry it"
	switch {
	case len(j.Metadata) > 0:
		return unsupported("metadata", why)
	case len(j.Regions) > 0:
		return unsupported("regions", why)
	case j.RegionPolicy != "" && j.RegionPolicy != RegionPolicyFallback:
		return unsupported("region_policy", why)
	case j.ExecutionMode != "" && j.ExecutionMode != ExecutionRace:
		return unsupported("execution_mode", why)
	case j.WebhookQuorum > 1:
		return unsupported("webhook_quorum", why)
	case j.RetryPolicy != nil:
		return unsupported("retry_policy", why)
	case j.Fallback != nil:
		return unsupported("fallback_job", why)
	case j.OnSuccess != nil:
		return unsupported("on_success", why)
	case j.OnFailure != nil:
		return unsupported("on_failure", why)
	case j.OnFailureTimeout != 0:
		return unsupported("on_failure_timeout_ms", why)
	case !j.RetryAt.IsZero():
		return unsupported("retry_at", why)
	case len(j.Webhooks) > 1:
		return unsupported("webhooks", "self-hosted engines deliver to exactly one webhook (webhook_url)")
	case len(j.Webhooks) == 0:
		return invalid("webhooks", "self-hosted engines require exactly one webhook (webhook_url)")
	case len(j.Webhooks[0].Regions) > 0:
		return unsupported("webhooks[0].regions", why)
	case !j.Webhooks[0].Votes():
		return unsupported("webhooks[0].has_quorum_vote", why)
	}
	return nil
}

// ValidRegion reports whether r has the form of an engine region code:
// exactly three lower-case ASCII letters, such as "iad" or "lax".
func ValidRegion(r Region) bool {
	if len(r) != 3 {
		return false
	}
	for i := 0; i < len(r); i++ {
		if r[i] < 'a' || r[i] > 'z' {
			return false
		}
	}
	return true
}

// validateRegions checks every code of a job's or a webhook's regions.
func validateRegions(field string, rs []Region) error {
	for _, r := range rs {
		if !ValidRegion(r) {
			return invalid(field, "%q is not a region code (three lower-case letters, such as %q)", string(r), string(RegionIAD))
		}
	}
	return nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validateKey checks the job's custom idempotent key (customKey: the
// IdempotentKey field, else the Idempotency-Key header) against the rules a
// Submission's key must meet (Submission.Validate): printable and at most
// MaxIdempotentKeyLength bytes. A key the engine would accept but the
// client (or the Transport) would then refuse in the reply is refused here,
// before any job exists. The reason never quotes the key.
func validateKey(p string, j *Job) error {
	key := j.customKey()
	if key == "" {
		return nil
	}
	field, what := fieldPath(p, "idempotent_key"), "the idempotent key"
	if j.IdempotentKey == "" {
		field, what = fieldPath(p, "headers"), "the "+IdempotencyKeyHeader+" header (the job's idempotent key)"
	}
	if len(key) > MaxIdempotentKeyLength {
		return invalid(field, "%s is %d bytes long (at most %d)", what, len(key), MaxIdempotentKeyLength)
	}
	if !printableValue(key) {
		return invalid(field, "%s is not printable (control characters such as CR or LF, or invalid UTF-8)", what)
	}
	return nil
}

// validJobHeaderValue reports whether s can travel as a job's header value:
// valid UTF-8 (the job is JSON: invalid bytes would be silently replaced)
// without control characters (C0 but tab, DEL, C1).
func validJobHeaderValue(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n <= 1) || (r >= 0x80 && r <= 0x9f) {
			return false
		}
		i += n
	}
	return true
}

// validHeaderValue reports whether s has no control characters but tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
