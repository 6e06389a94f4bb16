package webhook

import (
	"context"
	"net/http"
	"testing"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeys(t *testing.T) {
	assert.Equal(t, Key{JobID: "j", IdempotentKey: "k:1/2"}, KeyOf(&ezclient.Submission{JobID: "j", IdempotentKey: "k:1/2"}))
	assert.True(t, KeyOf(nil).IsZero())

	h := http.Header{}
	assert.True(t, KeyFromHeader(h).IsZero(), "not a forwarded 202")
	h.Set("x-ezthrottle-job-id", "job_9")
	h.Set("X-Ezthrottle-Idempotent-Key", "hash:abc")
	assert.Equal(t, Key{JobID: "job_9", IdempotentKey: "hash:abc"}, KeyFromHeader(h))

	for k, want := range map[Key]string{
		{JobID: "j", IdempotentKey: "k"}: "job j (key k)",
		{JobID: "j"}:                     "job j",
		{IdempotentKey: "k"}:             "key k",
		{}:                               "empty key",
	} {
		assert.Equal(t, want, k.String())
	}
}

// A self-hosted submission's key carries an idempotent key the payload will
// not: waiting on KeyOf(sub) still resolves by job ID.
func TestKeyOfSelfHostedSubmission(t *testing.T) {
	s := NewStore()
	defer s.Close()
	sub := &ezclient.Submission{JobID: "0123456789abcdef0123456789abcdef", IdempotentKey: "client-derived-hash"}
	r, err := Decode([]byte(selfCompleted))
	require.NoError(t, err)
	_, err = s.Add(r)
	require.NoError(t, err)
	got, err := s.Wait(context.Background(), KeyOf(sub))
	require.NoError(t, err)
	assert.Equal(t, sub.JobID, got.JobID)
}
