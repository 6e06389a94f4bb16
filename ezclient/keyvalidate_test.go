package ezclient

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests: a job's idempotent key (the IdempotentKey field or the
// Idempotency-Key header) that a Submission could not carry back (control
// characters, invalid UTF-8, longer than MaxIdempotentKeyLength) used to
// be sent, accepted by the engine, and refused only in the reply, after
// the job existed. Job.Validate now refuses it at every depth, without
// quoting it; job header values with control characters or invalid UTF-8
// are refused the same way.

// fxBadKeys are keys no Submission can carry; each contains leakWord.
var fxBadKeys = map[string]string{
	"CRLF":         "k_SECRETX\r\nX-Evil: 1",
	"LF":           "k_SECRETX\nx",
	"CR":           "k_SECRETX\rx",
	"NUL":          "k_SECRETX\x00",
	"ESC":          "\x1bk_SECRETX",
	"DEL":          "k_SECRETX\x7f",
	"C1 NEL":       "k_SECRETX\u0085",
	"invalid UTF8": "k_SECRETX\xff\xfe",
	"too long":     "SECRETX" + strings.Repeat("k", MaxIdempotentKeyLength-6),
}

// fxKeyPlacements put a key at one depth of a job tree and name the field
// path the error must carry.
var fxKeyPlacements = []struct {
	name  string
	place func(root *Job) *Job // returns the job that gets the key
	path  string
}{
	{"top", func(r *Job) *Job { return r }, ""},
	{"on_success", func(r *Job) *Job { r.OnSuccess = fxJob(); return r.OnSuccess }, "on_success"},
	{"on_failure", func(r *Job) *Job { r.OnFailure = fxJob(); return r.OnFailure }, "on_failure"},
	{"fallback", func(r *Job) *Job { r.Fallback = &Fallback{Job: fxJob()}; return r.Fallback.Job }, "fallback_job"},
	{"fallback of on_success", func(r *Job) *Job {
		r.OnSuccess = fxJob()
		r.OnSuccess.Fallback = &Fallback{Job: fxJob(), Trigger: OnError(500)}
		return r.OnSuccess.Fallback.Job
	}, "on_success.fallback_job"},
}

func TestJobValidateRefusesUnsendableKeys(t *testing.T) {
	for kname, key := range fxBadKeys {
		for _, pl := range fxKeyPlacements {
			for _, via := range []string{"field", "Idempotency-Key", "idempotency-key"} {
				t.Run(fmt.Sprintf("%s/%s/%s", kname, pl.name, via), func(t *testing.T) {
					root := fxJob()
					j := pl.place(root)
					want := fieldPath(pl.path, "idempotent_key")
					if via == "field" {
						j.IdempotentKey = key
					} else {
						j.Headers = map[string]string{via: key}
						want = fieldPath(pl.path, "headers")
					}
					err := root.Validate()
					var ve *ValidationError
					require.ErrorAs(t, err, &ve)
					assert.Equal(t, want, ve.Field)
					assert.NotContains(t, err.Error(), leakWord, "the key must not be quoted")
					assert.NotContains(t, ve.Reason, leakWord)
					assert.NotContains(t, fmt.Sprintf("%#v", err), leakWord)

					// Nothing is sent: the submission fails before any call.
					srv := fxNewServer(t, fxForward(201, `{"job_id":"j1","status":"queued"}`))
					c, _ := fxCloud(t, srv)
					_, err = c.Submit(context.Background(), root)
					require.ErrorAs(t, err, &ve)
					assert.NotContains(t, err.Error(), leakWord)
					assert.Empty(t, srv.requests(), "an invalid key must be refused before sending")
				})
			}
		}
	}
}

// The self-hosted dialect (and QueueRequest, and the Step builder) go
// through the same check.
func TestKeyCheckOnEveryEntryPoint(t *testing.T) {
	srv := fxNewServer(t, fxReply{status: 201, body: `{"job_id":"j1","status":"queued"}`})
	sh, _ := fxSelfHosted(t, srv)
	j := fxJob()
	j.Webhooks = j.Webhooks[:1]
	j.IdempotentKey = "a\r\nb"
	_, err := sh.Submit(context.Background(), j)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "idempotent_key", ve.Field)

	_, err = sh.QueueRequest(context.Background(), QueueRequestParams{URL: "https://api.example.com/x", WebhookURL: "https://hooks.example.com/h", IdempotentKey: "a\nb"})
	require.ErrorAs(t, err, &ve)

	_, err = sh.Step().URL("https://api.example.com/x").Webhook(Webhook{URL: "https://hooks.example.com/h"}).IdempotentKey(strings.Repeat("k", MaxIdempotentKeyLength+1)).Execute(context.Background())
	require.ErrorAs(t, err, &ve)
	assert.Contains(t, ve.Reason, "at most 1024")
	assert.Empty(t, srv.requests())
}

// Keys a Submission can carry stay accepted: printable Unicode, spaces,
// exactly MaxIdempotentKeyLength bytes, and surrounding white space of the
// header (trimmed).
func TestJobValidateAcceptsCarriableKeys(t *testing.T) {
	for _, key := range []string{"order-42", "clé unique ✓", "a b", strings.Repeat("k", MaxIdempotentKeyLength)} {
		j := fxJob()
		j.IdempotentKey = key
		require.NoError(t, j.Validate(), "%q", key)
		j = fxJob()
		j.Headers = map[string]string{"Idempotency-Key": "  " + key + "\t"}
		require.NoError(t, j.Validate(), "%q", key)
	}
}

// Every header value of a job is held to the same rules (no control
// characters, valid UTF-8), at every depth, without quoting the value.
func TestJobValidateRefusesUnsendableHeaderValues(t *testing.T) {
	for kname, v := range fxBadKeys {
		if kname == "too long" {
			continue // only keys have a length bound
		}
		for _, pl := range fxKeyPlacements {
			t.Run(kname+"/"+pl.name, func(t *testing.T) {
				root := fxJob()
				j := pl.place(root)
				j.Headers = map[string]string{"Authorization": "Bearer " + v}
				var ve *ValidationError
				require.ErrorAs(t, root.Validate(), &ve)
				assert.Equal(t, fieldPath(pl.path, "headers"), ve.Field)
				assert.NotContains(t, ve.Error(), leakWord)
			})
		}
	}
	j := fxJob()
	j.Headers = map[string]string{"X-Note": "tab\tand ünïcode ✓"}
	require.NoError(t, j.Validate())
}
