package ezclient

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRegionCodesValidated: job and webhook regions must be three
// lower-case letters; anything else is a *ValidationError naming the field,
// at every depth, before anything is sent (issue 13 item 10).
func TestRegionCodesValidated(t *testing.T) {
	bad := []Region{"IAD", "Iad", "us-east-1", "ia", "iadx", "", " ", "i d", "ia1", "íad", "iad\n", "lax "}
	good := []Region{"iad", "lax", "xyz"}
	for _, r := range good {
		assert.True(t, ValidRegion(r), "%q", r)
	}
	for _, r := range bad {
		assert.False(t, ValidRegion(r), "%q", r)
	}
	srv := fxNewServer(t, fxForward(201, `{"job_id":"j","status":"queued"}`))
	c, _ := fxCloud(t, srv)
	for _, r := range bad {
		for _, tc := range []struct {
			name  string
			job   *Job
			field string
		}{
			{"job", &Job{URL: "https://a.example", Regions: []Region{RegionIAD, r}}, "regions"},
			{"webhook", &Job{URL: "https://a.example", Webhooks: []Webhook{{URL: "https://h.example", Regions: []Region{r}}}}, "webhooks[0].regions"},
			{"nested", &Job{URL: "https://a.example", OnSuccess: &Job{URL: "https://b.example", Regions: []Region{r}}}, "on_success.regions"},
			{"fallback webhook", &Job{URL: "https://a.example", Fallback: &Fallback{Job: &Job{URL: "https://b.example",
				Webhooks: []Webhook{{URL: "https://h.example"}, {URL: "https://h2.example", Regions: []Region{"lax", r}}}}}}, "fallback_job.webhooks[1].regions"},
		} {
			_, err := c.Submit(context.Background(), tc.job)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve, "%s %q", tc.name, r)
			assert.Equal(t, tc.field, ve.Field, "%s %q", tc.name, r)
			assert.True(t, errors.Is(err, ErrValidation))
		}
		// The Step builder goes through the same validation.
		_, err := c.Step().URL("https://a.example").Regions(r).Execute(context.Background())
		assert.ErrorIs(t, err, ErrValidation, "step %q", r)
	}
	assert.Empty(t, srv.requests(), "nothing was sent")

	_, err := c.Submit(context.Background(), &Job{URL: "https://a.example", Regions: good, Webhooks: []Webhook{{URL: "https://h.example", Regions: good}}})
	require.NoError(t, err)
}
