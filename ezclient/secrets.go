package ezclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// MinWebhookSecretLength is the shortest webhook secret the engine accepts,
// in characters. Shorter secrets are rejected before anything is sent.
const MinWebhookSecretLength = 16

// webhookSecretsPath is the engine's webhook-secret resource (protocol §1.4).
const webhookSecretsPath = "/api/v1/webhook-secrets"

// WebhookSecretInfo is the account's webhook-secret configuration as the
// engine shows it: masked, never the secrets themselves.
type WebhookSecretInfo struct {
	// CustomerID is the account the secrets belong to.
	CustomerID string
	// Primary is the masked primary secret, e.g. "abcd****efgh".
	Primary string
	// Secondary is the masked secondary secret; "" when there is none.
	Secondary string
	// HasSecondary reports whether a secondary secret is set.
	HasSecondary bool
}

// CreateWebhookSecret sets the account's webhook signing secret on
// EZThrottle Cloud, replacing any existing one. secondary is optional (""
// for none); it is the secret still accepted while receivers move to the
// primary. Both must be at least MinWebhookSecretLength characters of valid
// UTF-8, which is checked before sending (*ValidationError naming the field;
// the secret itself never appears in an error or log line). The engine's
// answer is checked: anything but a 2xx reply whose status is not an error
// is returned as a typed error.
//
// On the self-hosted dialect, which has no such API, it returns a
// *ValidationError satisfying ErrUnsupported without any network call.
func (c *Client) CreateWebhookSecret(ctx context.Context, primary, secondary string) error {
	if err := c.checkSecretsAPI("CreateWebhookSecret"); err != nil {
		return err
	}
	if err := validateSecret("primary_secret", primary); err != nil {
		return err
	}
	if secondary != "" {
		if err := validateSecret("secondary_secret", secondary); err != nil {
			return err
		}
	}
	return c.putSecrets(ctx, primary, secondary)
}

// RotateWebhookSecret makes newSecret the primary webhook secret and keeps
// oldSecret as the secondary, so that receivers verifying with either keep
// working during the rotation (see the webhook package's verifier, which
// tries the primary then the secondary). The engine only ever shows masked
// secrets, so the old secret must come from the caller: reading it back is
// impossible, and the official SDKs' rotate silently dropped it.
//
// Both are validated like CreateWebhookSecret's, and must differ.
func (c *Client) RotateWebhookSecret(ctx context.Context, newSecret, oldSecret string) error {
	if err := c.checkSecretsAPI("RotateWebhookSecret"); err != nil {
		return err
	}
	if err := validateSecret("primary_secret", newSecret); err != nil {
		return err
	}
	if oldSecret == "" {
		return invalid("secondary_secret", "rotation needs the current secret, to keep it as the secondary")
	}
	if err := validateSecret("secondary_secret", oldSecret); err != nil {
		return err
	}
	if newSecret == oldSecret {
		return invalid("primary_secret", "the new secret equals the old one")
	}
	return c.putSecrets(ctx, newSecret, oldSecret)
}

// GetWebhookSecret returns the account's webhook-secret configuration,
// masked. When none is set the error satisfies errors.Is(err, ErrNotFound).
func (c *Client) GetWebhookSecret(ctx context.Context) (*WebhookSecretInfo, error) {
	if err := c.checkSecretsAPI("GetWebhookSecret"); err != nil {
		return nil, err
	}
	r, err := c.call(ctx, http.MethodGet, webhookSecretsPath, nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, c.replyError(r)
	}
	info, err := decodeSecretInfo(r.body)
	return info, c.redact(err)
}

// DeleteWebhookSecret removes the account's webhook secrets; webhooks are
// then delivered unsigned. The engine's answer is checked like
// CreateWebhookSecret's; deleting when none is set gives the engine's
// answer (ErrNotFound for a 404).
func (c *Client) DeleteWebhookSecret(ctx context.Context) error {
	if err := c.checkSecretsAPI("DeleteWebhookSecret"); err != nil {
		return err
	}
	r, err := c.call(ctx, http.MethodDelete, webhookSecretsPath, nil)
	if err != nil {
		return err
	}
	return c.checkSecretsReply(r)
}

func (c *Client) checkSecretsAPI(op string) error {
	if c.dialect != DialectCloud {
		return unsupported(op, "webhook secrets are an EZThrottle Cloud feature")
	}
	return nil
}

// validateSecret checks a secret without ever quoting it.
func validateSecret(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "not valid UTF-8 (it travels as a JSON string and would be altered)")
	}
	if n := utf8.RuneCountInString(s); n < MinWebhookSecretLength {
		return invalid(field, "must be at least %d characters (got %d)", MinWebhookSecretLength, n)
	}
	if strings.TrimSpace(s) != s {
		return invalid(field, "has leading or trailing white space")
	}
	return nil
}

func (c *Client) putSecrets(ctx context.Context, primary, secondary string) error {
	body, err := marshalNoEscape(struct {
		Primary   string `json:"primary_secret"`
		Secondary string `json:"secondary_secret,omitempty"`
	}{primary, secondary})
	if err != nil {
		return err
	}
	r, err := c.call(ctx, http.MethodPost, webhookSecretsPath, body, primary, secondary)
	if err != nil {
		return err
	}
	err = c.checkSecretsReply(r)
	redactError(err, []string{primary, secondary})
	return err
}

// checkSecretsReply checks the forwarded status of a create or delete: a
// 2xx whose body does not report an error ("status": "error", "failed",
// "failure", "denied" or "not_found"). The official SDKs ignore it.
func (c *Client) checkSecretsReply(r reply) error {
	if r.status < 200 || r.status > 299 {
		return c.replyError(r)
	}
	st, msg := decodeSecretsStatus(r.body)
	switch strings.ToLower(st) {
	case "error", "failed", "failure", "denied", "not_found":
		return &EngineError{StatusCode: r.status, Message: c.scrub(firstNonEmpty(msg, "status "+st)), Body: c.scrubBytes(truncate(r.body))}
	}
	return nil
}

// decodeSecretsStatus reads {"status", "message"} (or "error") from a
// create or delete reply; anything else gives empty strings.
func decodeSecretsStatus(body []byte) (status, message string) {
	var raw struct {
		Status  json.RawMessage `json:"status"`
		Message json.RawMessage `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &raw) != nil {
		return "", ""
	}
	return scalarString(raw.Status), joinMsg(looseString(raw.Error), looseString(raw.Message))
}

// decodeSecretInfo parses the masked read reply (protocol §1.4).
func decodeSecretInfo(body []byte) (*WebhookSecretInfo, error) {
	var raw struct {
		CustomerID   json.RawMessage `json:"customer_id"`
		Primary      json.RawMessage `json:"primary_secret"`
		Secondary    json.RawMessage `json:"secondary_secret"`
		HasSecondary json.RawMessage `json:"has_secondary"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &EngineError{StatusCode: http.StatusOK, Message: "malformed webhook-secret reply: " + err.Error(), Body: truncate(body)}
	}
	info := &WebhookSecretInfo{
		CustomerID:   scalarString(raw.CustomerID),
		Primary:      scalarString(raw.Primary),
		Secondary:    scalarString(raw.Secondary),
		HasSecondary: looseBool(raw.HasSecondary),
	}
	if info.Secondary != "" {
		info.HasSecondary = true
	}
	if info.Primary == "" {
		return nil, &EngineError{StatusCode: http.StatusOK, Message: "webhook-secret reply without primary_secret", Body: truncate(body)}
	}
	return info, nil
}

// String describes the configuration; the secrets are already masked.
func (i WebhookSecretInfo) String() string {
	return fmt.Sprintf("webhook secrets{customer: %s, primary: %s, secondary: %s}", i.CustomerID, i.Primary, i.Secondary)
}
