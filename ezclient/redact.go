package ezclient

import (
	"fmt"
	"io"
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
