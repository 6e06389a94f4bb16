package ezclient

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unsafeEngineValues are values an engine (or anything posing as one) may
// return that must never be passed on: they would inject into a header,
// flood a log or a span attribute.
var unsafeEngineValues = map[string]string{
	"CR LF":               "job_1\r\nSet-Cookie: x=1",
	"LF":                  "job_1\nX: y",
	"CR":                  "job_1\rx",
	"NUL":                 "job\x00",
	"DEL":                 "job\x7f",
	"tab":                 "job\t1",
	"C1 control":          "job\u00851",
	"line separator":      "job\u20281",
	"invalid UTF-8":       "job\xff1",
	"1 MiB":               strings.Repeat("j", 1<<20),
	"just over the bound": strings.Repeat("j", MaxIdempotentKeyLength+1),
}

// Every engine-supplied value of a submission is validated where the reply
// is decoded, in both dialects: a bad value is a failed submission (an
// *EngineError, not retried), never a Submission.
func TestSubmitRejectsUnsafeEngineValues(t *testing.T) {
	for _, field := range []string{"job_id", "idempotent_key", "status"} {
		for name, v := range unsafeEngineValues {
			if name == "invalid UTF-8" {
				continue // JSON decoding turns it into U+FFFD: cannot arrive
			}
			if field == "idempotent_key" && name == "just over the bound" {
				v = strings.Repeat("k", MaxIdempotentKeyLength+1)
			}
			reply := map[string]any{"job_id": "job_1", "status": "queued", "idempotent_key": "k:1/2"}
			reply[field] = v
			b, err := json.Marshal(reply)
			require.NoError(t, err)
			for _, selfHosted := range []bool{false, true} {
				var (
					c   *Client
					srv *fxServer
					job *Job
				)
				if selfHosted {
					srv = fxNewServer(t, fxReply{status: 201, body: string(b)})
					c, _ = fxSelfHosted(t, srv)
					job = fxJobSelfHosted()
				} else {
					srv = fxNewServer(t, fxForward(201, string(b)))
					c, _ = fxCloud(t, srv)
					job = fxJob()
				}
				sub, err := c.Submit(context.Background(), job)
				require.Error(t, err, "%s %s self-hosted=%v", field, name, selfHosted)
				assert.Nil(t, sub)
				var ee *EngineError
				require.ErrorAs(t, err, &ee)
				assert.ErrorIs(t, err, ErrEngine)
				assert.Contains(t, ee.Message, field)
				assert.LessOrEqual(t, len(ee.Body), maxErrorBody)
				assert.Less(t, len(err.Error()), 512, "the error does not carry the value")
				assert.Len(t, srv.requests(), 1, "not retried")
			}
		}
	}
}

func TestSubmissionValidate(t *testing.T) {
	ok := []Submission{
		{JobID: "job_1763674210055_853341", Status: StatusQueued},
		{JobID: "0123456789abcdef0123456789abcdef", Status: StatusRacing, IdempotentKey: "cust:abc/def ghi"},
		{JobID: "j", IdempotentKey: "commande-é-日本"},
		{JobID: strings.Repeat("j", MaxJobIDLength), IdempotentKey: strings.Repeat("k", MaxIdempotentKeyLength),
			Status: JobStatus(strings.Repeat("s", MaxJobStatusLength))},
	}
	for _, s := range ok {
		assert.NoError(t, s.Validate(), "%+v", s)
	}
	var nilSub *Submission
	assert.ErrorIs(t, nilSub.Validate(), ErrEngine)
	assert.ErrorIs(t, (&Submission{}).Validate(), ErrEngine, "no job ID")
	assert.Error(t, (&Submission{JobID: strings.Repeat("j", MaxJobIDLength+1)}).Validate())
	assert.Error(t, (&Submission{JobID: "j", Status: JobStatus(strings.Repeat("s", MaxJobStatusLength+1))}).Validate())
	for name, v := range unsafeEngineValues {
		if name == "just over the bound" {
			continue // within the job ID's bound only for keys; covered above
		}
		for _, s := range []Submission{{JobID: v}, {JobID: "j", IdempotentKey: v}, {JobID: "j", Status: JobStatus(v)}} {
			err := s.Validate()
			require.Error(t, err, name)
			assert.True(t, errors.Is(err, ErrEngine), name)
			assert.Less(t, len(err.Error()), 512, "the error does not carry the value")
		}
	}
}

// FuzzSubmissionReplyValues: whatever the reply, a decoded submission has
// only values that Validate accepts (safe for headers, logs and spans).
func FuzzSubmissionReplyValues(f *testing.F) {
	f.Add(201, []byte(`{"job_id":"job_1","status":"racing","idempotent_key":"a:b/c"}`))
	f.Add(201, []byte(`{"job_id":"job_1\r\nX: y","status":"queued"}`))
	f.Add(200, []byte(`{"job_id":"j","idempotent_key":" k","status":"queued\u0085"}`))
	f.Add(201, []byte(`{"job_id":12,"status":true,"idempotent_key":1e300}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		sub, err := decodeSubmission(status, body)
		if err != nil {
			fxCheckTypedError(t, err, body)
			return
		}
		if err := sub.Validate(); err != nil {
			t.Fatalf("decoded submission %+v fails Validate: %v", *sub, err)
		}
	})
}
