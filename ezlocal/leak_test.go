package ezlocal

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestJobEventLogsRedactURLs (issue 14, item 5): the engine's debug log of
// job events, and Event.String, show the destination, fallback and webhook
// URLs without user info or secret query values (raw or percent-encoded).
func TestJobEventLogsRedactURLs(t *testing.T) {
	api := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	hook := newReceiver(t, nil)
	logs := &lockedBuffer{}
	e, _ := startEngine(t, WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	host := strings.TrimPrefix(api.URL, "http://")
	info := submitWait(t, e, &ezclient.Job{
		URL:      "http://usr_SECRETX:pw_SECRETX@" + host + "/x?api_key=k_SECRETX&token=tk%2FSECRETX%2BEnc%3D%3D",
		Webhooks: []ezclient.Webhook{{URL: hook.URL + "/h?token=hk_SECRETX"}},
	})
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	assert.Contains(t, logs.String(), "ezlocal: job event")
	assert.NotContains(t, logs.String(), "SECRETX")
	for _, ev := range info.Events {
		assert.NotContains(t, ev.String(), "SECRETX")
	}
	// A transport error in the detail quotes the URL.
	ev := Event{Type: EventAttempt, Detail: `Post "http://usr_SECRETX:***@h/x?api_key=k_SECRETX": connection refused`}
	assert.NotContains(t, ev.String(), "SECRETX")
}
