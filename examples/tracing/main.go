// Command tracing shows the whole OpenTelemetry trace of a call that is
// throttled, then answered 429 and forwarded to EZThrottle, executed by the
// engine and reported to a webhook: one trace, from the caller's span to the
// webhook receiver.
//
// Everything runs in this process, offline: an httptest API that answers
// 429 to the caller and 200 to the engine, an embedded ezlocal engine and a
// webhook.Handler. Spans are exported as JSON lines to standard output by
// the stdouttrace exporter; a tree of the trace is printed at the end.
//
//	go run ./examples/tracing
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

func main() {
	if err := run(context.Background(), os.Stdout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tracing:", err)
		os.Exit(1)
	}
}

// run performs the scenario, exporting spans as JSON to spansOut and
// printing the trace tree to treeOut.
func run(ctx context.Context, spansOut, treeOut io.Writer) error {
	// One tracer provider for every component. In an application you
	// would set it (and the propagators) globally with otel.SetTracerProvider
	// and otel.SetTextMapPropagator: every component defaults to the globals.
	exp, err := stdouttrace.New(stdouttrace.WithWriter(spansOut))
	if err != nil {
		return err
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

	// The API: 429 to the application's second call, 200 to everything else
	// (including the engine's call, which carries X-EZThrottle-Job-ID).
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-EZThrottle-Job-ID") == "" && calls.Add(1) == 2 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer api.Close()

	// The webhook receiver, in its own server (otelhttp is optional here:
	// the Handler continues the delivery's trace context by itself).
	hook, err := webhook.NewHandler(webhook.WithTracerProvider(tp), webhook.WithPropagators(prop))
	if err != nil {
		return err
	}
	defer hook.Close()
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()

	// The embedded engine.
	engine, err := ezlocal.Start(ezlocal.WithTracerProvider(tp), ezlocal.WithPropagators(prop))
	if err != nil {
		return err
	}
	defer engine.Close()

	// The ezclient.Client the Transport forwards with; its HTTP calls to the
	// engine are traced by otelhttp.
	client, err := ezclient.New(ezclient.WithAPIKey(engine.APIKey()),
		ezclient.WithProxyURL(engine.URL()), ezclient.WithEngineURL(engine.URL()),
		ezclient.WithHTTPClient(&http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport,
			otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(prop))}))
	if err != nil {
		return err
	}

	// The Transport: 5 requests per second to the API (so the second call
	// waits ~200 ms for its turn), forwarding 429s to the engine with a
	// webhook. otelhttp outside the Transport: one client span per logical
	// call, on which the Transport records its attributes.
	tr, err := ezthrottle.New(
		ezthrottle.WithDefaultLimit(ezthrottle.Limit{Rate: 5, Burst: 1, MaxInFlight: 1}),
		ezthrottle.WithClient(client, ezthrottle.JobWebhook(hookSrv.URL)),
		ezthrottle.WithTracerProvider(tp), ezthrottle.WithPropagators(prop),
	)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: otelhttp.NewTransport(tr, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(prop))}

	ctx, root := tp.Tracer("example").Start(ctx, "checkout")
	var jobID string
	for i := 1; i <= 2; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.URL+"/v1/charges",
			strings.NewReader("amount=100"))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer sk_test_never_in_a_span")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("order-42-%d", i))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if info, ok := ezthrottle.JobFromResponse(resp); ok {
			jobID = info.JobID()
			fmt.Fprintf(treeOut, "call %d: forwarded (%s %s) as job %s\n", i, info.Reason, resp.Header.Get(ezthrottle.HeaderUpstreamStatus), jobID)
		} else {
			fmt.Fprintf(treeOut, "call %d: %d\n", i, resp.StatusCode)
		}
	}
	root.End()
	if jobID == "" {
		return errors.New("the second call was not forwarded")
	}

	// Wait for the webhook, then for the engine to settle (its spans end
	// when the delivery is done).
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := hook.WaitJob(wctx, jobID)
	if err != nil {
		return err
	}
	if _, err := engine.WaitJob(wctx, jobID); err != nil {
		return err
	}
	fmt.Fprintf(treeOut, "webhook: job %s %s (API answered %d)\n\n", res.JobID, res.Status, res.StatusCode)
	printTree(treeOut, rec.Ended(), root.SpanContext().TraceID())
	return nil
}

// printTree prints the spans of one trace as an indented tree, with their
// durations and a few attributes.
func printTree(w io.Writer, spans []sdktrace.ReadOnlySpan, id trace.TraceID) {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	var roots []sdktrace.ReadOnlySpan
	inTrace := map[trace.SpanID]bool{}
	for _, s := range spans {
		if s.SpanContext().TraceID() == id {
			inTrace[s.SpanContext().SpanID()] = true
		}
	}
	for _, s := range spans {
		if s.SpanContext().TraceID() != id {
			continue
		}
		if p := s.Parent(); p.IsValid() && inTrace[p.SpanID()] {
			children[p.SpanID()] = append(children[p.SpanID()], s)
		} else {
			roots = append(roots, s)
		}
	}
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		var notes []string
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "ezthrottle.throttle.wait":
				notes = append(notes, fmt.Sprintf("%s=%.0fms", kv.Key, kv.Value.AsFloat64()*1000))
			case "ezthrottle.outcome", "ezthrottle.forward.reason", "ezthrottle.job.id",
				"http.response.status_code", "ezthrottle.webhook.status", "ezlocal.region":
				notes = append(notes, string(kv.Key)+"="+kv.Value.String())
			}
		}
		if n := len(s.Links()); n > 0 {
			notes = append(notes, fmt.Sprintf("links=%d", n))
		}
		sort.Strings(notes)
		fmt.Fprintf(w, "%s%s [%s] %s\n", strings.Repeat("  ", depth), s.Name(), s.SpanKind(), strings.Join(notes, " "))
		kids := children[s.SpanContext().SpanID()]
		sort.Slice(kids, func(i, j int) bool { return kids[i].StartTime().Before(kids[j].StartTime()) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
}
