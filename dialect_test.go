package ezthrottle_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// unwrapper is a decorator of its own that only unwraps.
type unwrapper struct {
	next  ezthrottle.Submitter
	calls *atomic.Int32
}

func (u unwrapper) Submit(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
	u.calls.Add(1)
	return u.next.Submit(ctx, job)
}

func (u unwrapper) Unwrap() ezthrottle.Submitter { return u.next }

// decorations are the ways to decorate a client: each returns the
// Submitter and counts its calls.
var decorations = []struct {
	name string
	wrap func(cl *ezclient.Client, calls *atomic.Int32) ezthrottle.Submitter
	// opaque: the dialect cannot be told; the Transport finds out from the
	// client's refusal (nothing sent) and submits without metadata.
	opaque bool
}{
	{name: "bare client", wrap: func(cl *ezclient.Client, calls *atomic.Int32) ezthrottle.Submitter {
		return ezthrottle.DecorateSubmitter(cl, func(ctx context.Context, job *ezclient.Job, next ezthrottle.Submitter) (*ezclient.Submission, error) {
			calls.Add(1) // counts only; the test below also uses cl itself
			return next.Submit(ctx, job)
		})
	}},
	{name: "DecorateSubmitter", wrap: func(cl *ezclient.Client, calls *atomic.Int32) ezthrottle.Submitter {
		return ezthrottle.DecorateSubmitter(cl, func(ctx context.Context, job *ezclient.Job, next ezthrottle.Submitter) (*ezclient.Submission, error) {
			calls.Add(1)
			job.Headers["X-Decorated"] = "1"
			return next.Submit(ctx, job)
		})
	}},
	{name: "nested DecorateSubmitter", wrap: func(cl *ezclient.Client, calls *atomic.Int32) ezthrottle.Submitter {
		inner := ezthrottle.DecorateSubmitter(cl, func(ctx context.Context, job *ezclient.Job, next ezthrottle.Submitter) (*ezclient.Submission, error) {
			return next.Submit(ctx, job)
		})
		return ezthrottle.DecorateSubmitter(inner, func(ctx context.Context, job *ezclient.Job, next ezthrottle.Submitter) (*ezclient.Submission, error) {
			calls.Add(1)
			return next.Submit(ctx, job)
		})
	}},
	{name: "SubmitterFunc.WithDialect", wrap: func(cl *ezclient.Client, calls *atomic.Int32) ezthrottle.Submitter {
		return ezthrottle.SubmitterFunc(func(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
			calls.Add(1)
			return cl.Submit(ctx, job)
		}).WithDialect(cl.Dialect())
	}},
	{name: "own decorator with Unwrap", wrap: func(cl *ezclient.Client, calls *atomic.Int32) ezthrottle.Submitter {
		return unwrapper{next: cl, calls: calls}
	}},
	{name: "opaque SubmitterFunc", opaque: true, wrap: func(cl *ezclient.Client, calls *atomic.Int32) ezthrottle.Submitter {
		return ezthrottle.SubmitterFunc(func(ctx context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
			calls.Add(1)
			return cl.Submit(ctx, job)
		})
	}},
}

func headerValueFold(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// Forwarding works through a decorated client under a recording span, in
// both dialects, against the local engine: the trace context goes where
// the engine accepts it (headers and metadata on Cloud, headers only on a
// self-hosted engine), for the Transport and for AutoForward.
func TestDecoratedClientForwardsInBothDialects(t *testing.T) {
	useGlobalPropagator(t, traceProp) // AutoForward's propagators
	e, err := ezlocal.Start()
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-EZThrottle-Job-ID") != "" {
			w.WriteHeader(http.StatusOK) // the engine's call
			return
		}
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(upstream.Close)
	hook := upstream.URL + "/hook"

	clients := map[ezclient.Dialect]*ezclient.Client{}
	cloud, err := ezclient.New(ezclient.WithAPIKey(e.APIKey()), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()))
	require.NoError(t, err)
	clients[ezclient.DialectCloud] = cloud
	self, err := ezclient.New(ezclient.WithSelfHosted(e.URL(), "u1"))
	require.NoError(t, err)
	clients[ezclient.DialectSelfHosted] = self

	check := func(t *testing.T, d ezclient.Dialect, jobID string, caller trace.Span) {
		t.Helper()
		info, ok := e.Job(jobID)
		require.True(t, ok, "the engine has the job")
		assert.Equal(t, d, info.Dialect)
		tid := caller.SpanContext().TraceID().String()
		assert.Contains(t, headerValueFold(info.Spec.Headers, "traceparent"), tid, "the engine's call continues the trace")
		if d == ezclient.DialectSelfHosted {
			assert.Empty(t, info.Spec.Metadata, "self-hosted jobs have no metadata")
		} else {
			tp, _ := info.Spec.Metadata["traceparent"].(string)
			assert.Contains(t, tp, tid, "the webhook can link to the origin")
		}
	}

	var n atomic.Int32
	unique := func(path string) string { // distinct jobs: the engine de-duplicates equal requests
		return upstream.URL + path + "/" + strconv.Itoa(int(n.Add(1)))
	}
	for _, d := range []ezclient.Dialect{ezclient.DialectCloud, ezclient.DialectSelfHosted} {
		cl := clients[d]
		for _, dec := range decorations {
			t.Run(d.String()+"/"+dec.name, func(t *testing.T) {
				var calls atomic.Int32
				s := dec.wrap(cl, &calls)
				if dec.name == "bare client" {
					s = cl
				}
				if !dec.opaque {
					assert.Equal(t, d, ezthrottle.SubmitterDialect(s))
				}

				t.Run("Transport", func(t *testing.T) {
					k := newOtelKit(t)
					tr := mustNew(t, append(k.opts(), ezthrottle.WithForwarding(s, ezthrottle.JobWebhook(hook)))...)
					ctx, caller := k.caller("checkout")
					ctx, rcpt := ezthrottle.WithReceipt(ctx)
					resp, err := get(t, tr, ctx, unique("/v1/charge"))
					caller.End()
					require.NoError(t, err)
					require.NoError(t, resp.Body.Close())
					require.True(t, ezthrottle.IsForwarded(resp), "forwarded; receipt error: %v", rcpt.Err())
					check(t, d, rcpt.JobID(), caller)
				})
				t.Run("AutoForward", func(t *testing.T) {
					k := newOtelKit(t)
					ctx, caller := k.caller("legacy")
					_, sub, err := ezthrottle.AutoForward(ctx, s, forwardJob(ezclient.Job{URL: unique("/v1/legacy"), Method: "GET"}),
						ezthrottle.JobWebhook(hook))
					caller.End()
					require.NoError(t, err)
					require.NotNil(t, sub)
					check(t, d, sub.JobID, caller)
					assert.Len(t, k.spans(ezthrottle.SpanSubmit), 1, "a recording submission span")
				})
				if dec.name != "bare client" {
					want := int32(2)
					if dec.opaque && d == ezclient.DialectSelfHosted {
						want = 4 // each refused once (nothing sent), then submitted without metadata
					}
					assert.Equal(t, want, calls.Load(), "the decoration ran")
				}
			})
		}
	}
}

func TestSubmitterDialect(t *testing.T) {
	self, err := ezclient.New(ezclient.WithSelfHosted("http://127.0.0.1:1", "u1"))
	require.NoError(t, err)
	noop := func(ctx context.Context, job *ezclient.Job, next ezthrottle.Submitter) (*ezclient.Submission, error) {
		return next.Submit(ctx, job)
	}
	var calls atomic.Int32
	tests := []struct {
		name string
		s    ezthrottle.Submitter
		want ezclient.Dialect
	}{
		{"nil", nil, ezclient.DialectCloud},
		{"self-hosted client", self, ezclient.DialectSelfHosted},
		{"plain func", ezthrottle.SubmitterFunc(self.Submit), ezclient.DialectCloud},
		{"func with dialect", ezthrottle.SubmitterFunc(self.Submit).WithDialect(ezclient.DialectSelfHosted), ezclient.DialectSelfHosted},
		{"decorated", ezthrottle.DecorateSubmitter(self, noop), ezclient.DialectSelfHosted},
		{"decorated func with dialect", ezthrottle.DecorateSubmitter(ezthrottle.SubmitterFunc(self.Submit).WithDialect(ezclient.DialectSelfHosted), noop), ezclient.DialectSelfHosted},
		{"own unwrapper", unwrapper{next: ezthrottle.DecorateSubmitter(self, noop), calls: &calls}, ezclient.DialectSelfHosted},
		{"unwrap to nil", unwrapper{calls: &calls}, ezclient.DialectCloud},
		{"cycle", &cycle{}, ezclient.DialectCloud},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, ezthrottle.SubmitterDialect(tt.s), tt.name)
	}
}

// cycle unwraps to itself.
type cycle struct{}

func (*cycle) Submit(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
	return nil, errors.New("no")
}
func (c *cycle) Unwrap() ezthrottle.Submitter { return c }

// The retry without metadata is only for the trace context the Transport
// added: a job's own metadata refused by a self-hosted client is an error,
// and any other failure is not retried.
func TestOpaqueSubmitterRetryIsNarrow(t *testing.T) {
	var calls atomic.Int32
	refuse := ezthrottle.SubmitterFunc(func(_ context.Context, job *ezclient.Job) (*ezclient.Submission, error) {
		calls.Add(1)
		return nil, job.ValidateFor(ezclient.DialectSelfHosted)
	})
	k := newOtelKit(t)
	tr := mustNew(t, append(k.opts(), ezthrottle.WithBase(base429("busy")),
		ezthrottle.WithForwarding(refuse, ezthrottle.JobWebhook("https://hooks.test/x"), ezthrottle.JobMeta("order", "1")))...)
	ctx, caller := k.caller("call")
	defer caller.End()
	ctx, rcpt := ezthrottle.WithReceipt(ctx)
	resp, err := get(t, tr, ctx, "https://api.test/x")
	require.NoError(t, err)
	assert.Equal(t, 429, resp.StatusCode)
	require.NoError(t, resp.Body.Close())
	assert.ErrorIs(t, rcpt.Err(), ezclient.ErrUnsupported)
	assert.Equal(t, int32(1), calls.Load(), "the job's own metadata: no retry")

	calls.Store(0)
	down := ezthrottle.SubmitterFunc(func(context.Context, *ezclient.Job) (*ezclient.Submission, error) {
		calls.Add(1)
		return nil, &ezclient.EngineError{StatusCode: 503}
	})
	tr = mustNew(t, append(k.opts(), ezthrottle.WithBase(base429("busy")), ezthrottle.WithForwarding(down))...)
	resp, err = get(t, tr, ctx, "https://api.test/x")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, int32(1), calls.Load(), "an engine failure: no retry")
}
