package ezclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	fxSecretNew = "whsec_NEW-0123456789abcdef"
	fxSecretOld = "whsec_OLD-0123456789abcdef"
)

func fxSecretsBody(t *testing.T, r fxRequest) map[string]any {
	t.Helper()
	assert.Equal(t, fxEngineURL+"/api/v1/webhook-secrets", r.Env.TargetURL)
	assert.Equal(t, "customer", r.Env.Scope)
	if r.Env.Body == "" {
		return nil
	}
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.Env.Body), &m))
	return m
}

func TestCreateWebhookSecret(t *testing.T) {
	srv := fxNewServer(t, fxForward(200, `{"status":"ok","message":"Webhook secret saved"}`))
	c, _ := fxCloud(t, srv)
	require.NoError(t, c.CreateWebhookSecret(context.Background(), fxSecretNew, ""))
	require.NoError(t, c.CreateWebhookSecret(context.Background(), fxSecretNew, fxSecretOld))
	reqs := srv.requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "POST", reqs[0].Env.Method)
	assert.Equal(t, map[string]any{"primary_secret": fxSecretNew}, fxSecretsBody(t, reqs[0]), "no secondary key when there is none")
	assert.Equal(t, map[string]any{"primary_secret": fxSecretNew, "secondary_secret": fxSecretOld}, fxSecretsBody(t, reqs[1]))
}

func TestRotateWebhookSecretKeepsTheOldOne(t *testing.T) {
	srv := fxNewServer(t, fxForward(201, `{"status":"created","message":"ok"}`))
	c, _ := fxCloud(t, srv)
	require.NoError(t, c.RotateWebhookSecret(context.Background(), fxSecretNew, fxSecretOld))
	reqs := srv.requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "POST", reqs[0].Env.Method)
	assert.Equal(t, map[string]any{"primary_secret": fxSecretNew, "secondary_secret": fxSecretOld}, fxSecretsBody(t, reqs[0]))
}

func TestSecretValidationSendsNothing(t *testing.T) {
	srv := fxNewServer(t, fxForward(200, `{"status":"ok"}`))
	c, _ := fxCloud(t, srv)
	ctx := context.Background()
	short := "only15characters"[:15]
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"short primary", func() error { return c.CreateWebhookSecret(ctx, short, "") }, "primary_secret"},
		{"empty primary", func() error { return c.CreateWebhookSecret(ctx, "", "") }, "primary_secret"},
		{"short secondary", func() error { return c.CreateWebhookSecret(ctx, fxSecretNew, short) }, "secondary_secret"},
		{"multi-byte characters count as one", func() error { return c.CreateWebhookSecret(ctx, strings.Repeat("é", 15), "") }, "primary_secret"},
		{"invalid UTF-8", func() error { return c.CreateWebhookSecret(ctx, strings.Repeat("\xff", 20), "") }, "primary_secret"},
		{"surrounding space", func() error { return c.CreateWebhookSecret(ctx, " "+fxSecretNew, "") }, "primary_secret"},
		{"rotate short new", func() error { return c.RotateWebhookSecret(ctx, short, fxSecretOld) }, "primary_secret"},
		{"rotate without old", func() error { return c.RotateWebhookSecret(ctx, fxSecretNew, "") }, "secondary_secret"},
		{"rotate short old", func() error { return c.RotateWebhookSecret(ctx, fxSecretNew, short) }, "secondary_secret"},
		{"rotate to the same", func() error { return c.RotateWebhookSecret(ctx, fxSecretNew, fxSecretNew) }, "primary_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.ErrorIs(t, err, ErrValidation)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tt.field, ve.Field)
			assert.NotContains(t, err.Error(), short)
			assert.NotContains(t, err.Error(), fxSecretNew)
			assert.NotContains(t, err.Error(), fxSecretOld)
		})
	}
	assert.NoError(t, c.CreateWebhookSecret(ctx, strings.Repeat("é", 16), ""), "16 characters is enough")
	assert.Len(t, srv.requests(), 1, "only the valid call was sent")
}

func TestGetWebhookSecret(t *testing.T) {
	srv := fxNewServer(t,
		fxForward(200, `{"customer_id":"cus_1","primary_secret":"whse****cdef","secondary_secret":null,"has_secondary":false}`),
		fxForward(200, `{"customer_id":"cus_1","primary_secret":"whse****cdef","secondary_secret":"whse****abcd","has_secondary":true}`),
		fxForward(404, `{"error":"No webhook secret configured"}`),
	)
	c, _ := fxCloud(t, srv)
	info, err := c.GetWebhookSecret(context.Background())
	require.NoError(t, err)
	assert.Equal(t, &WebhookSecretInfo{CustomerID: "cus_1", Primary: "whse****cdef"}, info)
	info, err = c.GetWebhookSecret(context.Background())
	require.NoError(t, err)
	assert.Equal(t, &WebhookSecretInfo{CustomerID: "cus_1", Primary: "whse****cdef", Secondary: "whse****abcd", HasSecondary: true}, info)
	assert.Contains(t, info.String(), "whse****abcd")
	_, err = c.GetWebhookSecret(context.Background())
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorContains(t, err, "No webhook secret configured")
	reqs := srv.requests()
	require.Len(t, reqs, 3)
	assert.Equal(t, "GET", reqs[0].Env.Method)
	assert.Nil(t, fxSecretsBody(t, reqs[0]), `GET carries body ""`)
}

func TestDeleteWebhookSecret(t *testing.T) {
	srv := fxNewServer(t, fxForward(200, `{"status":"ok","message":"Webhook secret deleted"}`), fxForward(404, `{"error":"not found"}`))
	c, _ := fxCloud(t, srv)
	require.NoError(t, c.DeleteWebhookSecret(context.Background()))
	assert.ErrorIs(t, c.DeleteWebhookSecret(context.Background()), ErrNotFound, "the forwarded status is checked")
	reqs := srv.requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "DELETE", reqs[0].Env.Method)
	assert.Nil(t, fxSecretsBody(t, reqs[0]))
}

// TestSecretsForwardedStatusChecked: every operation checks the engine's
// answer behind the proxy, not just the proxy's 200.
func TestSecretsForwardedStatusChecked(t *testing.T) {
	ops := map[string]func(c *Client) error{
		"create": func(c *Client) error { return c.CreateWebhookSecret(context.Background(), fxSecretNew, fxSecretOld) },
		"rotate": func(c *Client) error { return c.RotateWebhookSecret(context.Background(), fxSecretNew, fxSecretOld) },
		"delete": func(c *Client) error { return c.DeleteWebhookSecret(context.Background()) },
		"read": func(c *Client) error {
			_, err := c.GetWebhookSecret(context.Background())
			return err
		},
	}
	replies := []struct {
		name     string
		reply    fxReply
		sentinel error
		attempts int
	}{
		{"forwarded 400", fxForward(400, `{"error":"secret too short"}`), ErrValidation, 1},
		{"forwarded 500", fxForward(500, `{"error":"db"}`), ErrEngine, 4},
		{"forwarded 401", fxForward(401, `{"error":"who"}`), ErrUnauthorized, 1},
		{"200 with status error", fxForward(200, `{"status":"error","message":"could not save"}`), ErrEngine, 1},
		{"proxy 429", fxReply{status: 429, body: `{"status":"denied","retry_after":10}`}, ErrRateLimited, 1},
		{"proxy 403", fxReply{status: 403, body: `{"error":"Forbidden"}`}, ErrDenied, 1},
	}
	for opName, op := range ops {
		for _, rep := range replies {
			if opName == "read" && rep.name == "200 with status error" {
				continue // a read's body is the masked secrets, not a status
			}
			t.Run(opName+"/"+rep.name, func(t *testing.T) {
				srv := fxNewServer(t, rep.reply)
				c, _ := fxCloud(t, srv)
				err := op(c)
				require.Error(t, err)
				assert.ErrorIs(t, err, rep.sentinel)
				assert.Len(t, srv.requests(), rep.attempts)
			})
		}
	}
	t.Run("read malformed", func(t *testing.T) {
		srv := fxNewServer(t, fxForward(200, `{"customer_id":"c"}`))
		c, _ := fxCloud(t, srv)
		_, err := c.GetWebhookSecret(context.Background())
		assert.ErrorIs(t, err, ErrEngine)
	})
}

func TestSecretsNeverLeak(t *testing.T) {
	// An engine that echoes the request body in its errors.
	echo := func(n int, r fxRequest) fxReply {
		if n%2 == 0 {
			return fxForward(500, "bad input: "+strings.Repeat(".", 490)+r.Env.Body)
		}
		return fxForward(400, fmt.Sprintf(`{"error":"bad input","message":%q}`, r.Env.Body))
	}
	for _, attempts := range []int{1, 2} {
		srv := fxNewServer(t)
		srv.handle = echo
		logger, logs := fxLogs()
		c, _ := fxCloud(t, srv, WithLogger(logger), WithRetry(attempts, 0, 0))
		err := c.RotateWebhookSecret(context.Background(), fxSecretNew, fxSecretOld)
		require.Error(t, err)
		for what, s := range map[string]string{"error": err.Error(), "%+v": fmt.Sprintf("%+v", err), "logs": logs.String()} {
			assert.NotContains(t, s, fxSecretNew, what)
			assert.NotContains(t, s, fxSecretOld, what)
			fxNoKey(t, what, s)
		}
		var ee *EngineError
		require.True(t, errors.As(err, &ee))
		assert.NotContains(t, string(ee.Body), fxSecretNew)
		assert.NotContains(t, string(ee.Body), fxSecretOld)
		assert.Contains(t, string(ee.Body), "****", "the secrets were replaced, not dropped")
	}
}

func TestSecretsUnsupportedOnSelfHosted(t *testing.T) {
	srv := fxNewServer(t)
	c, _ := fxSelfHosted(t, srv)
	ctx := context.Background()
	assert.ErrorIs(t, c.CreateWebhookSecret(ctx, fxSecretNew, ""), ErrUnsupported)
	assert.ErrorIs(t, c.RotateWebhookSecret(ctx, fxSecretNew, fxSecretOld), ErrUnsupported)
	assert.ErrorIs(t, c.DeleteWebhookSecret(ctx), ErrUnsupported)
	_, err := c.GetWebhookSecret(ctx)
	assert.ErrorIs(t, err, ErrUnsupported)
	assert.Empty(t, srv.requests())
}
