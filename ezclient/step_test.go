package ezclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var updateStepGolden = flag.Bool("update-step-golden", false, "rewrite testdata/steps/*.json from the jobs the fake engine received")

// ---------------------------------------------------------------------------
// Fake Cloud proxy + engine (protocol §1.1, §1.3).

type stepCloud struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	jobs  []string          // job JSON strings received in the envelope's "body", in order
	byKey map[string]string // dedup key -> job id
	next  int
	// proxyStatus, when non-zero, makes the proxy answer with this status
	// and proxyBody instead of forwarding.
	proxyStatus int
	proxyBody   string
}

func newStepCloud(t *testing.T) *stepCloud {
	t.Helper()
	f := &stepCloud{t: t, byKey: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

const (
	stepAPIKey    = "sk-test-0123456789"
	stepEngineURL = "https://engine.test"
)

func (f *stepCloud) serve(w http.ResponseWriter, r *http.Request) {
	assert.Equal(f.t, "/api/v1/proxy", r.URL.Path)
	assert.Equal(f.t, http.MethodPost, r.Method)
	assert.Equal(f.t, "Bearer "+stepAPIKey, r.Header.Get("Authorization"))
	var env proxyEnvelope
	if !assert.NoError(f.t, json.NewDecoder(r.Body).Decode(&env)) {
		http.Error(w, "bad envelope", http.StatusBadRequest)
		return
	}
	assert.Equal(f.t, "customer", env.Scope)
	assert.Equal(f.t, stepEngineURL+"/api/v1/jobs", env.TargetURL)
	assert.Equal(f.t, http.MethodPost, env.Method)

	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = append(f.jobs, env.Body)
	if f.proxyStatus != 0 {
		w.WriteHeader(f.proxyStatus)
		_, _ = io.WriteString(w, f.proxyBody)
		return
	}
	var job struct {
		URL           string   `json:"url"`
		Method        string   `json:"method"`
		Body          string   `json:"body"`
		Regions       []string `json:"regions"`
		ExecutionMode string   `json:"execution_mode"`
		IdempotentKey string   `json:"idempotent_key"`
	}
	require.NoError(f.t, json.Unmarshal([]byte(env.Body), &job), "the job must be a JSON object inside a JSON string")
	key := job.IdempotentKey
	derived := key == ""
	if derived { // the engine's HASH strategy
		key = "hash:" + job.Method + " " + job.URL + " " + job.Body
	}
	status := http.StatusCreated
	id, dup := f.byKey[key]
	if dup {
		status = http.StatusOK
	} else {
		f.next++
		id = fmt.Sprintf("job_%d", f.next)
		f.byKey[key] = id
	}
	st := "queued"
	if len(job.Regions) > 1 && job.ExecutionMode != "fanout" {
		st = "racing"
	}
	inner, _ := json.Marshal(map[string]any{"job_id": id, "status": st, "idempotent_key": key, "queued_at": 1763674210055})
	_ = json.NewEncoder(w).Encode(map[string]any{
		"status":             "allowed",
		"breach_status":      map[string]any{},
		"forwarded_response": map[string]any{"status_code": status, "headers": map[string]string{}, "body": string(inner)},
	})
}

func (f *stepCloud) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.jobs...)
}

// ---------------------------------------------------------------------------
// Local targets: an in-process RoundTripper serving an http.Handler, that
// records whether each request carried SuppressForwarding, fails requests to
// hosts starting with "down" with a network error, and checks that every response body
// is closed.

type stepTarget struct {
	t  *testing.T
	mu sync.Mutex

	hits       map[string]int // "METHOD host/path" -> count
	bodies     map[string][]string
	suppressed []bool
	open       int // response bodies not closed yet
	mux        *http.ServeMux
}

func newStepTarget(t *testing.T) *stepTarget {
	lt := &stepTarget{t: t, hits: map[string]int{}, bodies: map[string][]string{}, mux: http.NewServeMux()}
	lt.mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		require.NoError(t, err)
		w.Header().Set("X-Target", r.Host)
		w.WriteHeader(code)
		fmt.Fprintf(w, "%d from %s", code, r.Host)
	})
	lt.mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only when the caller gives up
	})
	lt.mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("x"), 100))
	})
	t.Cleanup(func() {
		lt.mu.Lock()
		defer lt.mu.Unlock()
		assert.Zero(t, lt.open, "every local response body must be closed")
	})
	return lt
}

func (lt *stepTarget) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
	}
	k := req.Method + " " + req.URL.Host + req.URL.Path
	lt.mu.Lock()
	lt.hits[k]++
	lt.bodies[k] = append(lt.bodies[k], string(body))
	lt.suppressed = append(lt.suppressed, ForwardingSuppressed(req.Context()))
	lt.mu.Unlock()
	if strings.HasPrefix(req.URL.Host, "down") {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	lt.mux.ServeHTTP(rec, req)
	if err := req.Context().Err(); err != nil {
		return nil, err // like net/http: a request whose context ended has no response
	}
	resp := rec.Result()
	lt.mu.Lock()
	lt.open++
	lt.mu.Unlock()
	resp.Body = &stepCloseCounter{ReadCloser: resp.Body, lt: lt}
	return resp, nil
}

type stepCloseCounter struct {
	io.ReadCloser
	lt   *stepTarget
	once sync.Once
}

func (c *stepCloseCounter) Close() error {
	c.once.Do(func() {
		c.lt.mu.Lock()
		c.lt.open--
		c.lt.mu.Unlock()
	})
	return c.ReadCloser.Close()
}

func (lt *stepTarget) hit(method, hostPath string) int {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.hits[method+" "+hostPath]
}

func (lt *stepTarget) total() int {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	n := 0
	for _, c := range lt.hits {
		n += c
	}
	return n
}

func (lt *stepTarget) allSuppressed() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	for _, s := range lt.suppressed {
		if !s {
			return false
		}
	}
	return len(lt.suppressed) > 0
}

// newStepClient returns a Cloud client talking to fc, executing local
// requests through lt, without retries.
func newStepClient(t *testing.T, fc *stepCloud, lt *stepTarget, extra ...Option) *Client {
	t.Helper()
	opts := []Option{
		WithAPIKey(stepAPIKey), WithProxyURL(fc.srv.URL), WithEngineURL(stepEngineURL),
		WithHTTPClient(fc.srv.Client()), WithRetry(1, 0, 0),
		withSleep(func(ctx context.Context, d time.Duration) error { return ctx.Err() }),
	}
	if lt != nil {
		opts = append(opts, WithLocalHTTPClient(&http.Client{Transport: lt}))
	}
	c, err := New(append(opts, extra...)...)
	require.NoError(t, err)
	return c
}

// ---------------------------------------------------------------------------
// Golden files.

var stepUUIDRE = regexp.MustCompile(`"idempotent_key":"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"`)

// checkStepGolden compares the jobs received (exact JSON, indented for
// reading; UNIQUE keys replaced by "<unique>") with testdata/steps/name.json.
func checkStepGolden(t *testing.T, name string, jobs []string) {
	t.Helper()
	raw := "[" + strings.Join(jobs, ",") + "]"
	raw = stepUUIDRE.ReplaceAllString(raw, `"idempotent_key":"<unique>"`)
	var buf bytes.Buffer
	require.NoError(t, json.Indent(&buf, []byte(raw), "", "  "))
	buf.WriteByte('\n')
	path := filepath.Join("testdata", "steps", name+".json")
	if *updateStepGolden {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run go test -run %s -update-step-golden", t.Name())
	assert.Equal(t, string(want), buf.String(), "jobs submitted differ from %s", path)
}

func stepHook(u string) Webhook { return Webhook{URL: u, HasQuorumVote: Bool(true)} }

// ---------------------------------------------------------------------------
// The official SDKs' integration scenarios, plus on_failure and retry policy.

func TestStepPerformanceBasic(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)

	res, err := c.Step().
		URL("https://httpbin.org/status/200?test=performance_basic").
		Method("get").
		Type(StepPerformance).
		Webhook(stepHook("https://app.test/webhook")).
		IdempotentKey("performance_basic_1").
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeSubmitted, res.Outcome)
	assert.False(t, res.Local)
	assert.Equal(t, "job_1", res.JobID())
	assert.Equal(t, StatusQueued, res.Submission.Status)
	assert.Equal(t, "performance_basic_1", res.Submission.IdempotentKey)
	assert.Nil(t, res.SuccessfulAttempt())
	assert.Zero(t, lt.total(), "PERFORMANCE never runs the request locally")
	checkStepGolden(t, "performance_basic", fc.received())
}

func TestStepDefaultTypeIsPerformance(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := NewStep(c).URL("https://api.test/status/200").Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeSubmitted, res.Outcome)
	assert.Zero(t, lt.total())
	assert.Len(t, fc.received(), 1)
}

func TestStepMultiRegionRace(t *testing.T) {
	fc := newStepCloud(t)
	c := newStepClient(t, fc, nil)
	res, err := c.Step().
		URL("https://httpbin.org/delay/1?test=performance_racing").
		Regions(RegionIAD, RegionLAX, RegionORD).
		ExecutionMode(ExecutionRace).
		RegionPolicy(RegionPolicyFallback).
		Webhook(stepHook("https://app.test/webhook")).
		IdempotentKey("racing_1").
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, StatusRacing, res.Submission.Status)
	checkStepGolden(t, "multi_region_race", fc.received())
}

func TestStepFanoutStrict(t *testing.T) {
	fc := newStepCloud(t)
	c := newStepClient(t, fc, nil)
	res, err := c.Step().
		URL("https://api.test/report").
		Method("POST").
		Body(`{"a":"<&>"}`).
		Header("content-type", "application/json").
		Regions(RegionIAD, RegionFRA).
		ExecutionMode(ExecutionFanout).
		RegionPolicy(RegionPolicyStrict).
		Metadata(map[string]any{"order_id": "o-1", "n": 3}).
		RetryAt(time.UnixMilli(1763674210055)).
		Webhooks(
			stepHook("https://app.test/payment-complete"),
			Webhook{URL: "https://analytics.test/track", HasQuorumVote: Bool(false)},
			Webhook{URL: "https://backup.test/webhook", Regions: []Region{RegionIAD, RegionLAX}},
		).
		WebhookQuorum(2).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, StatusQueued, res.Submission.Status)
	checkStepGolden(t, "fanout_strict_quorum", fc.received())
}

func TestStepFallbackChainPerformance(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://httpbin.org/status/500?test=fallback_primary").
		Webhook(stepHook("https://app.test/webhook")).
		Fallback(new(Step).URL("https://httpbin.org/delay/2?test=fallback_1"), OnError(500, 502, 503)).
		Fallback(new(Step).URL("https://httpbin.org/status/200?test=fallback_2"), OnTimeout(500*time.Millisecond)).
		IdempotentKey("fallback_chain_1").
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeSubmitted, res.Outcome)
	assert.Empty(t, res.Fallbacks, "the engine runs the chain")
	assert.Zero(t, lt.total())
	require.Len(t, fc.received(), 1, "one submission carries the whole chain")
	checkStepGolden(t, "fallback_chain", fc.received())
}

func TestStepNestedFallbacksFlattenInOrder(t *testing.T) {
	fc := newStepCloud(t)
	c := newStepClient(t, fc, nil)
	a := new(Step).URL("https://a.test/").Fallback(new(Step).URL("https://a2.test/"), OnError(503))
	job, err := c.Step().URL("https://p.test/").
		Fallback(a, OnError(500)).
		Fallback(new(Step).URL("https://b.test/"), nil).
		Job()
	require.NoError(t, err)
	var urls []string
	for f := job.Fallback; f != nil; f = f.Job.Fallback {
		urls = append(urls, f.Job.URL)
	}
	assert.Equal(t, []string{"https://a.test/", "https://a2.test/", "https://b.test/"}, urls)
	assert.Equal(t, OnError(503), job.Fallback.Job.Fallback.Trigger)
	assert.Nil(t, job.Fallback.Job.Fallback.Job.Fallback.Trigger)
}

func TestStepOnSuccessPerformance(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://httpbin.org/status/200?test=on_success_parent").
		Webhook(stepHook("https://app.test/webhook")).
		OnSuccess(new(Step).
			URL("https://httpbin.org/delay/1?test=on_success_child").
			Webhook(stepHook("https://app.test/webhook")).
			IdempotentKey("on_success_child_1")).
		IdempotentKey("on_success_parent_1").
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeSubmitted, res.Outcome)
	assert.Nil(t, res.OnSuccess, "carried inside the submission, not run here")
	assert.Zero(t, lt.total())
	checkStepGolden(t, "on_success", fc.received())
}

func TestStepOnFailurePerformance(t *testing.T) {
	fc := newStepCloud(t)
	c := newStepClient(t, fc, nil)
	_, err := c.Step().
		URL("https://api.test/charge").
		Method("POST").
		Body(`{"amount":1000}`).
		Webhook(stepHook("https://app.test/webhook")).
		OnFailure(new(Step).URL("https://hooks.slack.test/alert").Method("POST").Body(`{"text":"charge failed"}`)).
		OnFailureTimeout(90 * time.Second).
		Execute(context.Background())
	require.NoError(t, err)
	checkStepGolden(t, "on_failure", fc.received())
}

func TestStepRetryPolicy(t *testing.T) {
	fc := newStepCloud(t)
	c := newStepClient(t, fc, nil)
	p := RetryPolicy{MaxRetries: 5, MaxReroutes: 3, RetryCodes: []int{429, 503}, RerouteCodes: []int{500, 502, 504}}
	s := c.Step().URL("https://api.test/endpoint").RetryPolicy(p)
	p.RetryCodes[0] = 999 // the step keeps its own copy
	_, err := s.Execute(context.Background())
	require.NoError(t, err)
	checkStepGolden(t, "retry_policy", fc.received())
}

func TestStepIdempotentHashDeduplicates(t *testing.T) {
	fc := newStepCloud(t)
	c := newStepClient(t, fc, nil)
	mk := func() *Step {
		return c.Step().
			URL("https://httpbin.org/get?test=idempotent_hash&run=1").
			Webhook(stepHook("https://app.test/webhook")).
			IdempotentStrategy(IdempotentHash)
	}
	r1, err := mk().Execute(context.Background())
	require.NoError(t, err)
	r2, err := mk().Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, r1.JobID(), r2.JobID(), "same request twice -> same job")
	assert.False(t, r1.Submission.Duplicate)
	assert.True(t, r2.Submission.Duplicate)
	jobs := fc.received()
	require.Len(t, jobs, 2)
	assert.Equal(t, jobs[0], jobs[1], "HASH sends identical jobs")
	assert.NotContains(t, jobs[0], "idempotent_key", "on Cloud the engine derives the HASH key")
	checkStepGolden(t, "idempotent_hash", jobs[:1])
}

func TestStepIdempotentUniqueEveryJobOwnKey(t *testing.T) {
	fc := newStepCloud(t)
	c := newStepClient(t, fc, nil)
	s := c.Step().
		URL("https://httpbin.org/get?test=idempotent_unique").
		Webhook(stepHook("https://app.test/webhook")).
		IdempotentStrategy(IdempotentUnique).
		Fallback(new(Step).URL("https://backup.test/"), OnError(500)).
		OnSuccess(new(Step).URL("https://next.test/")).
		OnFailure(new(Step).URL("https://alert.test/").IdempotentStrategy(IdempotentHash))
	r1, err := s.Execute(context.Background())
	require.NoError(t, err)
	r2, err := s.Execute(context.Background())
	require.NoError(t, err)
	assert.NotEqual(t, r1.JobID(), r2.JobID(), "UNIQUE -> two different jobs")

	jobs := fc.received()
	require.Len(t, jobs, 2)
	keys := map[string]bool{}
	for _, raw := range jobs {
		var j Job
		require.NoError(t, json.Unmarshal([]byte(raw), &j))
		for _, k := range []string{j.IdempotentKey, j.Fallback.Job.IdempotentKey, j.OnSuccess.IdempotentKey} {
			require.NotEmpty(t, k, "children inherit UNIQUE")
			assert.False(t, keys[k], "key %s reused", k)
			keys[k] = true
		}
		assert.Empty(t, j.OnFailure.IdempotentKey, "a child's own HASH strategy wins")
	}
	checkStepGolden(t, "idempotent_unique", jobs[:1])
}

func TestStepIdempotencyKeyHeaderIsTheKey(t *testing.T) {
	c := newStepClient(t, newStepCloud(t), nil)
	job, err := c.Step().URL("https://api.test/").Header("idempotency-key", "order-42").IdempotentStrategy(IdempotentUnique).Job()
	require.NoError(t, err)
	assert.Equal(t, "order-42", job.IdempotentKey)
	job, err = c.Step().URL("https://api.test/").Header("Idempotency-Key", "order-42").IdempotentKey("explicit").Job()
	require.NoError(t, err)
	assert.Equal(t, "explicit", job.IdempotentKey, "an explicit key always wins")
}

func TestStepFrugalLocalSuccess(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://api.test/status/200").
		Method("POST").
		Header("X-Trace", "t1").
		Body(`{"q":1}`).
		Type(StepFrugal).
		FallbackOnError(429, 500, 503).
		Webhook(stepHook("https://app.test/webhook")).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeSucceeded, res.Outcome)
	assert.True(t, res.Local)
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, "200 from api.test", string(res.Body))
	assert.Equal(t, "api.test", res.Header.Get("X-Target"))
	assert.Same(t, res, res.SuccessfulAttempt())
	assert.Empty(t, fc.received(), "a local success submits nothing")
	assert.Equal(t, 1, lt.hit("POST", "api.test/status/200"))
	assert.Equal(t, []string{`{"q":1}`}, lt.bodies["POST api.test/status/200"])
	assert.True(t, lt.allSuppressed(), "local attempts must carry SuppressForwarding")
}

func TestStepFrugalForwardOn429(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://api.test/status/429").
		Type(StepFrugal).
		Webhook(stepHook("https://app.test/webhook")).
		OnSuccess(new(Step).URL("https://notify.test/")).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeForwarded, res.Outcome)
	assert.Equal(t, 429, res.StatusCode)
	assert.Equal(t, "job_1", res.JobID())
	assert.Nil(t, res.OnSuccess, "on_success travels with the forwarded job")
	assert.Equal(t, 1, lt.hit("GET", "api.test/status/429"), "the request ran locally once")
	assert.Zero(t, lt.hit("GET", "notify.test/"))
	require.Len(t, fc.received(), 1)
	checkStepGolden(t, "frugal_forward_429", fc.received())
}

func TestStepFrugalNetworkErrorForwards(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().URL("https://down.test/x").Type(StepFrugal).Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeForwarded, res.Outcome)
	assert.Zero(t, res.StatusCode)
	require.Error(t, res.Err)
	assert.False(t, res.TimedOut)
	assert.Len(t, fc.received(), 1)
}

func TestStepFrugalLocalTimeoutForwards(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().URL("https://api.test/slow").Type(StepFrugal).Timeout(5 * time.Millisecond).Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeForwarded, res.Outcome)
	assert.True(t, res.TimedOut)
	assert.Len(t, fc.received(), 1)
}

func TestStepFrugalOtherStatusRunsOnFailure(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://api.test/status/404").
		Type(StepFrugal).
		Fallback(new(Step).URL("https://backup.test/status/200"), nil).
		OnSuccess(new(Step).URL("https://never.test/status/200")).
		OnFailure(new(Step).URL("https://hooks.slack.test/status/200").Method("POST").Body(`{"text":"failed"}`)).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeFailed, res.Outcome)
	assert.Equal(t, 404, res.StatusCode)
	assert.Empty(t, res.Fallbacks, "a non-forwardable status tries no fallback")
	require.NotNil(t, res.OnFailure)
	assert.Equal(t, OutcomeSucceeded, res.OnFailure.Outcome, "on_failure inherits FRUGAL and runs locally")
	assert.Equal(t, 1, lt.hit("POST", "hooks.slack.test/status/200"))
	assert.Zero(t, lt.hit("GET", "never.test/status/200"))
	assert.Zero(t, lt.hit("GET", "backup.test/status/200"))
	assert.Empty(t, fc.received())
}

func TestStepFrugalOnFailurePerformanceIsSubmitted(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://api.test/status/400").
		Type(StepFrugal).
		OnFailure(new(Step).URL("https://alert.test/").Type(StepPerformance).Webhook(stepHook("https://app.test/alerted"))).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeFailed, res.Outcome)
	require.NotNil(t, res.OnFailure)
	assert.Equal(t, OutcomeSubmitted, res.OnFailure.Outcome)
	assert.Equal(t, "job_1", res.OnFailure.JobID())
	checkStepGolden(t, "frugal_on_failure_submitted", fc.received())
}

// The product README's "Mixed Workflow Chains" example 1: FRUGAL primary,
// PERFORMANCE on_success.
func TestStepMixedFrugalToPerformance(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://api.openai.test/status/200").
		Method("POST").
		Type(StepFrugal).
		FallbackOnError(429, 500).
		OnSuccess(c.Step().
			URL("https://api.sendgrid.test/send").
			Type(StepPerformance).
			Webhook(Webhook{URL: "https://app.test/email-sent"}).
			Regions(RegionIAD, RegionLAX, RegionORD).
			OnSuccess(new(Step).URL("https://analytics.test/track").Type(StepFrugal))).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeSucceeded, res.Outcome)
	require.NotNil(t, res.OnSuccess)
	assert.Equal(t, OutcomeSubmitted, res.OnSuccess.Outcome)
	assert.Equal(t, StatusRacing, res.OnSuccess.Submission.Status)
	assert.Zero(t, lt.hit("GET", "analytics.test/track"), "the PERFORMANCE child's subtree runs on the engine")
	require.Len(t, fc.received(), 1)
	checkStepGolden(t, "mixed_frugal_to_performance", fc.received())
}

// The product README's "Complex Mixed Workflow" (example 3) with a FRUGAL
// fallback ("still FRUGAL") that rescues the primary.
func TestStepFrugalFallbackSucceedsLocally(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	backup := new(Step).URL("https://backup-api.test/status/200").OnSuccess(new(Step).URL("https://backup-done.test/status/204"))
	res, err := c.Step().
		URL("https://cheap-api.test/status/500").
		Type(StepFrugal).
		FallbackOnError(429, 500).
		Fallback(backup, OnError(500)).
		OnSuccess(c.Step().
			URL("https://critical-webhook.test/").
			Type(StepPerformance).
			Webhook(Webhook{URL: "https://app.test/webhook"}).
			Regions(RegionIAD, RegionLAX, RegionORD).
			OnSuccess(c.Step().URL("https://analytics.test/track").Type(StepFrugal))).
		OnFailure(c.Step().URL("https://hooks.slack.test/webhook").Type(StepFrugal)).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeSucceeded, res.Outcome)
	assert.Equal(t, 500, res.StatusCode)
	require.Len(t, res.Fallbacks, 1)
	fb := res.Fallbacks[0]
	assert.Same(t, backup, fb.Step)
	assert.Equal(t, OutcomeSucceeded, fb.Outcome)
	assert.Same(t, fb, res.SuccessfulAttempt())
	require.NotNil(t, fb.OnSuccess, "the fallback's own on_success runs")
	assert.Equal(t, 204, fb.OnSuccess.StatusCode)
	require.NotNil(t, res.OnSuccess, "the step succeeded through its fallback: its on_success runs")
	assert.Equal(t, OutcomeSubmitted, res.OnSuccess.Outcome)
	assert.Nil(t, res.OnFailure)
	assert.Equal(t, 1, lt.hit("GET", "cheap-api.test/status/500"))
	assert.Equal(t, 1, lt.hit("GET", "backup-api.test/status/200"))
	assert.Zero(t, lt.hit("GET", "hooks.slack.test/webhook"))
	checkStepGolden(t, "frugal_fallback_rescues", fc.received())
}

// Fallbacks tried locally are not in the forwarded chain; those that could
// not run locally (trigger not matching, PERFORMANCE) are, in order. Nothing
// runs twice and one job is submitted.
func TestStepFrugalChainForwardsOnlyUntried(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://primary.test/status/503").
		Type(StepFrugal).
		Webhook(stepHook("https://app.test/webhook")).
		Fallback(new(Step).URL("https://f1.test/status/500"), OnError(503)).              // tried: 500
		Fallback(new(Step).URL("https://f2.test/status/200"), OnError(502)).              // 500 does not match: forwarded
		Fallback(new(Step).URL("https://down.test/f3"), nil).                             // tried: network error
		Fallback(new(Step).URL("https://f4.test/status/200").Type(StepPerformance), nil). // PERFORMANCE: forwarded
		Fallback(new(Step).URL("https://f5.test/status/429"), OnTimeout(time.Second)).    // not a timeout: forwarded
		OnFailure(new(Step).URL("https://alert.test/status/200")).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeForwarded, res.Outcome)
	require.Len(t, res.Fallbacks, 2)
	assert.Equal(t, 500, res.Fallbacks[0].StatusCode)
	assert.Equal(t, OutcomeFailed, res.Fallbacks[0].Outcome)
	assert.Error(t, res.Fallbacks[1].Err)
	assert.Nil(t, res.OnFailure, "forwarded: on_failure is the engine's job")
	for hp, want := range map[string]int{
		"primary.test/status/503": 1, "f1.test/status/500": 1, "f2.test/status/200": 0,
		"down.test/f3": 1, "f4.test/status/200": 0, "f5.test/status/429": 0, "alert.test/status/200": 0,
	} {
		assert.Equal(t, want, lt.hit("GET", hp), hp)
	}
	require.Len(t, fc.received(), 1, "exactly one submission")
	checkStepGolden(t, "frugal_chain_forward_untried", fc.received())
}

func TestStepFrugalOnTimeoutTriggerCutsTheAttempt(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().
		URL("https://api.test/slow").
		Type(StepFrugal).
		Fallback(new(Step).URL("https://backup.test/status/200"), OnTimeout(5*time.Millisecond)).
		Execute(context.Background())
	require.NoError(t, err)
	assert.True(t, res.TimedOut, "the primary is cut at the trigger's timeout, not the 30 s default")
	assert.Equal(t, OutcomeSucceeded, res.Outcome)
	require.Len(t, res.Fallbacks, 1)
	assert.Equal(t, 200, res.Fallbacks[0].StatusCode)
	assert.Empty(t, fc.received())
}

func TestStepFrugalFreshBodyPerAttempt(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	_, err := c.Step().
		URL("https://api.test/status/503").Method("PUT").Body("primary-body").
		Type(StepFrugal).
		Fallback(new(Step).URL("https://api.test/status/503").Method("PUT").Body("primary-body"), nil).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"primary-body", "primary-body"}, lt.bodies["PUT api.test/status/503"])
}

func TestStepFrugalBoundedBody(t *testing.T) {
	lt := newStepTarget(t)
	c := newStepClient(t, newStepCloud(t), lt)
	res, err := c.Step().URL("https://api.test/big").Type(StepFrugal).MaxResponseBody(5).
		OnSuccess(new(Step).URL("https://api.test/big")).
		Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "xxxxx", string(res.Body))
	assert.True(t, res.Truncated)
	assert.Len(t, res.OnSuccess.Body, 5, "children inherit MaxResponseBody")

	res, err = c.Step().URL("https://api.test/big").Type(StepFrugal).Execute(context.Background())
	require.NoError(t, err)
	assert.Len(t, res.Body, 100)
	assert.False(t, res.Truncated)
}

func TestStepFrugalCallerCancelIsNotANetworkError(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	ctx, cancel := context.WithCancel(context.Background())
	lt.mux.HandleFunc("/cancel", func(w http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	})
	res, err := c.Step().URL("https://api.test/cancel").Type(StepFrugal).
		Fallback(new(Step).URL("https://backup.test/status/200"), nil).
		Execute(ctx)
	require.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, res)
	assert.False(t, IsUnreachable(err))
	assert.Empty(t, fc.received(), "a cancelled step is not forwarded")
	assert.Zero(t, lt.hit("GET", "backup.test/status/200"), "nor does a fallback run")
}

func TestStepFrugalCallerCancelDuringFallback(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	ctx, cancel := context.WithCancel(context.Background())
	lt.mux.HandleFunc("/cancel", func(w http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	})
	res, err := c.Step().URL("https://api.test/status/500").Type(StepFrugal).
		Fallback(new(Step).URL("https://api.test/cancel"), nil).
		Execute(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, res, "what ran before the cancellation is reported")
	assert.Equal(t, OutcomeIncomplete, res.Outcome)
	assert.Equal(t, 500, res.StatusCode)
	assert.Empty(t, fc.received())
}

func TestStepFrugalForwardFailureKeepsTheLocalResult(t *testing.T) {
	fc := newStepCloud(t)
	fc.proxyStatus, fc.proxyBody = http.StatusTooManyRequests, `{"status":"denied","error":"Plan limit exceeded","retry_after":60}`
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().URL("https://api.test/status/503").Type(StepFrugal).
		OnFailure(new(Step).URL("https://alert.test/status/200")).
		Execute(context.Background())
	require.ErrorIs(t, err, ErrRateLimited)
	var rl *RateLimitError
	require.ErrorAs(t, err, &rl)
	assert.Equal(t, time.Minute, rl.RetryAfter)
	require.NotNil(t, res)
	assert.Equal(t, OutcomeIncomplete, res.Outcome)
	assert.Equal(t, 503, res.StatusCode)
	assert.Zero(t, lt.hit("GET", "alert.test/status/200"), "a failed forward does not run on_failure locally")
	assert.Len(t, fc.received(), 1, "no retry with WithRetry(1, ...)")
}

func TestStepChildErrorNamesTheStep(t *testing.T) {
	fc := newStepCloud(t)
	fc.proxyStatus, fc.proxyBody = http.StatusBadRequest, `{"error":"bad job"}`
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	res, err := c.Step().URL("https://api.test/status/200").Type(StepFrugal).
		OnSuccess(new(Step).URL("https://next.test/").Type(StepPerformance)).
		Execute(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrValidation)
	assert.Contains(t, err.Error(), "on_success step")
	require.NotNil(t, res)
	assert.Equal(t, OutcomeSucceeded, res.Outcome, "the primary's success is not lost")
	assert.Nil(t, res.OnSuccess)
}

func TestStepChildInheritsClientAndType(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	other := newStepClient(t, newStepCloud(t), lt)
	res, err := c.Step().URL("https://api.test/status/200").Type(StepFrugal).
		OnSuccess(new(Step).URL("https://child.test/status/201").
			OnSuccess(NewStep(other).URL("https://grandchild.test/").Type(StepPerformance))).
		Execute(context.Background())
	require.NoError(t, err)
	require.NotNil(t, res.OnSuccess)
	assert.True(t, res.OnSuccess.Local, "an untyped child of a FRUGAL step is FRUGAL")
	assert.Equal(t, 201, res.OnSuccess.StatusCode)
	require.NotNil(t, res.OnSuccess.OnSuccess)
	assert.Equal(t, OutcomeSubmitted, res.OnSuccess.OnSuccess.Outcome)
	assert.Empty(t, fc.received(), "a child with its own client uses it")
}

func TestStepSelfHostedFrugalForward(t *testing.T) {
	var got []map[string]any
	var mu sync.Mutex
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "/jobs", r.URL.Path)
		var m map[string]any
		assert.NoError(t, json.NewDecoder(r.Body).Decode(&m))
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"job_id":"0123456789abcdef0123456789abcdef","status":"queued"}`)
	}))
	defer engine.Close()
	lt := newStepTarget(t)
	c, err := New(WithSelfHosted(engine.URL, "user-1"), WithHTTPClient(engine.Client()), WithRetry(1, 0, 0),
		WithLocalHTTPClient(&http.Client{Transport: lt}))
	require.NoError(t, err)
	res, err := c.Step().URL("https://api.test/status/502").Method("POST").Body("b").Type(StepFrugal).
		Webhook(Webhook{URL: "https://app.test/hook"}).Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeForwarded, res.Outcome)
	require.Len(t, got, 1)
	assert.Equal(t, HashKey("user-1", "POST", "https://api.test/status/502", []byte("b")), got[0]["idempotent_key"])
	assert.Equal(t, "https://app.test/hook", got[0]["webhook_url"])
}

// ---------------------------------------------------------------------------
// Validation: typed errors naming the field, before any network call.

func TestStepValidation(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	sh, err := New(WithSelfHosted("http://127.0.0.1:1", "u"), WithLocalHTTPClient(&http.Client{Transport: lt}))
	require.NoError(t, err)
	ok := func() *Step { return c.Step().URL("https://api.test/status/200").Type(StepFrugal) }
	self := new(Step)
	self.URL("https://api.test/").OnSuccess(self)

	tests := []struct {
		name        string
		step        *Step
		field       string
		unsupported bool
	}{
		{"missing url", c.Step(), "url", false},
		{"relative url", c.Step().URL("/path"), "url", false},
		{"ftp url", c.Step().URL("ftp://x.test/"), "url", false},
		{"unknown method", ok().Method("FETCH"), "method", false},
		{"quorum above voters", ok().Webhooks(stepHook("https://a.test/"), Webhook{URL: "https://b.test/", HasQuorumVote: Bool(false)}).WebhookQuorum(2), "webhook_quorum", false},
		{"negative quorum", ok().WebhookQuorum(-1), "webhook_quorum", false},
		{"negative timeout", ok().Timeout(-time.Second), "timeout", false},
		{"negative on_failure timeout", ok().OnFailureTimeout(-time.Second), "on_failure_timeout_ms", false},
		{"empty fallback codes", ok().FallbackOnError(), "fallback_on_error", false},
		{"bad fallback code", ok().FallbackOnError(429, 1000), "fallback_on_error", false},
		{"empty trigger codes", ok().Fallback(new(Step).URL("https://b.test/"), OnError()), "fallback_job.trigger.codes", false},
		{"zero timeout trigger", ok().Fallback(new(Step).URL("https://b.test/"), OnTimeout(0)), "fallback_job.trigger.timeout_ms", false},
		{"nil fallback", ok().Fallback(nil, nil), "fallback_job", false},
		{"second fallback url", ok().Fallback(new(Step).URL("https://b.test/"), nil).Fallback(new(Step), nil), "fallback_job.fallback_job.url", false},
		{"child builder error", ok().OnSuccess(new(Step).URL("https://b.test/").Method("NOPE")), "on_success.method", false},
		{"child url", ok().OnFailure(new(Step).URL("nope")), "on_failure.url", false},
		{"negative retries", ok().RetryPolicy(RetryPolicy{MaxRetries: -1}), "retry_policy.max_retries", false},
		{"bad max body", ok().MaxResponseBody(0), "max_response_body", false},
		{"bad type", ok().Type(StepType(7)), "type", false},
		{"bad strategy", ok().IdempotentStrategy(IdempotentStrategy(9)), "idempotent_strategy", false},
		{"bad region policy", ok().RegionPolicy("sometimes"), "region_policy", false},
		{"no client", new(Step).URL("https://api.test/"), "client", false},
		{"cycle", self.Client(c), "on_success", false},
		{"self-hosted regions", NewStep(sh).URL("https://api.test/").Webhook(Webhook{URL: "https://a.test/"}).Regions(RegionIAD), "regions", true},
		{"self-hosted on_success", NewStep(sh).URL("https://api.test/").Type(StepFrugal).Webhook(Webhook{URL: "https://a.test/"}).OnSuccess(new(Step).URL("https://b.test/")), "on_success", true},
		{"self-hosted fallback", NewStep(sh).URL("https://api.test/").Webhook(Webhook{URL: "https://a.test/"}).Fallback(new(Step).URL("https://b.test/"), nil), "fallback_job", true},
		{"self-hosted without webhook", NewStep(sh).URL("https://api.test/").Type(StepFrugal), "webhooks", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, run := range map[string]func() (*StepResult, error){
				"Execute": func() (*StepResult, error) { return tt.step.Execute(context.Background()) },
				"ForwardOrFallback": func() (*StepResult, error) {
					return tt.step.ForwardOrFallback(context.Background(), func(context.Context) error {
						t.Error("fallback must not run on invalid input")
						return nil
					})
				},
				"Job": func() (*StepResult, error) { _, err := tt.step.Job(); return nil, err },
			} {
				res, err := run()
				assert.Nil(t, res, name)
				var ve *ValidationError
				if assert.ErrorAs(t, err, &ve, name) {
					assert.Equal(t, tt.field, ve.Field, "%s: %v", name, err)
				}
				assert.ErrorIs(t, err, ErrValidation, name)
				assert.Equal(t, tt.unsupported, errors.Is(err, ErrUnsupported), name)
			}
		})
	}
	assert.Empty(t, fc.received(), "nothing submitted")
	assert.Zero(t, lt.total(), "nothing executed locally")
}

func TestStepValidationNilReceiverAndFallbackFunc(t *testing.T) {
	var s *Step
	_, err := s.Execute(context.Background())
	require.ErrorIs(t, err, ErrValidation)
	c := newStepClient(t, newStepCloud(t), nil)
	_, err = c.Step().URL("https://api.test/").ForwardOrFallback(context.Background(), nil)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "fallback", ve.Field)
}

func TestStepFirstBuilderErrorWins(t *testing.T) {
	c := newStepClient(t, newStepCloud(t), nil)
	_, err := c.Step().URL("https://api.test/").Method("BAD").Timeout(-1).Execute(context.Background())
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "method", ve.Field)
}

func TestStepJobIsACopy(t *testing.T) {
	c := newStepClient(t, newStepCloud(t), nil)
	h := map[string]string{"X-A": "1"}
	m := map[string]any{"k": map[string]any{"n": 1}}
	s := c.Step().URL("https://api.test/").Headers(h).Metadata(m)
	h["X-A"] = "2"
	m["k"].(map[string]any)["n"] = 2
	j1, err := s.Job()
	require.NoError(t, err)
	j1.Headers["X-A"] = "3"
	j2, err := s.Job()
	require.NoError(t, err)
	assert.Equal(t, "1", j2.Headers["X-A"])
	assert.Equal(t, map[string]any{"n": 1}, j2.Metadata["k"])
}

// ---------------------------------------------------------------------------
// ForwardOrFallback.

type stepFailingRT struct{ err error }

func (f stepFailingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return nil, f.err
}

func TestStepForwardOrFallback(t *testing.T) {
	dnsErr := &net.DNSError{Err: "no such host", Name: "proxy.test", IsNotFound: true}
	tests := []struct {
		name        string
		proxyStatus int
		proxyBody   string
		transport   http.RoundTripper
		wantRan     bool
		wantOutcome Outcome
		wantErrIs   error
	}{
		{name: "submitted", wantOutcome: OutcomeSubmitted},
		{name: "connection refused", transport: stepFailingRT{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}}, wantRan: true, wantOutcome: OutcomeFellBack},
		{name: "dns failure", transport: stepFailingRT{dnsErr}, wantRan: true, wantOutcome: OutcomeFellBack},
		{name: "proxy 502", proxyStatus: http.StatusBadGateway, proxyBody: "Proxy Error", wantRan: true, wantOutcome: OutcomeFellBack},
		{name: "rate limited", proxyStatus: http.StatusTooManyRequests, proxyBody: `{"error":"Too Many Requests","retry_after_seconds":300}`, wantErrIs: ErrRateLimited},
		{name: "unauthorized", proxyStatus: http.StatusUnauthorized, proxyBody: `{"error":"Unauthorized","message":"Invalid API key"}`, wantErrIs: ErrUnauthorized},
		{name: "bad request", proxyStatus: http.StatusBadRequest, proxyBody: `{"error":"bad"}`, wantErrIs: ErrValidation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := newStepCloud(t)
			fc.proxyStatus, fc.proxyBody = tt.proxyStatus, tt.proxyBody
			var extra []Option
			if tt.transport != nil {
				extra = append(extra, WithHTTPClient(&http.Client{Transport: tt.transport}))
			}
			c := newStepClient(t, fc, nil, extra...)
			ran := 0
			res, err := c.Step().URL("https://api.test/").Type(StepFrugal).
				ForwardOrFallback(context.Background(), func(ctx context.Context) error {
					ran++
					return nil
				})
			assert.Equal(t, tt.wantRan, ran == 1)
			assert.LessOrEqual(t, ran, 1)
			if tt.wantErrIs != nil {
				require.ErrorIs(t, err, tt.wantErrIs)
				assert.Nil(t, res)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantOutcome, res.Outcome)
			if tt.wantOutcome == OutcomeFellBack {
				assert.True(t, IsUnreachable(res.Err))
			} else {
				assert.Equal(t, "job_1", res.JobID())
			}
		})
	}
}

func TestStepForwardOrFallbackReturnsFallbackError(t *testing.T) {
	c := newStepClient(t, newStepCloud(t), nil, WithHTTPClient(&http.Client{Transport: stepFailingRT{errors.New("connection reset by peer")}}))
	boom := errors.New("boom")
	res, err := c.Step().URL("https://api.test/").ForwardOrFallback(context.Background(), func(context.Context) error { return boom })
	require.ErrorIs(t, err, boom)
	require.NotNil(t, res)
	assert.Equal(t, OutcomeFellBack, res.Outcome)
}

func TestStepForwardOrFallbackCallerCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := newStepClient(t, newStepCloud(t), nil)
	res, err := c.Step().URL("https://api.test/").ForwardOrFallback(ctx, func(context.Context) error {
		t.Error("the fallback must not run when the caller gave up")
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, res)
}

// Executing the same step concurrently is safe (run with -race).
func TestStepConcurrentExecute(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	s := c.Step().URL("https://api.test/status/429").Type(StepFrugal).IdempotentStrategy(IdempotentUnique).
		Fallback(new(Step).URL("https://api.test/status/500"), nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			res, err := s.Execute(context.Background())
			assert.NoError(t, err)
			assert.Equal(t, OutcomeForwarded, res.Outcome)
		})
	}
	wg.Wait()
	assert.Len(t, fc.received(), 8)
	assert.Equal(t, 8, lt.hit("GET", "api.test/status/500"))
}

func TestStepStrings(t *testing.T) {
	assert.Equal(t, "frugal", StepFrugal.String())
	assert.Equal(t, "performance", StepPerformance.String())
	assert.Equal(t, "unique", IdempotentUnique.String())
	assert.Equal(t, "hash", IdempotentHash.String())
	assert.Equal(t, "forwarded", OutcomeForwarded.String())
	assert.Equal(t, "Outcome(42)", Outcome(42).String())
	s := new(Step).URL("https://user:pw@api.test/p?token=secret")
	assert.NotContains(t, s.String(), "secret")
	assert.NotContains(t, s.String(), "pw")
	assert.Equal(t, []int{429, 500, 502, 503, 504}, DefaultFallbackOnError())
}

// Property: whatever the chain (types, triggers, outcomes), a FRUGAL step
// runs each request locally at most once, submits at most one job, and the
// forwarded chain is exactly the fallbacks not tried locally, in order.
func TestStepFrugalPropertyNothingTwice(t *testing.T) {
	fc := newStepCloud(t)
	lt := newStepTarget(t)
	c := newStepClient(t, fc, lt)
	rng := rand.New(rand.NewPCG(1, 2))
	statuses := []int{200, 201, 404, 429, 500, 502, 503, 0 /* network error */}
	target := func(host string, status int) string {
		if status == 0 {
			return "https://down-" + host + "/x"
		}
		return fmt.Sprintf("https://%s/status/%d", host, status)
	}
	for iter := range 300 {
		primary := target(fmt.Sprintf("p%d.test", iter), statuses[rng.IntN(len(statuses))])
		s := c.Step().URL(primary).Type(StepFrugal)
		if rng.IntN(2) == 0 {
			s.FallbackOnError(429, 503)
		}
		var urls []string
		for k := range rng.IntN(5) {
			u := target(fmt.Sprintf("f%d-%d.test", iter, k), statuses[rng.IntN(len(statuses))])
			urls = append(urls, u)
			fb := new(Step).URL(u)
			if rng.IntN(4) == 0 {
				fb.Type(StepPerformance)
			}
			var trig *Trigger
			switch rng.IntN(3) {
			case 1:
				trig = OnError(statuses[1+rng.IntN(len(statuses)-2)], statuses[1+rng.IntN(len(statuses)-2)])
			case 2:
				trig = OnTimeout(time.Hour)
			}
			s.Fallback(fb, trig)
		}
		before := len(fc.received())
		res, err := s.Execute(context.Background())
		require.NoError(t, err)
		after := fc.received()
		submitted := after[before:]
		require.LessOrEqual(t, len(submitted), 1, "iteration %d: at most one submission", iter)

		hit := func(u string) int { return lt.hit("GET", strings.TrimPrefix(u, "https://")) }
		require.Equal(t, 1, hit(primary), "iteration %d: the primary runs once", iter)
		var tried, untried []string
		for _, u := range urls {
			switch hit(u) {
			case 0:
				untried = append(untried, u)
			case 1:
				tried = append(tried, u)
			default:
				t.Fatalf("iteration %d: fallback %s ran %d times", iter, u, hit(u))
			}
		}
		require.Len(t, res.Fallbacks, len(tried), "iteration %d", iter)
		switch res.Outcome {
		case OutcomeForwarded:
			require.Len(t, submitted, 1, "iteration %d", iter)
			var j Job
			require.NoError(t, json.Unmarshal([]byte(submitted[0]), &j))
			assert.Equal(t, primary, j.URL)
			var chain []string
			for f := j.Fallback; f != nil; f = f.Job.Fallback {
				chain = append(chain, f.Job.URL)
			}
			assert.Equal(t, untried, chain, "iteration %d: the forwarded chain is what was not tried", iter)
		case OutcomeSucceeded:
			assert.Empty(t, submitted, "iteration %d", iter)
			require.NotNil(t, res.SuccessfulAttempt(), "iteration %d", iter)
		case OutcomeFailed:
			assert.Empty(t, submitted, "iteration %d", iter)
			assert.Empty(t, tried, "iteration %d: a non-forwardable failure tries no fallback", iter)
		default:
			t.Fatalf("iteration %d: unexpected outcome %v", iter, res.Outcome)
		}
	}
}

func TestStepLogsWithoutQuery(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fc := newStepCloud(t)
	c := newStepClient(t, fc, newStepTarget(t), WithLogger(logger))
	res, err := c.Step().URL("https://down.test/x?token=s3cr3t").Type(StepFrugal).Execute(context.Background())
	require.NoError(t, err)
	assert.Equal(t, OutcomeForwarded, res.Outcome)
	assert.Contains(t, buf.String(), "local attempt")
	assert.Contains(t, buf.String(), "connection refused")
	assert.NotContains(t, buf.String(), "s3cr3t")
}

func TestStepJSONBody(t *testing.T) {
	c := newStepClient(t, newStepCloud(t), nil)
	job, err := c.Step().URL("https://api.test/").Method("post").JSONBody(map[string]any{"q": "a&b"}).Job()
	require.NoError(t, err)
	assert.Equal(t, `{"q":"a&b"}`, job.Body)
	assert.Equal(t, "POST", job.Method)
	assert.Equal(t, "application/json", job.Headers["Content-Type"])

	job, err = c.Step().URL("https://api.test/").Header("content-type", "application/vnd.x+json").JSONBody(1).Job()
	require.NoError(t, err)
	assert.Equal(t, "application/vnd.x+json", job.Headers["Content-Type"], "an explicit Content-Type is kept")

	_, err = c.Step().URL("https://api.test/").JSONBody(make(chan int)).Job()
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "body", ve.Field)
}
