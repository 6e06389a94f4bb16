package ezclient

import (
	"context"
	"time"
)

// QueueRequestParams are the arguments of QueueRequest, the legacy
// single-webhook submission (queue_request in the Python SDK).
type QueueRequestParams struct {
	// URL is the request the engine executes. Required.
	URL string
	// WebhookURL receives the result. Required.
	WebhookURL string
	// Method is the HTTP method; empty means GET.
	Method string
	// Headers are sent with the request.
	Headers map[string]string
	// Body is the request body.
	Body string
	// Metadata is echoed back in the webhook payload (Cloud only).
	Metadata map[string]any
	// IdempotentKey de-duplicates submissions; empty means the HASH strategy.
	IdempotentKey string
	// RetryAt is the earliest execution time (Cloud only), for example a
	// RateLimitError's RetryAt.
	RetryAt time.Time
}

// QueueRequest submits a request with a single webhook, like the Python
// SDK's queue_request. It is Submit with a Job made from p; validation
// errors name webhook_url rather than webhooks[0].url.
//
// Deprecated: build a Job (or use the Step builder) and call Submit, which
// carries every feature: several webhooks, quorum, regions, fallbacks,
// workflows and retry policies.
func (c *Client) QueueRequest(ctx context.Context, p QueueRequestParams) (*Submission, error) {
	if err := ValidateURL("webhook_url", p.WebhookURL); err != nil {
		return nil, err
	}
	return c.Submit(ctx, &Job{
		URL:           p.URL,
		Method:        p.Method,
		Headers:       p.Headers,
		Body:          p.Body,
		Metadata:      p.Metadata,
		Webhooks:      []Webhook{{URL: p.WebhookURL}},
		IdempotentKey: p.IdempotentKey,
		RetryAt:       p.RetryAt,
	})
}
