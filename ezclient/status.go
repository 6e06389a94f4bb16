package ezclient

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Terminal reports whether s is a final state: StatusCompleted or
// StatusFailed.
func (s JobStatus) Terminal() bool { return s == StatusCompleted || s == StatusFailed }

// JobInfo is a job's state as reported by a self-hosted engine's status
// lookup (GET /jobs/{id}, protocol §2).
type JobInfo struct {
	// JobID identifies the job.
	JobID string
	// Status is StatusQueued, StatusInFlight, StatusCompleted or
	// StatusFailed (an engine may report others; they are passed through).
	Status JobStatus
	// URL is the job's target URL as the engine recorded it.
	URL string
	// Method is the job's HTTP method as the engine recorded it.
	Method string
	// CreatedAt is when the engine created the job (zero when not reported
	// in a known form: unix seconds or milliseconds, or RFC 3339).
	CreatedAt time.Time
	// Raw is the engine's whole reply, for fields this version does not know.
	Raw json.RawMessage
}

// GetJob looks up a job's status on a self-hosted engine. An unknown job
// gives an error satisfying errors.Is(err, ErrNotFound). Transient failures
// are retried like Submit's. On the Cloud dialect, which has no status
// lookup, it returns a *ValidationError satisfying ErrUnsupported without
// any network call.
func (c *Client) GetJob(ctx context.Context, jobID string) (*JobInfo, error) {
	if err := c.checkJobLookup("GetJob", jobID); err != nil {
		return nil, err
	}
	r, err := c.call(ctx, http.MethodGet, "/jobs/"+url.PathEscape(jobID), nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, c.replyError(r)
	}
	info, err := decodeJobInfo(jobID, r.body)
	return info, c.redact(err)
}

// peekJobStatus is a single-attempt status lookup (no retries, no backoff)
// for opportunistic checks that must not stall their caller.
func (c *Client) peekJobStatus(ctx context.Context, jobID string) (JobStatus, bool) {
	r, err := c.callOnce(ctx, http.MethodGet, "/jobs/"+url.PathEscape(jobID), nil, nil)
	if err != nil || r.status != http.StatusOK {
		return "", false
	}
	info, err := decodeJobInfo(jobID, r.body)
	if err != nil {
		return "", false
	}
	return info.Status, true
}

// checkJobLookup validates the arguments of the self-hosted job lookups.
func (c *Client) checkJobLookup(op, jobID string) error {
	if c.dialect != DialectSelfHosted {
		return unsupported(op, "EZThrottle Cloud has no job status API; use webhooks (self-hosted engines only)")
	}
	if strings.TrimSpace(jobID) == "" {
		return invalid("job_id", "required")
	}
	if !validHeaderValue(jobID) {
		return invalid("job_id", "contains control characters")
	}
	return nil
}

// decodeJobInfo parses a status reply. It is lenient with created_at and
// strict about status; a missing job_id is taken from the request.
func decodeJobInfo(jobID string, body []byte) (*JobInfo, error) {
	var raw struct {
		JobID     json.RawMessage `json:"job_id"`
		Status    json.RawMessage `json:"status"`
		URL       json.RawMessage `json:"url"`
		Method    json.RawMessage `json:"method"`
		CreatedAt json.RawMessage `json:"created_at"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &EngineError{StatusCode: http.StatusOK, Message: "malformed status reply: " + err.Error(), Body: truncate(body)}
	}
	info := &JobInfo{
		JobID:     scalarString(raw.JobID),
		Status:    JobStatus(scalarString(raw.Status)),
		URL:       scalarString(raw.URL),
		Method:    scalarString(raw.Method),
		CreatedAt: looseTime(raw.CreatedAt),
		Raw:       json.RawMessage(bytes.Clone(bytes.TrimSpace(body))),
	}
	if info.Status == "" {
		return nil, &EngineError{StatusCode: http.StatusOK, Message: "status reply without status", Body: truncate(body)}
	}
	if info.JobID == "" {
		info.JobID = jobID
	}
	return info, nil
}
