package main

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestRun runs the example and checks that the whole trace is one tree:
// caller → otelhttp client span → throttle wait and engine submission →
// engine job → engine call and webhook delivery → webhook handler.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var spans, tree bytes.Buffer
	require.NoError(t, run(context.Background(), &spans, &tree))
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	out := tree.String()
	t.Log("\n" + out)
	assert.Contains(t, out, "call 1: 200")
	assert.Contains(t, out, "call 2: forwarded (status 429)")
	for _, line := range []string{
		"checkout [internal]",
		"  HTTP POST [client] ezthrottle.forward.reason=status",
		"    ezthrottle.throttle [internal]",
		"    ezthrottle.submit [internal]",
		"      HTTP POST [client] http.response.status_code=200", // the submission's HTTP call
		"      ezlocal.job [consumer]",                           // the engine continues the trace
		"        POST [client] ezlocal.region=iad",               // the engine's call to the API
		"        ezlocal.webhook [client]",
		"          ezthrottle.webhook [server]",
	} {
		assert.Contains(t, "\n"+out, "\n"+line, "trace tree")
	}
	assert.Contains(t, out, "links=1", "the webhook span links to the originating trace")
	assert.Contains(t, spans.String(), `"Name":"ezthrottle.submit"`, "stdout exporter output")
}
