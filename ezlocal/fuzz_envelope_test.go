package ezlocal

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// userinfoLeak matches a password left in a URL's user info.
var userinfoLeak = regexp.MustCompile(`(?i)(://|%3a%2f%2f)[^/?#"\s]*pw_SECRET(@|%40)`)

// FuzzDecodeEnvelope drives the proxy envelope decoder and the job decoder
// behind it (what handleProxy and cloudSubmit run on untrusted bytes)
// directly, with hostile nesting among the seeds: no panic, an accepted
// envelope has an absolute http(s) target and a known method, no error
// quotes the target URL's password, and no accepted job is nested deeper
// than the engine's limit.
func FuzzDecodeEnvelope(f *testing.F) {
	deep := strings.Repeat(`{\"url\":\"http://h/\",\"on_success\":`, 40) + "null" + strings.Repeat("}", 40)
	f.Add([]byte(`{"target_url":"http://e.test/api/v1/jobs","method":"POST","body":"{\"url\":\"http://d.test\"}"}`))
	f.Add([]byte(`{"target_url":"http://e.test/api/v1/jobs","method":"POST","body":"` + deep + `"}`))
	f.Add([]byte(`{"target_url":"ftp://u:pw_SECRET@e.test/x","method":"POST"}`))
	f.Add([]byte(`{"target_url":"http://u:pw_SECRET@","method":"POST"}`))
	f.Add([]byte(`{"target_url":"http://e.test","method":"BREW"}`))
	f.Add([]byte(`{"target_url":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		env, err := decodeEnvelope(raw)
		if err != nil {
			if userinfoLeak.MatchString(err.Error()) {
				t.Fatalf("error quotes the password: %v", err)
			}
			return
		}
		if ezclient.ValidateURL("target_url", env.TargetURL) != nil {
			t.Fatalf("accepted target %q", env.TargetURL)
		}
		if ezclient.ValidateMethod("method", env.Method) != nil {
			t.Fatalf("accepted method %q", env.Method)
		}
		if env.Body == nil {
			return
		}
		var job ezclient.Job
		if err := job.UnmarshalJSON([]byte(*env.Body)); err != nil {
			if strings.Count(*env.Body, "{") <= 32 && errors.Is(err, ezclient.ErrJobTooDeep) {
				t.Fatalf("refused a job with at most 32 objects as too deep")
			}
			return
		}
		depth := 0
		for n := &job; n != nil; depth++ {
			n = n.OnSuccess
		}
		if depth > 33 {
			t.Fatalf("accepted a job %d deep", depth)
		}
	})
}
