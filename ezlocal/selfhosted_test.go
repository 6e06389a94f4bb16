package ezlocal

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/internal/testnet"
)

func postJobs(t *testing.T, e *Engine, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.URL()+"/jobs", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	return doJSON(t, req)
}

func selfJob(fields map[string]any) string {
	b, _ := json.Marshal(fields)
	return string(b)
}

func TestSelfHostedSubmit(t *testing.T) {
	e, _ := startEngine(t, WithWebhookSecrets(DefaultCustomerID, "whsec_primary_0123456789", ""))
	dest := okServer(t)
	hook := newReceiver(t, nil)
	valid := func() map[string]any {
		return map[string]any{"user_id": "u1", "idempotent_key": "k1", "url": dest.URL, "method": "POST",
			"webhook_url": hook.URL, "headers": map[string]string{"X-A": "b"}, "body": "hello"}
	}
	for _, field := range []string{"user_id", "idempotent_key", "url", "method", "webhook_url"} {
		t.Run("missing "+field, func(t *testing.T) {
			f := valid()
			delete(f, field)
			code, m := postJobs(t, e, selfJob(f))
			assert.Equal(t, http.StatusBadRequest, code)
			assert.Equal(t, map[string]any{"error": "missing required field: " + field}, m)
		})
	}
	for _, tc := range []struct {
		name  string
		patch map[string]any
		want  string
	}{
		{"bad url", map[string]any{"url": "ftp://x"}, `"url"`},
		{"bad webhook", map[string]any{"webhook_url": "not a url"}, `"webhook_url"`},
		{"bad method", map[string]any{"method": "FETCH"}, `"method"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := valid()
			for k, v := range tc.patch {
				f[k] = v
			}
			code, m := postJobs(t, e, selfJob(f))
			assert.Equal(t, http.StatusBadRequest, code)
			assert.Contains(t, m["error"], tc.want)
		})
	}
	code, m := postJobs(t, e, "{")
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, m["error"], "invalid JSON")
	assert.Empty(t, e.Jobs())

	code, m = postJobs(t, e, selfJob(valid()))
	require.Equal(t, http.StatusCreated, code, "%v", m)
	assert.Equal(t, "queued", m["status"])
	id := m["job_id"].(string)
	assert.Regexp(t, regexp.MustCompile(`^[0-9a-f]{32}$`), id)
	assert.Len(t, m, 2)

	code, m = postJobs(t, e, selfJob(valid()))
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, map[string]any{"job_id": id, "status": "queued", "duplicate": true}, m)

	other := valid()
	other["user_id"] = "u2"
	code, m = postJobs(t, e, selfJob(other))
	assert.Equal(t, http.StatusCreated, code, "idempotency is per user_id")
	assert.NotEqual(t, id, m["job_id"])

	info := waitJob(t, e, id)
	assert.Equal(t, ezclient.StatusCompleted, info.Status)
	assert.Equal(t, ezclient.DialectSelfHosted, info.Dialect)
	require.NoError(t, e.WaitIdle(context.Background()))

	// The self-hosted payload, unsigned even though a Cloud secret exists.
	var mine *delivery
	for _, d := range hook.deliveries() {
		if strings.Contains(string(d.Body), id) {
			mine = &d
		}
	}
	require.NotNil(t, mine)
	assert.Empty(t, mine.Header.Get(webhook.SignatureHeader))
	var p map[string]any
	require.NoError(t, json.Unmarshal(mine.Body, &p))
	assert.Equal(t, map[string]any{"job_id": id, "status": "completed", "response_status": float64(200), "body": `{"ok":true}`}, p)
	r, err := webhook.Decode(mine.Body)
	require.NoError(t, err)
	assert.Equal(t, id, r.JobID)

	// GET /jobs/{id}
	req, _ := http.NewRequest(http.MethodGet, e.URL()+"/jobs/"+id, nil)
	code, m = doJSON(t, req)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, id, m["job_id"])
	assert.Equal(t, "completed", m["status"])
	assert.Equal(t, dest.URL, m["url"])
	assert.Equal(t, "POST", m["method"])
	_, err = time.Parse(time.RFC3339Nano, m["created_at"].(string))
	assert.NoError(t, err)
	req, _ = http.NewRequest(http.MethodGet, e.URL()+"/jobs/nope", nil)
	code, m = doJSON(t, req)
	assert.Equal(t, http.StatusNotFound, code)
	assert.Equal(t, map[string]any{"error": "job not found"}, m)
}

func TestSelfHostedFailures(t *testing.T) {
	e, _ := startEngine(t, WithBodyLimits(0, 256, 0))
	hook := newReceiver(t, nil)
	code, m := postJobs(t, e, selfJob(map[string]any{"user_id": "u", "idempotent_key": "k", "url": "http://x.test",
		"method": "GET", "webhook_url": hook.URL, "body": strings.Repeat("x", 300)}))
	assert.Equal(t, http.StatusRequestEntityTooLarge, code)
	assert.Equal(t, map[string]any{"error": "request body too large", "limit_bytes": float64(256)}, m)

	// A destination answering 500 still "completes" on a self-hosted engine;
	// only a missing reply fails the job.
	bad, _ := scripted(t, 500)
	code, m = postJobs(t, e, selfJob(map[string]any{"user_id": "u", "idempotent_key": "k500", "url": bad, "method": "GET", "webhook_url": hook.URL}))
	require.Equal(t, http.StatusCreated, code)
	info := waitJob(t, e, m["job_id"].(string))
	assert.Equal(t, ezclient.StatusCompleted, info.Status)

	deadURL := "http://" + testnet.RefusedAddr(t)
	code, m = postJobs(t, e, selfJob(map[string]any{"user_id": "u", "idempotent_key": "kdead", "url": deadURL, "method": "GET", "webhook_url": hook.URL}))
	require.Equal(t, http.StatusCreated, code)
	info = waitJob(t, e, m["job_id"].(string))
	assert.Equal(t, ezclient.StatusFailed, info.Status)
	got := hook.deliveries()
	require.Len(t, got, 2)
	var p map[string]any
	require.NoError(t, json.Unmarshal(got[1].Body, &p))
	assert.Equal(t, "failed", p["status"])
	assert.NotEmpty(t, p["reason"])
	assert.Nil(t, p["idempotent_key"])
}

func TestSelfHostedAdmissionLimit(t *testing.T) {
	e, _ := startEngine(t, WithAdmissionLimit(1, 30*time.Second))
	slow := blocking(t)
	hook := newReceiver(t, nil)
	job := func(key string) string {
		return selfJob(map[string]any{"user_id": "u", "idempotent_key": key, "url": slow, "method": "GET", "webhook_url": hook.URL})
	}
	code, _ := postJobs(t, e, job("a"))
	require.Equal(t, http.StatusCreated, code)
	req, _ := http.NewRequest(http.MethodPost, e.URL()+"/jobs", strings.NewReader(job("b")))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "30", resp.Header.Get("Retry-After"))
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	assert.Contains(t, m["error"], "admission rejected")
	assert.Equal(t, "user_queue_full", m["limit_reason"])
	code, _ = postJobs(t, e, job("a"))
	assert.Equal(t, http.StatusOK, code, "a duplicate is always answered")
	// The blocked job ends when the engine closes.
	require.NoError(t, e.Close())
	jobs := e.Jobs()
	require.Len(t, jobs, 1)
	assert.Equal(t, ezclient.StatusFailed, jobs[0].Status)
	assert.Equal(t, "engine closed", jobs[0].Reason)
}

// sseEvent is one parsed Server-Sent Event, or a comment.
type sseEvent struct {
	event, data, comment string
}

// readSSE parses events from the stream until stop returns true.
func readSSE(t *testing.T, sc *bufio.Scanner, stop func(sseEvent) bool) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur != (sseEvent{}) {
				out = append(out, cur)
				if stop(cur) {
					return out
				}
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, ":"):
			cur.comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "event: "):
			cur.event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[len("data: "):]
		}
	}
	t.Fatalf("stream ended before the expected event: %v (err %v)", out, sc.Err())
	return nil
}

func TestSelfHostedStream(t *testing.T) {
	e, _ := startEngine(t, WithKeepAlive(time.Millisecond))
	release := make(chan struct{})
	dest := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte("done"))
	})
	hook := newReceiver(t, nil)
	code, m := postJobs(t, e, selfJob(map[string]any{"user_id": "u", "idempotent_key": "s1", "url": dest.URL, "method": "GET", "webhook_url": hook.URL}))
	require.Equal(t, http.StatusCreated, code)
	id := m["job_id"].(string)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL()+"/jobs/"+id+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	sc := bufio.NewScanner(resp.Body)
	// The stream is live (its catch-up event) before the job can finish.
	first := readSSE(t, sc, func(ev sseEvent) bool { return ev.event != "" })
	assert.Contains(t, []string{"queued", "dispatching"}, first[0].event, "the first thing on the stream is the catch-up event")
	close(release)
	evs := append(first, readSSE(t, sc, func(ev sseEvent) bool { return ev.event == "completed" || ev.event == "failed" })...)
	var names []string
	for _, ev := range evs {
		if ev.event != "" {
			names = append(names, ev.event)
		}
	}
	assert.Subset(t, []string{"queued", "position", "dispatching", "completed"}, names)
	assert.Contains(t, names, "dispatching")
	assert.Equal(t, "completed", names[len(names)-1])
	var done map[string]any
	require.NoError(t, json.Unmarshal([]byte(evs[len(evs)-1].data), &done))
	assert.Equal(t, map[string]any{"job_id": id, "response_status": float64(200), "body": "done"}, done)

	// Connecting after the job finished, as on the real engines: a
	// catch-up "queued" first, then keepalives and no terminal event.
	waitJob(t, e, id)
	req2, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL()+"/jobs/"+id+"/stream", nil)
	resp2, err := http.DefaultClient.Do(req2)
	require.NoError(t, err)
	defer resp2.Body.Close()
	sc2 := bufio.NewScanner(resp2.Body)
	late := readSSE(t, sc2, func(ev sseEvent) bool { return ev.comment == "keepalive" })
	require.NotEmpty(t, late)
	assert.Equal(t, sseEvent{event: "queued", data: `{"job_id":"` + id + `"}`}, late[0], "the catch-up event comes first")
	late = append(late, readSSE(t, sc2, func(ev sseEvent) bool { return ev.comment == "keepalive" })...)
	for _, ev := range late[1:] {
		assert.Empty(t, ev.event, "no other event after the job finished: the stream stays open with keepalives")
	}
	cancel()

	req3, _ := http.NewRequest(http.MethodGet, e.URL()+"/jobs/nope/stream", nil)
	code, m = doJSON(t, req3)
	assert.Equal(t, http.StatusNotFound, code)
	assert.Equal(t, "job not found", m["error"])
}

func TestHealth(t *testing.T) {
	e, _ := startEngine(t)
	req, _ := http.NewRequest(http.MethodGet, e.URL()+"/health", nil)
	code, m := doJSON(t, req)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", m["status"])
}

func TestSelfHostedWithClient(t *testing.T) {
	e, _ := startEngine(t)
	dest := okServer(t)
	hook := newReceiver(t, nil)
	c, err := ezclient.New(ezclient.WithSelfHosted(e.URL(), "user-7"), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	job := &ezclient.Job{URL: dest.URL + "/x", Method: "POST", Body: "b", Webhooks: []ezclient.Webhook{{URL: hook.URL}}}
	sub, err := c.Submit(context.Background(), job)
	require.NoError(t, err)
	assert.False(t, sub.Duplicate)
	assert.Equal(t, ezclient.StatusQueued, sub.Status)
	again, err := c.Submit(context.Background(), job)
	require.NoError(t, err)
	assert.True(t, again.Duplicate)
	assert.Equal(t, sub.JobID, again.JobID)
	info := waitJob(t, e, sub.JobID)
	assert.Equal(t, "user-7", info.Customer)
	assert.Equal(t, ezclient.HashKey("user-7", "POST", dest.URL+"/x", []byte("b")), info.IdempotentKey)
	assert.Len(t, hook.deliveries(), 1)
}

// A stream subscriber whose buffer is full (a slow client of a job that
// dispatched many times) still gets the terminal event: losing it left the
// stream open with keepalives only.
func TestStreamTerminalEventNeverDropped(t *testing.T) {
	e, _ := startEngine(t)
	j := &job{id: "j1", status: ezclient.StatusCompleted, result: &Result{StatusCode: 200, Body: "ok"}, subs: map[chan sseMsg]struct{}{}}
	sub := make(chan sseMsg, 4)
	j.subs[sub] = struct{}{}
	e.mu.Lock()
	for range 6 {
		e.publishLocked(j, sseMsg{event: "dispatching", data: map[string]any{"job_id": j.id}})
	}
	e.publishLocked(j, terminalMsg(j))
	e.mu.Unlock()
	var last sseMsg
	for len(sub) > 0 {
		last = <-sub
	}
	assert.True(t, last.terminal)
	assert.Equal(t, "completed", last.event)
}

// TestWaitJobLateSubscriber: WaitJob on a job that already finished answers
// at once from a local engine that, like the real ones, sends a catch-up
// event and then keeps the stream open, here with no keepalive at all
// (issue 13 item 7).
func TestWaitJobLateSubscriber(t *testing.T) {
	e, _ := startEngine(t, WithKeepAlive(time.Hour))
	dest := okServer(t)
	hook := newReceiver(t, nil)
	c, err := ezclient.New(ezclient.WithSelfHosted(e.URL(), "u"), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	sub, err := c.Submit(context.Background(), &ezclient.Job{URL: dest.URL, Webhooks: []ezclient.Webhook{{URL: hook.URL}}})
	require.NoError(t, err)
	waitJob(t, e, sub.JobID)
	// A safety net only: the answer must not come from the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := c.WaitJob(ctx, sub.JobID)
	require.NoError(t, err)
	assert.Equal(t, ezclient.EventCompleted, ev.Type)
	assert.True(t, ev.FromStatus)
}
