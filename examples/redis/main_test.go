package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestExampleRuns(t *testing.T) {
	defer goleak.VerifyNone(t)
	addr := os.Getenv("EZTHROTTLE_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	if err := ping(addr); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must provide Redis at %s: %v", addr, err)
		}
		t.Skipf("skipping: no Redis reachable at %s (set EZTHROTTLE_REDIS_ADDR): %v", addr, err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), addr, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "The API received 24 requests") {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
	m := regexp.MustCompile(`Most in flight at once: (\d+) `).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
	if peak, _ := strconv.Atoi(m[1]); peak > inFlight {
		t.Fatalf("the shared cap (%d) did not hold:\n%s", inFlight, out.String())
	}
}
