package ezclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// JobStatus is a job's state as reported by the engine.
type JobStatus string

// Job states. Submissions report StatusQueued or StatusRacing; status
// lookups and streams report the others.
const (
	StatusQueued    JobStatus = "queued"
	StatusRacing    JobStatus = "racing"
	StatusInFlight  JobStatus = "in_flight"
	StatusCompleted JobStatus = "completed"
	StatusFailed    JobStatus = "failed"
)

// Submission is the engine's acknowledgement of a submitted job.
type Submission struct {
	// JobID identifies the job.
	JobID string `json:"job_id"`
	// Status is StatusQueued, or StatusRacing for multi-region race jobs.
	Status JobStatus `json:"status"`
	// IdempotentKey is the key the engine de-duplicates on: the one sent,
	// or on Cloud the one the engine derived (HASH strategy). It may
	// contain ':' and '/'.
	IdempotentKey string `json:"idempotent_key,omitempty"`
	// QueuedAt is when the engine queued the job (zero when not reported).
	QueuedAt time.Time `json:"queued_at,omitzero"`
	// EstimatedProcessingTime is the engine's estimate, as it reports it
	// (0 when absent).
	EstimatedProcessingTime int64 `json:"estimated_processing_time,omitempty"`
	// Duplicate is true when the engine already had a job with this
	// idempotent key and returned it instead of creating a new one.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Bounds of the values an engine returns in a submission (see
// Submission.Validate).
const (
	// MaxJobIDLength is the longest job ID accepted from an engine, in
	// bytes.
	MaxJobIDLength = 256
	// MaxIdempotentKeyLength is the longest idempotent key accepted from an
	// engine, in bytes.
	MaxIdempotentKeyLength = 1024
	// MaxJobStatusLength is the longest job status accepted from an engine,
	// in bytes.
	MaxJobStatusLength = 64
)

// Validate checks the values an engine returned, which go on into logs,
// span attributes and (through the ezthrottle Transport) response headers:
// JobID must be set, and JobID, IdempotentKey and Status must be printable
// (valid UTF-8 without control characters)
// and at most MaxJobIDLength, MaxIdempotentKeyLength and MaxJobStatusLength
// bytes long. Submit applies it to every reply and fails with an
// *EngineError when it does not hold; a Submitter of your own can call it.
// The error satisfies errors.Is(err, ErrEngine).
func (s *Submission) Validate() error {
	if field, reason := s.invalidField(); field != "" {
		return fmt.Errorf("%w: invalid %s in the submission: %s", ErrEngine, field, reason)
	}
	return nil
}

// invalidField names the first invalid field of s and why ("" when valid).
func (s *Submission) invalidField() (field, reason string) {
	if s == nil {
		return "submission", "none"
	}
	if s.JobID == "" {
		return "job_id", "empty"
	}
	for _, f := range [...]struct {
		name, v string
		max     int
	}{{"job_id", s.JobID, MaxJobIDLength}, {"idempotent_key", s.IdempotentKey, MaxIdempotentKeyLength}, {"status", string(s.Status), MaxJobStatusLength}} {
		if len(f.v) > f.max {
			return f.name, fmt.Sprintf("%d bytes long (at most %d)", len(f.v), f.max)
		}
		if !printableValue(f.v) {
			return f.name, "not printable (control characters or invalid UTF-8)"
		}
	}
	return "", ""
}

// printableValue reports whether v is valid UTF-8 made of printable
// characters (unicode.IsPrint: letters, marks, numbers, punctuation,
// symbols and the ASCII space): a value that can stand in a header, a log
// line or an attribute as it is.
func printableValue(v string) bool {
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(v[i:])
		if r == utf8.RuneError && n <= 1 || !unicode.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}

// selfHostedJob is the body of POST /jobs on self-hosted engines.
type selfHostedJob struct {
	UserID        string            `json:"user_id"`
	IdempotentKey string            `json:"idempotent_key"`
	URL           string            `json:"url"`
	Method        string            `json:"method"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          string            `json:"body,omitempty"`
	WebhookURL    string            `json:"webhook_url"`
}

// Submit sends the job to the engine and returns its acknowledgement.
//
// The job is validated for the client's dialect first; an invalid job or one
// using a field the dialect cannot carry returns a *ValidationError and
// nothing is sent. Transient failures (network errors, proxy or engine 5xx)
// are retried with jittered exponential backoff (see WithRetry) using the
// same idempotent key, so the engine de-duplicates; 4xx replies are never
// retried. Submit honours ctx throughout and does not start a backoff wait
// that cannot finish before ctx's deadline.
//
// A job without IdempotentKey whose headers carry an Idempotency-Key is
// sent with that value as its key (protocol §3), nested jobs included. On
// the self-hosted dialect a job with neither gets HashKey(userID, method,
// url, body), so retries and repeats de-duplicate as the HASH strategy
// promises.
func (c *Client) Submit(ctx context.Context, job *Job) (*Submission, error) {
	if job == nil {
		return nil, invalid("job", "nil job")
	}
	// An engine reply may echo the job: keep its credentials (header
	// values, URL user info and query secrets, in every encoding) out of
	// the errors returned, the retry loop's log lines and the messages
	// logged with ctx.
	secrets := jobSecrets(job)
	// Secrets the caller knows beyond the job's names (the Transport's
	// WithSensitiveHeaders) come with the context.
	secrets = append(secrets, redact.SecretsFrom(ctx).Values()...)
	ctx = redact.ContextWithSecrets(ctx, redact.NewSecrets("****", secrets...))
	sub, err := c.submit(ctx, job, secrets)
	if err != nil {
		redactError(err, append(secrets, c.apiKey.Reveal()))
	}
	return sub, err
}

func (c *Client) submit(ctx context.Context, job *Job, secrets []string) (*Submission, error) {
	if err := job.ValidateFor(c.dialect); err != nil {
		return nil, err
	}
	var (
		path string
		body []byte
		key  = job.customKey()
		err  error
	)
	if c.dialect == DialectCloud {
		path = "/api/v1/jobs"
		body, err = marshalNoEscape(job)
	} else {
		path = "/jobs"
		method := normalizeMethod(job.Method)
		if key == "" {
			key = HashKey(c.userID, method, job.URL, []byte(job.Body))
		}
		body, err = marshalNoEscape(selfHostedJob{
			UserID: c.userID, IdempotentKey: key, URL: job.URL, Method: method,
			Headers: job.Headers, Body: job.Body, WebhookURL: job.Webhooks[0].URL,
		})
	}
	if err != nil {
		return nil, err
	}
	r, err := c.call(ctx, http.MethodPost, path, body, secrets...)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK && r.status != http.StatusCreated {
		return nil, c.replyError(r)
	}
	sub, err := decodeSubmission(r.status, r.body)
	if err != nil {
		return nil, c.redact(err)
	}
	if sub.IdempotentKey == "" {
		sub.IdempotentKey = key
	}
	c.logger.LogAttrs(ctx, slog.LevelDebug, "ezthrottle: job submitted",
		slog.String("job_id", sub.JobID), slog.String("status", string(sub.Status)), slog.Bool("duplicate", sub.Duplicate))
	return sub, nil
}

// decodeSubmission parses a 200/201 submission reply (protocol §1.3 and
// §2); a 200 is a duplicate. It is lenient with the optional fields (a
// queued_at or estimated_processing_time in an unexpected form is dropped,
// not fatal: the job was accepted) and strict only about job_id.
func decodeSubmission(status int, body []byte) (*Submission, error) {
	var raw struct {
		JobID                   json.RawMessage `json:"job_id"`
		Status                  json.RawMessage `json:"status"`
		IdempotentKey           json.RawMessage `json:"idempotent_key"`
		QueuedAt                json.RawMessage `json:"queued_at"`
		EstimatedProcessingTime json.RawMessage `json:"estimated_processing_time"`
		Duplicate               json.RawMessage `json:"duplicate"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &EngineError{StatusCode: status, Message: "malformed submission reply: " + err.Error(), Body: truncate(body)}
	}
	jobID := scalarString(raw.JobID)
	if strings.TrimSpace(jobID) == "" {
		return nil, &EngineError{StatusCode: status, Message: "submission reply without job_id", Body: truncate(body)}
	}
	sub := &Submission{
		JobID:         jobID,
		Status:        JobStatus(scalarString(raw.Status)),
		IdempotentKey: scalarString(raw.IdempotentKey),
		QueuedAt:      looseTime(raw.QueuedAt),
		Duplicate:     looseBool(raw.Duplicate) || status == http.StatusOK,
	}
	if sub.Status == "" {
		sub.Status = StatusQueued
	}
	if field, reason := sub.invalidField(); field != "" {
		// Never pass on a value that could inject into a header or flood
		// a log: the submission fails, its caller keeps its own outcome.
		return nil, &EngineError{StatusCode: status, Message: "submission reply with an invalid " + field + ": " + reason, Body: truncate(body)}
	}
	if f, err := strconv.ParseFloat(scalarString(raw.EstimatedProcessingTime), 64); err == nil && f >= 0 && f < math.MaxInt64/2 {
		sub.EstimatedProcessingTime = int64(f)
	}
	return sub, nil
}

// scalarString is looseString restricted to strings, numbers and booleans:
// objects and arrays give "".
func scalarString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '{' || raw[0] == '[' {
		return ""
	}
	return looseString(raw)
}

// looseBool reads true or "true" (any case).
func looseBool(raw json.RawMessage) bool {
	b, err := strconv.ParseBool(strings.ToLower(strings.TrimSpace(scalarString(raw))))
	return err == nil && b
}

// looseTime reads a timestamp sent as unix milliseconds or seconds (number
// or numeric string) or as an RFC 3339 string; anything else is the zero
// time.
func looseTime(raw json.RawMessage) time.Time {
	s := strings.TrimSpace(scalarString(raw))
	if s == "" {
		return time.Time{}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return unixGuess(f)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t
	}
	return time.Time{}
}

// HashKey is the idempotent key derived for the HASH strategy where the
// client must derive one (self-hosted engines; Cloud derives its own): the
// lower-case hex SHA-256 of
//
//	scope "\n" METHOD "\n" url "\n" body
//
// with the method upper-cased (empty = GET) and the URL exactly as sent.
// scope is the self-hosted user ID, so two users never share a key.
func HashKey(scope, method, url string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(scope))
	h.Write([]byte{'\n'})
	h.Write([]byte(normalizeMethod(method)))
	h.Write([]byte{'\n'})
	h.Write([]byte(url))
	h.Write([]byte{'\n'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// UniqueKey returns a fresh random idempotent key (a UUID v4), for the UNIQUE
// strategy.
func UniqueKey() string { return uuid.NewString() }
