package ezlocal

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests: every job event was formatted (Event.String) for the
// debug log even when nothing logs debug records (about 9 % of the CPU of
// the queue benchmark). The text is now built only when the logger handles
// debug records, and stays redacted when it is.

// fxEvent has a URL with credentials and every field String renders.
func fxEvent() Event {
	return Event{Type: EventRetried, Region: "iad", FromRegion: "lax", Attempt: 2, StatusCode: 503,
		URL: "https://usr:pw_SECRETX@api.example.com/x?token=tk_SECRETX&a=1", JobID: "job_1", Delay: time.Second,
		Detail: "retry_codes [503]", Signed: true}
}

// countingHandler counts the records it receives and Enabled calls.
type countingHandler struct {
	level   slog.Level
	records int
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *countingHandler) Handle(context.Context, slog.Record) error    { h.records++; return nil }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *countingHandler) WithGroup(string) slog.Handler                { return h }

func TestEventNotFormattedWhenDebugLoggingIsOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"default (no logger)", nil},
		{"discard handler", []Option{WithLogger(slog.New(slog.DiscardHandler))}},
		{"logger at info", []Option{WithLogger(slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo})))}},
		{"custom handler at warn", []Option{WithLogger(slog.New(&countingHandler{level: slog.LevelWarn}))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(tc.opts...)
			require.NoError(t, err)
			defer e.Close()
			j := &job{id: "job_1"}
			ev := fxEvent()
			allocs := testing.AllocsPerRun(100, func() { e.observe(j, ev) })
			assert.Zero(t, allocs, "an event must cost no formatting when debug logging is off")
		})
	}
}

func TestEventLoggedRedactedWhenDebugLoggingIsOn(t *testing.T) {
	var buf bytes.Buffer
	e, err := New(WithLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	require.NoError(t, err)
	defer e.Close()
	e.observe(&job{id: "job_1"}, fxEvent())
	out := buf.String()
	assert.Contains(t, out, "ezlocal: job event")
	assert.Contains(t, out, "job_id=job_1")
	assert.Contains(t, out, "retried from=lax region=iad attempt=2 status=503")
	assert.Contains(t, out, "api.example.com/x")
	assert.NotContains(t, out, "SECRETX", "the event's URL is redacted")
	assert.Equal(t, 1, strings.Count(out, "\n"))

	// A handler enabled for debug gets the record exactly once.
	h := &countingHandler{level: slog.LevelDebug}
	e2, err := New(WithLogger(slog.New(h)))
	require.NoError(t, err)
	defer e2.Close()
	e2.observe(&job{id: "job_1"}, fxEvent())
	assert.Equal(t, 1, h.records)
}

// BenchmarkObserveEventLoggingOff is the cost of one event with the default
// (silent) logger.
func BenchmarkObserveEventLoggingOff(b *testing.B) {
	e, err := New()
	require.NoError(b, err)
	defer e.Close()
	j := &job{id: "job_1"}
	ev := fxEvent()
	b.ReportAllocs()
	for b.Loop() {
		e.observe(j, ev)
	}
}
