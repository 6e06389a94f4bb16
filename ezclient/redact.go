package ezclient

import (
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
