package redislimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// Requests of many hosts at once: the calls made while maxCalls are in
// flight go together in pipelines, so there are fewer round trips than
// decisions, and every request is admitted and released.
func TestConcurrentCallsShareRoundTrips(t *testing.T) {
	addr := redisAddr(t)
	l := newTestLimiter(t, newClient(t, addr), WithPrefix(testPrefix(t)))
	ctx := context.Background()
	const goroutines, each = 32, 20
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				key := fmt.Sprintf("https://h%d.example:443", (g+i)%goroutines)
				p, err := l.Acquire(ctx, ezthrottle.Admission{Key: key, Limit: ezthrottle.Limit{Rate: 1e6, Burst: 1e6, MaxInFlight: 1000}})
				if !assert.NoError(t, err) {
					return
				}
				p.Release()
			}
		}()
	}
	wg.Wait()
	s := l.Stats()
	t.Logf("%d decisions, %d round trips", s.Decisions, s.RoundTrips)
	assert.Equal(t, uint64(goroutines*each), s.Decisions)
	assert.Less(t, s.RoundTrips, s.Decisions, "concurrent calls share pipelines")
	assert.Zero(t, s.Errors)
	assert.Zero(t, s.LeasesHeld)
	for g := 0; g < goroutines; g++ {
		releasedEverywhere(t, l, fmt.Sprintf("https://h%d.example:443", g))
	}
	l.disp.mu.Lock()
	defer l.disp.mu.Unlock()
	assert.Zero(t, l.disp.busy)
	assert.Empty(t, l.disp.queue)
}

// A pipeline sends the script by its SHA-1; when Redis does not know it
// (its script cache was flushed, or the script is new), each call is run
// again with the script itself.
func TestPipelineLoadsAnUnknownScript(t *testing.T) {
	addr := redisAddr(t)
	l := newTestLimiter(t, newClient(t, addr), WithPrefix(testPrefix(t)))
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	l.sc.acquire = redis.NewScript(clockSrc + acquireSrc + "-- " + hex.EncodeToString(nonce[:]))
	e := l.hostEntry(host, time.Now())
	lim := ezthrottle.Limit{Rate: 1e6, Burst: 1e6}
	calls := make([]*acall, 3)
	for i := range calls {
		args := append(append([]any{}, e.static(lim, l.cfg.leaseTTL)...), 0, 0, 1, 0, "")
		calls[i] = &acall{keys: e.list, args: args, done: make(chan struct{})}
	}
	l.sendPipeline(calls)
	for i, c := range calls {
		require.NoError(t, c.err, "call %d", i)
		d, err := parseDecision(c.v, 1)
		require.NoError(t, err)
		assert.Equal(t, 1, d.granted)
	}
	for _, c := range calls[1:] {
		select {
		case <-c.done:
		default:
			t.Fatal("a call of the pipeline was not told its result")
		}
	}
}
