package ezclient

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// jobSecrets returns the credentials a job carries (the values of its
// sensitive headers, also the part after an auth scheme such as "Bearer",
// its URL's user info and sensitive query values), in the job and in every
// nested job, in each form they travel in (as is, percent-encoded,
// JSON-escaped), so that an engine reply echoing the job cannot put them in
// an error message or a log line. Sensitive names are those of
// internal/redact (SensitiveHeader, SensitiveParam).
func jobSecrets(j *Job) []string {
	set := redact.NewSecrets("****")
	var walk func(*Job, int)
	walk = func(j *Job, depth int) {
		if j == nil || depth > maxJobDepth+1 {
			return
		}
		for k, v := range j.Headers {
			set.AddHeader(k, false, v)
		}
		set.AddURL(j.URL)
		for _, w := range j.Webhooks {
			set.AddURL(w.URL)
		}
		if j.Fallback != nil {
			walk(j.Fallback.Job, depth+1)
		}
		walk(j.OnSuccess, depth+1)
		walk(j.OnFailure, depth+1)
	}
	walk(j, 0)
	return set.Values()
}

// GoString is String: %#v of a step never shows its URL's credentials or
// its header values.
func (s *Step) GoString() string { return s.String() }

// Format prints a summary of the result with every verb (%v, %+v, %#v,
// %s): the URL redacted (no user info, sensitive query values masked), the
// number of header values and body bytes instead of their content (the
// destination's cookies and tokens), the error redacted. Read the fields for
// the content.
func (r *StepResult) Format(f fmt.State, _ rune) {
	if r == nil {
		_, _ = io.WriteString(f, "<nil step result>")
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ezclient.StepResult{%s, local: %t, %s %s, status: %d, %d header(s), %d body byte(s)",
		r.Outcome, r.Local, r.Method, redact.URL(r.URL), r.StatusCode, len(r.Header), len(r.Body))
	if r.Err != nil {
		fmt.Fprintf(&b, ", err: %s", redact.Text(r.Err.Error()))
	}
	if r.Submission != nil {
		fmt.Fprintf(&b, ", job: %s", r.Submission.JobID)
	}
	if n := len(r.Fallbacks); n > 0 {
		fmt.Fprintf(&b, ", %d fallback(s)", n)
	}
	b.WriteString("}")
	_, _ = io.WriteString(f, b.String())
}

// scrubErr returns err, wrapped so that its message carries nothing
// redact.Text finds (URL user info, sensitive query values, credential
// headers), when it would; errors.Is and errors.As still see err.
func scrubErr(err error) error {
	if err == nil {
		return nil
	}
	if msg := err.Error(); redact.Text(msg) != msg {
		return &scrubbedError{msg: redact.Text(msg), err: err}
	}
	return err
}

// Format prints a summary of the job with every verb (%v, %+v, %#v, %s):
// method, URL and webhook URLs redacted (no user info, sensitive query
// values masked), the header names with their values hidden when they are
// credentials, the body's size, and the nested jobs' count. A job carries
// the caller's credentials; read its fields, or encode it, for the content.
func (j Job) Format(f fmt.State, _ rune) {
	var b strings.Builder
	writeJobSummary(&b, &j, 0)
	_, _ = io.WriteString(f, b.String())
}

func writeJobSummary(b *strings.Builder, j *Job, depth int) {
	if j == nil {
		b.WriteString("<nil>")
		return
	}
	fmt.Fprintf(b, "ezclient.Job{%s %s", normalizeMethod(j.Method), redact.URL(j.URL))
	if len(j.Headers) > 0 {
		names := make([]string, 0, len(j.Headers))
		for k, v := range j.Headers {
			if redact.SensitiveHeader(k) {
				v = redact.Mask
			}
			names = append(names, k+": "+redact.Text(v))
		}
		slices.Sort(names)
		fmt.Fprintf(b, ", headers: [%s]", strings.Join(names, "; "))
	}
	if j.Body != "" {
		fmt.Fprintf(b, ", %d body byte(s)", len(j.Body))
	}
	if j.IdempotentKey != "" {
		fmt.Fprintf(b, ", key: %s", j.IdempotentKey)
	}
	for _, w := range j.Webhooks {
		fmt.Fprintf(b, ", webhook: %s", redact.URL(w.URL))
	}
	if depth >= maxJobDepth {
		b.WriteString(", ...}")
		return
	}
	for _, c := range []struct {
		name string
		job  *Job
	}{{"on_success", j.OnSuccess}, {"on_failure", j.OnFailure}} {
		if c.job != nil {
			b.WriteString(", " + c.name + ": ")
			writeJobSummary(b, c.job, depth+1)
		}
	}
	if j.Fallback != nil && j.Fallback.Job != nil {
		b.WriteString(", fallback: ")
		writeJobSummary(b, j.Fallback.Job, depth+1)
	}
	b.WriteString("}")
}
