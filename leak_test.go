package ezthrottle_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// TestForwardErrorsRedactCredentials (issue 14, item 2): a *ForwardError
// and AutoForward's error when the submission fails print the job URL
// without its user info or secret query values (raw or percent-encoded),
// in every verb, whatever wraps them, and whatever the Submitter's error
// echoes of the job.
func TestForwardErrorsRedactCredentials(t *testing.T) {
	const word = "SECRETX"
	job := ezclient.Job{
		URL:     "https://usr_SECRETX:pw_SECRETX@api.example.com/v1/x?api_key=k_SECRETX_1&token=tk%2FSECRETX_q%2BEnc%3D%3D",
		Method:  "POST",
		Headers: map[string]string{"Authorization": "Bearer bt_SECRETX_2", "Cookie": "sid=ck_SECRETX_3"},
		Body:    `{"a":1}`,
	}
	fe := &ezthrottle.ForwardError{Job: job, Cause: errors.New("upstream answered 429")}
	echo := ezthrottle.SubmitterFunc(func(_ context.Context, j *ezclient.Job) (*ezclient.Submission, error) {
		return nil, fmt.Errorf("engine rejected %s with headers %v", j.URL, j.Headers)
	})
	_, _, afErr := ezthrottle.AutoForward(context.Background(), echo, func(context.Context) (int, error) { return 0, fe })
	require.Error(t, afErr)
	var got *ezthrottle.ForwardError
	require.ErrorAs(t, afErr, &got, "the ForwardError is still reachable")
	assert.Equal(t, job.URL, got.Job.URL, "and intact")
	// fn's own wrapping may quote the URL itself.
	own := fmt.Errorf("POST %s: %w", job.URL, fe)
	_, _, ownErr := ezthrottle.AutoForward(context.Background(), echo, func(context.Context) (int, error) { return 0, own })
	require.ErrorAs(t, ownErr, &got)
	for name, err := range map[string]error{"ForwardError": fe, "wrapped": fmt.Errorf("charge: %w", fe), "AutoForward": afErr, "AutoForward, fn quoting the URL": ownErr,
		"ForwardFailedError": &ezthrottle.ForwardFailedError{Reason: ezthrottle.ReasonAutoForward, Err: errors.New("POST " + job.URL)}} {
		for _, s := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err), fmt.Sprintf("%s", err)} {
			assert.NotContains(t, s, word, name)
		}
	}
	assert.Contains(t, fe.Error(), "api.example.com/v1/x")
}
