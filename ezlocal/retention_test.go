package ezlocal

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

func TestWithMaxFinishedJobsValidation(t *testing.T) {
	_, err := New(WithMaxFinishedJobs(-1))
	require.ErrorContains(t, err, "WithMaxFinishedJobs")
	e, err := New(WithMaxFinishedJobs(0))
	require.NoError(t, err)
	require.NoError(t, e.Close())
}

// getStatus answers GET path on the engine: status and body.
func getStatus(t *testing.T, e *Engine, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(e.URL() + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// streamStatus returns the status GET path/stream answers, without reading
// the stream.
func streamStatus(t *testing.T, e *Engine, path string) int {
	t.Helper()
	resp, err := http.Get(e.URL() + path + "/stream")
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// With WithMaxFinishedJobs(n), the n jobs that settled last are kept and
// the earlier ones are forgotten everywhere, like IDs never issued.
func TestMaxFinishedJobsDropsEarliestSettled(t *testing.T) {
	const keep, total = 3, 10
	e, _ := startEngine(t, WithMaxFinishedJobs(keep))
	dst := okServer(t)
	hooks := []ezclient.Webhook{{URL: newReceiver(t, nil).URL}}
	c, err := ezclient.New(ezclient.WithSelfHosted(e.URL(), "u"), ezclient.WithRetry(1, 0, 0))
	require.NoError(t, err)
	ctx := context.Background()
	var ids []string
	for i := range total {
		sub, err := c.Submit(ctx, &ezclient.Job{URL: dst.URL + "/" + strconv.Itoa(i), IdempotentKey: "k" + strconv.Itoa(i), Webhooks: hooks})
		require.NoError(t, err)
		waitJob(t, e, sub.JobID)
		ids = append(ids, sub.JobID)
	}
	require.NoError(t, e.WaitIdle(ctx))

	var kept []string
	for _, ji := range e.Jobs() {
		kept = append(kept, ji.ID)
	}
	assert.Equal(t, ids[total-keep:], kept, "the last jobs to settle are kept, in submission order")
	assert.Equal(t, total, e.JobsSubmitted())

	unknownCode, unknownBody := getStatus(t, e, "/jobs/never-issued")
	require.Equal(t, http.StatusNotFound, unknownCode)
	streamUnknownCode := streamStatus(t, e, "/jobs/never-issued")
	for i, id := range ids {
		_, found := e.Job(id)
		_, byKey := e.JobByKey(ezclient.DialectSelfHosted, "u", "k"+strconv.Itoa(i))
		_, waitErr := e.WaitJob(ctx, id)
		code, body := getStatus(t, e, "/jobs/"+id)
		streamCode := streamStatus(t, e, "/jobs/"+id)
		_, clientErr := c.GetJob(ctx, id)
		if i >= total-keep {
			assert.True(t, found, "job %d kept", i)
			assert.True(t, byKey)
			assert.NoError(t, waitErr)
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, http.StatusOK, streamCode)
			assert.NoError(t, clientErr)
			continue
		}
		assert.False(t, found, "job %d dropped", i)
		assert.False(t, byKey, "its idempotent key is forgotten")
		assert.ErrorIs(t, waitErr, ErrJobNotFound)
		assert.Equal(t, unknownCode, code, "a dropped job's status answers as an unknown job's")
		assert.Equal(t, unknownBody, body)
		assert.Equal(t, streamUnknownCode, streamCode)
		assert.ErrorIs(t, clientErr, ezclient.ErrNotFound)
	}

	// A dropped job's key is free again: resubmitting it starts a new job;
	// a kept job's key still de-duplicates.
	again, err := c.Submit(ctx, &ezclient.Job{URL: dst.URL + "/0", IdempotentKey: "k0", Webhooks: hooks})
	require.NoError(t, err)
	assert.NotEqual(t, ids[0], again.JobID)
	dup, err := c.Submit(ctx, &ezclient.Job{URL: dst.URL + "/9", IdempotentKey: "k9", Webhooks: hooks})
	require.NoError(t, err)
	assert.Equal(t, ids[9], dup.JobID)
	waitJob(t, e, again.JobID)
}

// Jobs still running are never dropped, whatever the bound; the order of
// settlement, not of submission, decides which go.
func TestMaxFinishedJobsKeepsRunningJobs(t *testing.T) {
	e, _ := startEngine(t, WithMaxFinishedJobs(1))
	release := make(chan struct{})
	slow := server(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	dst := okServer(t)
	ctx := context.Background()
	first, err := e.submit(ezclient.DialectCloud, "cus", "slow", &ezclient.Job{URL: slow.URL}, "", "")
	require.NoError(t, err)
	waited := make(chan JobInfo, 1)
	go func() {
		ji, err := e.WaitJob(ctx, first.job.id)
		assert.NoError(t, err)
		waited <- ji
	}()
	var last string
	for i := range 5 {
		sr, err := e.submit(ezclient.DialectCloud, "cus", fmt.Sprint(i), &ezclient.Job{URL: dst.URL}, "", "")
		require.NoError(t, err)
		waitJob(t, e, sr.job.id)
		last = sr.job.id
		_, ok := e.Job(first.job.id)
		require.True(t, ok, "a running job is kept")
	}
	close(release)
	ji := <-waited
	// WaitJob reports the job it waited for even when it is dropped right
	// after settling.
	assert.Equal(t, first.job.id, ji.ID)
	assert.True(t, ji.Settled)
	require.NoError(t, e.WaitIdle(ctx))
	_, ok := e.Job(last)
	assert.False(t, ok, "the slow job settled last, so the previous one is dropped")
	_, ok = e.Job(first.job.id)
	assert.True(t, ok)
}

// The bound holds the engine's bookkeeping, not only its lookups, to O(n).
func TestMaxFinishedJobsBoundsMemory(t *testing.T) {
	const keep, total = 20, 500
	e, _ := startEngine(t, WithMaxFinishedJobs(keep), WithDefaultPace(1e6, 64))
	dst := okServer(t)
	for i := range total {
		_, err := e.submit(ezclient.DialectCloud, "cus", fmt.Sprint(i), &ezclient.Job{URL: dst.URL}, "", "")
		require.NoError(t, err)
	}
	require.NoError(t, e.WaitIdle(context.Background()))
	e.mu.Lock()
	defer e.mu.Unlock()
	assert.Len(t, e.jobs, keep)
	assert.Len(t, e.byKey, keep)
	assert.LessOrEqual(t, len(e.order), 2*keep+1)
	assert.LessOrEqual(t, len(e.settledQ), 2*keep+1)
	assert.Equal(t, len(e.order)-keep, e.nDropped)
}

// BenchmarkRetainedPerJob measures the heap an engine keeps after 20,000
// small jobs have settled, unbounded (the default) and with
// WithMaxFinishedJobs(1000).
//
//	go test -run '^$' -bench RetainedPerJob -benchtime 1x ./ezlocal/
func BenchmarkRetainedPerJob(b *testing.B) {
	for _, keep := range []int{0, 1000} {
		b.Run(fmt.Sprintf("max=%d", keep), func(b *testing.B) {
			const n = 20000
			dst := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"ok":true}`) })
			var retained float64
			for range b.N {
				srv := httptest.NewServer(dst)
				e, err := New(WithClock(instantClock{}), WithDefaultPace(1e6, 64), WithMaxFinishedJobs(keep))
				if err != nil {
					b.Fatal(err)
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for i := range n {
					if _, err := e.submit(ezclient.DialectCloud, "cus", fmt.Sprint(i), &ezclient.Job{URL: srv.URL}, "", ""); err != nil {
						b.Fatal(err)
					}
				}
				if err := e.WaitIdle(context.Background()); err != nil {
					b.Fatal(err)
				}
				e.hc.CloseIdleConnections()
				runtime.GC()
				runtime.ReadMemStats(&after)
				retained += float64(after.HeapAlloc) - float64(before.HeapAlloc)
				runtime.KeepAlive(e)
				_ = e.Close()
				srv.Close()
			}
			b.ReportMetric(retained/float64(b.N)/(1<<20), "MiB-retained")
			b.ReportMetric(retained/float64(b.N)/n, "B/job")
		})
	}
}
