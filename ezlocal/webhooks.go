package ezlocal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

// flattenHeader turns a reply header into the payload's lower-case
// name → value map (several values joined with ", ").
func flattenHeader(h http.Header) map[string]string {
	m := make(map[string]string, len(h))
	for k, vs := range h {
		m[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	return m
}

// payloadFor builds the webhook body of a finished job, in the webhook
// package's payload types (protocol §4).
func (e *Engine) payloadFor(j *job, out outcome, reason string) ([]byte, error) {
	res := out.res
	if res == nil {
		res = &Result{}
	}
	if j.dialect == ezclient.DialectSelfHosted {
		p := webhook.SelfHostedPayload{JobID: j.id, Status: webhook.SelfHostedCompleted, ResponseStatus: res.StatusCode, Body: res.Body}
		if !e.succeeded(j, out) {
			p.Status, p.Reason = webhook.SelfHostedFailed, reason
		}
		return marshalJSON(p)
	}
	p := webhook.CloudPayload{
		JobID: j.id, IdempotentKey: j.key, Status: webhook.CloudSuccess,
		Response: &webhook.CloudResponse{StatusCode: res.StatusCode, Headers: flattenHeader(res.Header), Body: res.Body},
		Metadata: j.spec.Metadata,
	}
	if p.Metadata == nil {
		p.Metadata = map[string]any{}
	}
	if !e.succeeded(j, out) {
		p.Status = webhook.CloudFailed
		if res.StatusCode == 0 && p.Response.Body == "" {
			// The Cloud payload has no reason field: a failure without a
			// reply carries its reason as the body.
			p.Response.Body = reason
		}
	}
	return marshalJSON(p)
}

// deliverAll delivers the job's result to every webhook concurrently, each
// with the retry schedule, and tracks the quorum. It returns when every
// delivery has finished.
func (e *Engine) deliverAll(ctx context.Context, j *job, hooks []ezclient.Webhook, quorum int, out outcome, reason string) {
	if len(hooks) == 0 {
		return
	}
	body, err := e.payloadFor(j, out, reason)
	if err != nil {
		e.event(j, Event{Type: EventWebhookFailed, Detail: "encoding the payload: " + err.Error()})
		return
	}
	if quorum < 1 {
		quorum = 1
	}
	voting := 0
	for _, h := range hooks {
		if h.Votes() {
			voting++
		}
	}
	jobRegion := e.defaultRegion()
	if out.res != nil && out.res.Region != "" {
		jobRegion = out.res.Region
	}
	var (
		mu        sync.Mutex
		delivered int
		reached   bool
		wg        sync.WaitGroup
	)
	for _, h := range hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !e.deliver(ctx, j, h, body, jobRegion) || !h.Votes() {
				return
			}
			mu.Lock()
			delivered++
			count := delivered
			now := delivered >= quorum && !reached
			if now {
				reached = true
			}
			mu.Unlock()
			if now {
				e.mu.Lock()
				j.quorum = true
				e.mu.Unlock()
				e.event(j, Event{Type: EventQuorumReached, Detail: fmt.Sprintf("%d of %d voting webhooks delivered (quorum %d)", count, voting, quorum)})
			}
		}()
	}
	wg.Wait()
	if !reached && voting > 0 && ctx.Err() == nil {
		e.event(j, Event{Type: EventQuorumFailed, Detail: fmt.Sprintf("%d of %d voting webhooks delivered, quorum %d", delivered, voting, quorum)})
	}
}

// deliver delivers body to one webhook with retries; it reports success.
// A webhook with regions is delivered from the first of them that is up,
// moving to the next one on each retry; others from the job's region.
func (e *Engine) deliver(ctx context.Context, j *job, h ezclient.Webhook, body []byte, jobRegion string) bool {
	delays := e.cfg.webhookRetries
	attempts := len(delays) + 1
	for n := 1; n <= attempts; n++ {
		region := jobRegion
		code, reason, signed := 0, "", false
		if len(h.Regions) > 0 {
			region = ""
			for i := range h.Regions {
				r := string(h.Regions[(n-1+i)%len(h.Regions)])
				if st, ok := e.regionState(r); ok && !st.Down {
					region = r
					break
				}
			}
		}
		if region == "" {
			reason = "every region of the webhook is down"
		} else {
			code, reason, signed = e.post(ctx, j, h.URL, region, n, body)
			if code >= 200 && code < 300 {
				e.event(j, Event{Type: EventWebhookDelivered, URL: h.URL, Region: region, Attempt: n, StatusCode: code, Signed: signed})
				return true
			}
		}
		if ctx.Err() != nil {
			return false
		}
		if n == attempts {
			e.event(j, Event{Type: EventWebhookFailed, URL: h.URL, Region: region, Attempt: n, StatusCode: code, Detail: reason, Signed: signed})
			return false
		}
		d := delays[n-1]
		e.event(j, Event{Type: EventWebhookRetried, URL: h.URL, Region: region, Attempt: n, StatusCode: code, Delay: d, Detail: reason, Signed: signed})
		if e.cfg.clock.Sleep(ctx, d) != nil {
			return false
		}
	}
	return false
}

// post makes one delivery attempt, signed when the job's Cloud customer has
// a webhook secret (signed reports it).
func (e *Engine) post(ctx context.Context, j *job, target, region string, attempt int, body []byte) (code int, reason string, signed bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, "bad webhook URL: " + err.Error(), false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("X-EZThrottle-Job-ID", j.id)
	req.Header.Set("X-EZThrottle-Region", region)
	if j.dialect == ezclient.DialectCloud {
		if s, ok := e.secretFor(j.customer); ok {
			req.Header.Set(webhook.SignatureHeader, webhook.Sign(s.primary, e.now(), body))
			signed = true
		}
	}
	req, span := e.tracing.startClient(req, SpanWebhook, j, region, attempt)
	resp, err := e.hc.Do(req)
	if err != nil {
		endClient(span, 0, err)
		return 0, err.Error(), signed
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	_ = resp.Body.Close()
	endClient(span, resp.StatusCode, nil)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Sprintf("webhook answered %d", resp.StatusCode), signed
	}
	return resp.StatusCode, "", signed
}

// marshalJSON encodes v without HTML escaping.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
