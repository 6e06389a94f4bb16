package ezclient

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// streamStub serves a self-hosted engine from fuzzed bytes: the job's SSE
// stream on the first connection (an engine that keeps sending events on
// every reconnection keeps the client reading, by design), an empty stream
// on the next ones, and the status lookup.
type streamStub struct {
	stream, status string
	code           int
	conns          *int
}

func (s streamStub) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	body, ct, code := s.status, "application/json", http.StatusOK
	if strings.HasSuffix(r.URL.Path, "/stream") {
		body, ct, code = "", "text/event-stream", s.code
		if *s.conns++; *s.conns == 1 {
			body = s.stream
		}
	}
	return &http.Response{StatusCode: code, Header: http.Header{"Content-Type": {ct}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// FuzzStreamJob drives the whole self-hosted stream path (StreamJob and
// WaitJob: SSE parsing, event decoding, status lookups, reconnections) with
// a fuzzed stream, stream status and status reply. It must end (the retry
// budget bounds reconnections), with a terminal event or a typed error.
func FuzzStreamJob(f *testing.F) {
	f.Add("event: queued\ndata: {\"job_id\":\"j\"}\n\nevent: completed\ndata: {\"response_status\":200,\"body\":\"ok\"}\n\n", 200, `{"job_id":"j","status":"completed"}`)
	f.Add(": keepalive\n\n", 200, `{"job_id":"j","status":"failed"}`)
	f.Add("data: {\"type\":\"failed\",\"reason\":\"boom\"}\r\r", 200, `{}`)
	f.Add("event: position\ndata: {\"position\":3}\n\n", 200, `{"job_id":"j","status":"queued"}`)
	f.Add("", 404, `{"error":"not found"}`)
	f.Add("retry: 1\nid: 7\n\n", 503, `not json`)
	f.Add(strings.Repeat("data: x\n", 100), 200, `{"status":"in_flight"}`)
	f.Fuzz(func(t *testing.T, stream string, code int, status string) {
		if code < 100 || code > 599 {
			code = 200
		}
		conns := 0
		c, err := New(withGetenv(fxNoEnv), WithSelfHosted("http://engine.test", "user-1"),
			WithHTTPClient(&http.Client{Transport: streamStub{stream: stream, status: status, code: code, conns: &conns}}),
			WithRetry(3, 0, 0), withSleep(func(ctx context.Context, _ time.Duration) error { return ctx.Err() }))
		if err != nil {
			t.Fatal(err)
		}
		// The bound only guards against a hang; the retry budget ends it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n := 0
		for ev, err := range c.StreamJob(ctx, "job_1") {
			if err != nil {
				if ctx.Err() != nil {
					t.Fatalf("stream did not end on its own: %v", err)
				}
				break
			}
			n++
			if ev.Type == "" {
				t.Fatalf("event without a type: %+v", ev)
			}
			if n > 3*(len(stream)+2) {
				t.Fatalf("more events (%d) than the input can carry", n)
			}
		}
		conns = 0
		ev, err := c.WaitJob(ctx, "job_1")
		switch {
		case err == nil && !ev.Terminal():
			t.Fatalf("WaitJob returned a non-terminal event: %+v", ev)
		case err != nil && ctx.Err() != nil:
			t.Fatalf("WaitJob did not end on its own: %v", err)
		case err != nil:
			var ee *EngineError
			var ae *AuthError
			var re *RateLimitError
			if !errors.Is(err, ErrStreamEnded) && !errors.As(err, &ee) && !errors.As(err, &ae) && !errors.As(err, &re) && !IsUnreachable(err) {
				t.Fatalf("untyped error: %v", err)
			}
		}
	})
}

// FuzzJobDecodeNested checks the one-pass job decoder on any input: it
// never accepts a job nested deeper than the limit, an accepted job
// survives an encode/decode round trip, and json.Unmarshal agrees with
// UnmarshalJSON.
func FuzzJobDecodeNested(f *testing.F) {
	f.Add([]byte(nestedJob("on_success", 3, 1, "")))
	f.Add([]byte(nestedJob("fallback_job", 33, 0, "")))
	f.Add([]byte(`{"url":"https://a.b","fallback_job":{"url":"https://c","trigger":{"type":"on_timeout","timeout_ms":5},"on_failure":{"url":"http://d"}},"ON_SUCCESS":null}`))
	f.Add([]byte(`{"url":"x","metadata":{"a":[1,2,{"b":1e400}]},"retry_at":-1}`))
	f.Add([]byte(`{"on_success":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var j Job
		err := j.UnmarshalJSON(b)
		var viaStd Job
		stdErr := jsonUnmarshal(b, &viaStd)
		if (err == nil) != (stdErr == nil) && stdErr != nil && !strings.Contains(stdErr.Error(), "invalid character") && !strings.Contains(stdErr.Error(), "unexpected end") {
			// json.Unmarshal checks the whole input first; UnmarshalJSON
			// may stop earlier (depth) but never accepts invalid input.
			if err == nil {
				t.Fatalf("UnmarshalJSON accepted what json.Unmarshal refused: %v", stdErr)
			}
		}
		if err != nil {
			return
		}
		if d := jobDepth(&j, 0); d > maxJobDepth {
			t.Fatalf("accepted a job nested %d deep", d)
		}
		out, err := j.MarshalJSON()
		if err != nil {
			return // e.g. metadata that cannot be encoded
		}
		var back Job
		if err := back.UnmarshalJSON(out); err != nil {
			t.Fatalf("round trip failed: %v\n%s", err, out)
		}
	})
}

func jobDepth(j *Job, d int) int {
	if j == nil {
		return d - 1
	}
	m := d
	for _, c := range []*Job{j.OnSuccess, j.OnFailure} {
		m = max(m, jobDepth(c, d+1))
	}
	if j.Fallback != nil {
		m = max(m, jobDepth(j.Fallback.Job, d+1))
	}
	return m
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
