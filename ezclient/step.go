package ezclient

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

// StepType says where a step's request runs first (protocol §6).
type StepType int

const (
	// StepPerformance submits the step to the engine at once; the engine
	// runs the request, its fallbacks, OnSuccess and OnFailure. It is the
	// default, as in the product README.
	StepPerformance StepType = iota
	// StepFrugal executes the request locally first, with the client's
	// LocalHTTPClient, and hands it to the engine only when it fails with one
	// of the FallbackOnError codes or a network error.
	StepFrugal
)

// String returns "performance" or "frugal".
func (t StepType) String() string {
	switch t {
	case StepPerformance:
		return "performance"
	case StepFrugal:
		return "frugal"
	}
	return fmt.Sprintf("StepType(%d)", int(t))
}

// IdempotentStrategy says how a step's idempotent key is chosen when none is
// set explicitly (protocol §3).
type IdempotentStrategy int

const (
	// IdempotentHash (the default) de-duplicates identical requests: on
	// Cloud the key is left empty and the engine derives one from (url,
	// method, body, customer); on self-hosted engines the client derives it
	// with HashKey. The same request submitted twice yields the same job.
	IdempotentHash IdempotentStrategy = iota
	// IdempotentUnique gives every job (nested jobs too) a fresh random key
	// on every Execute, so repeated requests (polling, scheduled calls) are
	// never rejected as duplicates.
	IdempotentUnique
)

// String returns "hash" or "unique".
func (s IdempotentStrategy) String() string {
	switch s {
	case IdempotentHash:
		return "hash"
	case IdempotentUnique:
		return "unique"
	}
	return fmt.Sprintf("IdempotentStrategy(%d)", int(s))
}

// Defaults of a Step.
const (
	// DefaultLocalTimeout bounds one local attempt of a FRUGAL step.
	DefaultLocalTimeout = 30 * time.Second
	// DefaultMaxResponseBody bounds how much of a local response body is
	// read into StepResult.Body; the rest is discarded and
	// StepResult.Truncated is set.
	DefaultMaxResponseBody int64 = 10 << 20
)

// DefaultFallbackOnError returns the status codes on which a FRUGAL step
// hands its request to the engine when FallbackOnError is not called:
// 429, 500, 502, 503 and 504. The slice is fresh on every call.
func DefaultFallbackOnError() []int { return []int{429, 500, 502, 503, 504} }

// Step is a request described once and executed either by the engine at
// once (StepPerformance, the default) or locally first (StepFrugal), and
// chained into workflows with Fallback, OnSuccess and OnFailure. It mirrors
// the product README's Step builder:
//
//	res, err := client.Step().
//		URL("https://api.example.com/endpoint").
//		Method("POST").
//		Webhook(ezclient.Webhook{URL: "https://your-app.com/webhook"}).
//		Execute(ctx)
//
// Setters return the step so calls chain. A setter cannot return an error:
// the first invalid argument is recorded and returned by Execute, Job and
// ForwardOrFallback as a *ValidationError naming the field, before any
// network call.
//
// A child step (a fallback, OnSuccess or OnFailure) that was given no client,
// no type or no idempotent strategy takes its parent's, so
// client.Step().Type(StepFrugal).Fallback(new(Step).URL(u), nil) has a
// FRUGAL fallback ("still FRUGAL", as the product README puts it). Inside a
// job submitted to the engine every nested step runs on the engine,
// whatever its type.
//
// The zero value is an empty step without a client, usable as a child step
// (new(Step).URL(...)). A Step must not be modified concurrently; once
// built it may be executed any number of times, also concurrently: Execute
// never modifies it.
type Step struct {
	client *Client

	url      string
	method   string
	headers  map[string]string
	body     string
	metadata map[string]any

	webhooks     []Webhook
	quorum       int
	regions      []Region
	regionPolicy RegionPolicy
	execMode     ExecutionMode
	retryPolicy  *RetryPolicy
	retryAt      time.Time

	key         string
	strategy    IdempotentStrategy
	strategySet bool

	typ     StepType
	typeSet bool

	codes      []int
	codesSet   bool
	timeout    time.Duration
	timeoutSet bool
	maxBody    int64

	fallbacks        []stepFallback
	onSuccess        *Step
	onFailure        *Step
	onFailureTimeout time.Duration

	err *ValidationError // first builder error
}

type stepFallback struct {
	step    *Step
	trigger *Trigger
}

// NewStep returns an empty step that runs with client c. c may be nil for a
// child step, which then runs with its parent's client.
func NewStep(c *Client) *Step { return &Step{client: c} }

// Step returns an empty step that runs with c; see NewStep.
func (c *Client) Step() *Step { return NewStep(c) }

// fail records the first builder error.
func (s *Step) fail(field, format string, args ...any) *Step {
	if s.err == nil {
		s.err = &ValidationError{Field: field, Reason: redact.Text(fmt.Sprintf(format, args...))}
	}
	return s
}

// Client sets the client the step runs with, replacing the one given to
// NewStep (nil: the parent's, for a child step).
func (s *Step) Client(c *Client) *Step {
	s.client = c
	return s
}

// URL sets the request URL, an absolute http(s) URL. Required.
func (s *Step) URL(u string) *Step {
	s.url = u
	return s
}

// Method sets the HTTP method (any case; default GET). An unknown method is
// recorded as an error on field "method".
func (s *Step) Method(m string) *Step {
	if err := ValidateMethod("method", m); err != nil {
		return s.fail("method", "unknown HTTP method %q", m)
	}
	s.method = strings.ToUpper(m)
	return s
}

// Header sets one request header, replacing an earlier value of the same
// header (names are canonicalised, so "content-type" and "Content-Type" are
// the same header).
func (s *Step) Header(key, value string) *Step {
	if s.headers == nil {
		s.headers = make(map[string]string)
	}
	s.headers[http.CanonicalHeaderKey(key)] = value
	return s
}

// Headers sets every header in h, as Header does for each; headers set
// earlier and not in h are kept.
func (s *Step) Headers(h map[string]string) *Step {
	for k, v := range h {
		s.Header(k, v)
	}
	return s
}

// Body sets the request body. It travels to the engine as a JSON string, so
// it must be valid UTF-8.
func (s *Step) Body(body string) *Step {
	s.body = body
	return s
}

// JSONBody sets the body to the JSON encoding of v and, unless already set,
// the Content-Type header to application/json. An encoding failure is
// recorded as an error on field "body".
func (s *Step) JSONBody(v any) *Step {
	b, err := marshalNoEscape(v)
	if err != nil {
		return s.fail("body", "cannot encode as JSON: %v", err)
	}
	s.body = string(b)
	if _, ok := s.headers["Content-Type"]; !ok {
		s.Header("Content-Type", "application/json")
	}
	return s
}

// Metadata adds the entries of m to the metadata echoed back in the webhook
// payload (later calls override earlier keys).
func (s *Step) Metadata(m map[string]any) *Step {
	if len(m) == 0 {
		return s
	}
	if s.metadata == nil {
		s.metadata = make(map[string]any, len(m))
	}
	for k, v := range m {
		s.metadata[k] = cloneValue(v)
	}
	return s
}

// Type sets the step type (default StepPerformance, or the parent's for a
// child step). An unknown value is recorded as an error on field "type".
func (s *Step) Type(t StepType) *Step {
	if t != StepPerformance && t != StepFrugal {
		return s.fail("type", "unknown step type %d", int(t))
	}
	s.typ, s.typeSet = t, true
	return s
}

// Webhook adds one webhook that receives the job's result.
func (s *Step) Webhook(w Webhook) *Step {
	s.webhooks = append(s.webhooks, cloneWebhook(w))
	return s
}

// Webhooks replaces the step's webhooks with ws.
func (s *Step) Webhooks(ws ...Webhook) *Step {
	s.webhooks = nil
	for _, w := range ws {
		s.Webhook(w)
	}
	return s
}

// WebhookQuorum sets how many webhooks with a quorum vote must be delivered
// for the delivery to count as done (default 1). It may not exceed the
// number of voting webhooks; a negative value is an error.
func (s *Step) WebhookQuorum(n int) *Step {
	if n < 0 {
		return s.fail("webhook_quorum", "negative (%d)", n)
	}
	s.quorum = n
	return s
}

// Regions sets the regions the engine runs the job in (multi-region racing
// or fan-out, see ExecutionMode).
func (s *Step) Regions(rs ...Region) *Step {
	s.regions = slices.Clone(rs)
	return s
}

// RegionPolicy sets what the engine does when a region is down (default
// RegionPolicyFallback).
func (s *Step) RegionPolicy(p RegionPolicy) *Step {
	s.regionPolicy = p
	return s
}

// ExecutionMode sets how a multi-region job runs (default ExecutionRace).
func (s *Step) ExecutionMode(m ExecutionMode) *Step {
	s.execMode = m
	return s
}

// RetryPolicy sets the engine's server-side retry policy.
func (s *Step) RetryPolicy(p RetryPolicy) *Step {
	p.RetryCodes = slices.Clone(p.RetryCodes)
	p.RerouteCodes = slices.Clone(p.RerouteCodes)
	s.retryPolicy = &p
	return s
}

// RetryAt sets the earliest time the engine may execute the job (sent in
// epoch milliseconds). It does not delay a FRUGAL step's local attempt.
func (s *Step) RetryAt(t time.Time) *Step {
	s.retryAt = t
	return s
}

// IdempotentKey sets a custom idempotent key, which always wins over the
// strategy. Without it, an Idempotency-Key request header is used as the
// key (the convention Stripe and others use), else the strategy decides.
func (s *Step) IdempotentKey(key string) *Step {
	s.key = key
	return s
}

// IdempotentStrategy sets how the key is chosen when none is set (default
// IdempotentHash, or the parent's for a child step). An unknown value is
// recorded as an error on field "idempotent_strategy".
func (s *Step) IdempotentStrategy(st IdempotentStrategy) *Step {
	if st != IdempotentHash && st != IdempotentUnique {
		return s.fail("idempotent_strategy", "unknown idempotent strategy %d", int(st))
	}
	s.strategy, s.strategySet = st, true
	return s
}

// FallbackOnError sets the status codes on which a FRUGAL step tries its
// fallbacks locally and then hands the request to the engine (default
// DefaultFallbackOnError). Network errors and local timeouts always do.
// An empty list or a code outside 100-599 is an error on field
// "fallback_on_error". It has no effect on PERFORMANCE steps.
func (s *Step) FallbackOnError(codes ...int) *Step {
	if len(codes) == 0 {
		return s.fail("fallback_on_error", "needs at least one status code")
	}
	for _, c := range codes {
		if !validStatus(c) {
			return s.fail("fallback_on_error", "%d is not an HTTP status code", c)
		}
	}
	s.codes, s.codesSet = slices.Clone(codes), true
	return s
}

// Timeout bounds each local attempt of a FRUGAL step (default
// DefaultLocalTimeout; 0 means no bound but the context's). A timed-out
// attempt counts as a network error: the step tries its fallbacks and is
// handed to the engine. Negative values are an error on field "timeout".
func (s *Step) Timeout(d time.Duration) *Step {
	if d < 0 {
		return s.fail("timeout", "negative (%v)", d)
	}
	s.timeout, s.timeoutSet = d, true
	return s
}

// MaxResponseBody bounds how many bytes of a local response body are kept
// (default DefaultMaxResponseBody, or the parent's for a child step). It
// must be positive; other values are an error on field "max_response_body".
func (s *Step) MaxResponseBody(n int64) *Step {
	if n <= 0 {
		return s.fail("max_response_body", "must be positive (got %d)", n)
	}
	s.maxBody = n
	return s
}

// Fallback adds a fallback that runs when trigger fires for the request
// before it: OnError(codes...) or OnTimeout(d), or nil to let the engine
// decide. Several calls build a chain: the first fallback is tried first,
// then the second, and so on. A fallback's own fallbacks are tried right
// after it, before the next fallback of this step. A nil step is an error
// on field "fallback_job".
func (s *Step) Fallback(step *Step, trigger *Trigger) *Step {
	if step == nil {
		return s.fail("fallback_job", "nil fallback step")
	}
	if trigger != nil {
		t := *trigger
		t.Codes = slices.Clone(t.Codes)
		trigger = &t
	}
	s.fallbacks = append(s.fallbacks, stepFallback{step: step, trigger: trigger})
	return s
}

// OnSuccess sets the step that runs after this one succeeds: on the engine
// for a PERFORMANCE step or a forwarded FRUGAL step; after a local success
// of a FRUGAL step it is executed by Execute (locally if FRUGAL, submitted
// if PERFORMANCE). A nil step clears it.
func (s *Step) OnSuccess(step *Step) *Step {
	s.onSuccess = step
	return s
}

// OnFailure sets the step that runs after every execution path of this one
// failed: on the engine for a submitted job; after a FRUGAL step's local
// failure with a status not in FallbackOnError it is executed by Execute. A
// nil step clears it.
func (s *Step) OnFailure(step *Step) *Step {
	s.onFailure = step
	return s
}

// OnFailureTimeout bounds how long the engine waits before declaring the
// job failed and spawning OnFailure (sent in whole milliseconds). Negative
// values are an error on field "on_failure_timeout_ms".
func (s *Step) OnFailureTimeout(d time.Duration) *Step {
	if d < 0 {
		return s.fail("on_failure_timeout_ms", "negative (%v)", d)
	}
	s.onFailureTimeout = d
	return s
}

func cloneWebhook(w Webhook) Webhook {
	w.Regions = slices.Clone(w.Regions)
	if w.HasQuorumVote != nil {
		w.HasQuorumVote = Bool(*w.HasQuorumVote)
	}
	return w
}

// maxStepCount bounds the number of steps in one workflow tree.
const maxStepCount = 1000

// node is a step resolved within its workflow: inherited settings filled in,
// fallbacks flattened into one chain.
type node struct {
	s        *Step
	path     string // field path of the step's job, e.g. "on_success.fallback_job"
	client   *Client
	typ      StepType
	strategy IdempotentStrategy
	maxBody  int64
	chain    []chainEntry // the flattened fallback chain (not for chain entries themselves)
	// onSuccess and onFailure are the resolved children.
	onSuccess, onFailure *node
}

type chainEntry struct {
	n       *node
	trigger *Trigger
}

type resolver struct {
	stack map[*Step]bool // ancestors, to catch cycles
	count int
}

// resolve builds the node of s, whose job sits at path, inheriting from
// parent (nil for the root).
func (r *resolver) resolve(s *Step, parent *node, path string, depth int, withChain bool) (*node, error) {
	if r.stack[s] {
		return nil, invalid(path, "the step contains itself (cycle)")
	}
	if depth > maxJobDepth {
		return nil, invalid(path, "steps nested deeper than %d", maxJobDepth)
	}
	if r.count++; r.count > maxStepCount {
		return nil, invalid(path, "more than %d steps in one workflow", maxStepCount)
	}
	if s.err != nil {
		e := *s.err
		e.Field = fieldPath(path, e.Field)
		return nil, &e
	}
	n := &node{s: s, path: path, client: s.client, typ: s.typ, strategy: s.strategy, maxBody: s.maxBody}
	if parent != nil {
		if n.client == nil {
			n.client = parent.client
		}
		if !s.typeSet {
			n.typ = parent.typ
		}
		if !s.strategySet {
			n.strategy = parent.strategy
		}
		if n.maxBody == 0 {
			n.maxBody = parent.maxBody
		}
	}
	if n.maxBody == 0 {
		n.maxBody = DefaultMaxResponseBody
	}
	r.stack[s] = true
	defer delete(r.stack, s)
	if withChain {
		chain, err := r.flatten(s, n, path, depth, nil)
		if err != nil {
			return nil, err
		}
		n.chain = chain
	}
	var err error
	if s.onSuccess != nil {
		if n.onSuccess, err = r.resolve(s.onSuccess, n, fieldPath(path, "on_success"), depth+1, true); err != nil {
			return nil, err
		}
	}
	if s.onFailure != nil {
		if n.onFailure, err = r.resolve(s.onFailure, n, fieldPath(path, "on_failure"), depth+1, true); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// flatten appends the fallbacks of s (owner node n) to chain, each followed
// by its own fallbacks. The k-th entry of the chain of the job at base sits
// at base + ".fallback_job" k times.
func (r *resolver) flatten(s *Step, n *node, base string, depth int, chain []chainEntry) ([]chainEntry, error) {
	for _, f := range s.fallbacks {
		path := base
		for range len(chain) + 1 {
			path = fieldPath(path, "fallback_job")
		}
		if r.stack[f.step] {
			return nil, invalid(path, "the step contains itself (cycle)")
		}
		fn, err := r.resolve(f.step, n, path, depth+len(chain)+1, false)
		if err != nil {
			return nil, err
		}
		chain = append(chain, chainEntry{n: fn, trigger: f.trigger})
		r.stack[f.step] = true
		chain, err = r.flatten(f.step, fn, base, depth, chain)
		delete(r.stack, f.step)
		if err != nil {
			return nil, err
		}
	}
	return chain, nil
}

// prepare resolves the workflow of s and returns its root node and the full
// job tree, validated for the root client's dialect.
func (s *Step) prepare() (*node, *Job, error) {
	if s == nil {
		return nil, nil, invalid("step", "nil step")
	}
	r := &resolver{stack: make(map[*Step]bool)}
	root, err := r.resolve(s, nil, "", 0, true)
	if err != nil {
		return nil, nil, err
	}
	if root.client == nil {
		return nil, nil, invalid("client", "the step has no client (use NewStep(client) or Client.Step())")
	}
	job := root.job(root.chain)
	if err := job.ValidateFor(root.client.Dialect()); err != nil {
		return nil, nil, err
	}
	return root, job, nil
}

// Job returns the job the step submits when executed as a PERFORMANCE step
// (for a FRUGAL step: the job it forwards when its local attempt fails and no
// fallback was tried locally), with the whole tree of fallbacks, OnSuccess
// and OnFailure, validated for the client's dialect. With IdempotentUnique
// every call returns fresh keys. Nothing is sent.
func (s *Step) Job() (*Job, error) {
	_, job, err := s.prepare()
	if err != nil {
		return nil, err
	}
	return job, nil
}

// job builds the engine job of n with the given fallback chain.
func (n *node) job(chain []chainEntry) *Job {
	s := n.s
	j := &Job{
		URL:              s.url,
		Method:           s.method,
		Body:             s.body,
		WebhookQuorum:    s.quorum,
		Regions:          slices.Clone(s.regions),
		RegionPolicy:     s.regionPolicy,
		ExecutionMode:    s.execMode,
		OnFailureTimeout: s.onFailureTimeout,
		RetryAt:          s.retryAt,
		IdempotentKey:    n.idempotentKey(),
	}
	if len(s.headers) > 0 {
		j.Headers = maps.Clone(s.headers)
	}
	if len(s.metadata) > 0 {
		j.Metadata = make(map[string]any, len(s.metadata))
		for k, v := range s.metadata {
			j.Metadata[k] = cloneValue(v)
		}
	}
	for _, w := range s.webhooks {
		j.Webhooks = append(j.Webhooks, cloneWebhook(w))
	}
	if s.retryPolicy != nil {
		rp := *s.retryPolicy
		rp.RetryCodes = slices.Clone(rp.RetryCodes)
		rp.RerouteCodes = slices.Clone(rp.RerouteCodes)
		j.RetryPolicy = &rp
	}
	if len(chain) > 0 {
		e := chain[0]
		f := &Fallback{Job: e.n.job(chain[1:])}
		if e.trigger != nil {
			t := *e.trigger
			t.Codes = slices.Clone(t.Codes)
			f.Trigger = &t
		}
		j.Fallback = f
	}
	if n.onSuccess != nil {
		j.OnSuccess = n.onSuccess.job(n.onSuccess.chain)
	}
	if n.onFailure != nil {
		j.OnFailure = n.onFailure.job(n.onFailure.chain)
	}
	return j
}

// idempotentKey applies protocol §3: an explicit key, else the
// Idempotency-Key header, else a fresh UUID for IdempotentUnique, else ""
// (HASH: the engine derives it on Cloud, Submit on self-hosted).
func (n *node) idempotentKey() string {
	if n.s.key != "" {
		return n.s.key
	}
	if k := headerKey(n.s.headers); k != "" {
		return k
	}
	if n.strategy == IdempotentUnique {
		return UniqueKey()
	}
	return ""
}

// String describes the step for debugging (method and URL without the
// query, which may carry credentials).
func (s *Step) String() string {
	if s == nil {
		return "<nil step>"
	}
	typ := s.typ.String()
	if !s.typeSet {
		typ = "inherited/" + typ
	}
	return fmt.Sprintf("ezclient.Step{%s %s, type: %s}", normalizeMethod(s.method), safeURL(s.url), typ)
}
