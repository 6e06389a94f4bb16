package ezclient

import (
	"net/url"
	"strings"
)

// sensitiveHeaderWords mark a job header whose value is a credential:
// Authorization, Proxy-Authorization, Cookie, X-Api-Key, X-Auth-Token,
// X-Partner-Token, X-Client-Secret, ...
var sensitiveHeaderWords = []string{"auth", "token", "secret", "api-key", "apikey", "api_key", "password", "cookie", "signature", "credential"}

// sensitiveParamWords mark a query parameter whose value is a credential.
var sensitiveParamWords = []string{"key", "token", "secret", "password", "sig", "signature", "credential", "auth"}

func hasWord(name string, words []string) bool {
	name = strings.ToLower(name)
	for _, w := range words {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// jobSecrets returns the credentials a job carries (the values of its
// sensitive headers, also the part after an auth scheme such as "Bearer",
// its URL's user info and sensitive query values), in the job and in every
// nested job, so that an engine reply echoing the job cannot put them in an
// error message.
func jobSecrets(j *Job) []string {
	var out []string
	add := func(v string) {
		v = strings.TrimSpace(v)
		if len(v) >= 6 {
			out = append(out, v)
		}
		if i := strings.LastIndexByte(v, ' '); i >= 0 && len(v)-i-1 >= 6 {
			out = append(out, v[i+1:])
		}
	}
	var walk func(*Job, int)
	walk = func(j *Job, depth int) {
		if j == nil || depth > 32 {
			return
		}
		for k, v := range j.Headers {
			if hasWord(k, sensitiveHeaderWords) {
				add(v)
			}
		}
		if u, err := url.Parse(j.URL); err == nil {
			if u.User != nil {
				add(u.User.Username())
				if p, ok := u.User.Password(); ok {
					add(p)
				}
			}
			for k, vs := range u.Query() {
				if hasWord(k, sensitiveParamWords) {
					for _, v := range vs {
						add(v)
					}
				}
			}
		}
		if j.Fallback != nil {
			walk(j.Fallback.Job, depth+1)
		}
		walk(j.OnSuccess, depth+1)
		walk(j.OnFailure, depth+1)
	}
	walk(j, 0)
	// Longest first, so that no secret is left half-replaced.
	for i := 1; i < len(out); i++ {
		for k := i; k > 0 && len(out[k]) > len(out[k-1]); k-- {
			out[k], out[k-1] = out[k-1], out[k]
		}
	}
	return out
}
