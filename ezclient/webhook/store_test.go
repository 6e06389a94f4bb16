package webhook

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func res(jobID, key string) Result {
	return Result{JobID: jobID, IdempotentKey: key, Status: CloudSuccess, Succeeded: true, StatusCode: 200, Form: FormCloud}
}

func TestStoreWaitAfterArrival(t *testing.T) {
	clk := newFakeClock()
	s := NewStore(WithClock(clk.Now))
	defer s.Close()

	added, err := s.Add(res("job_1", "key_1"))
	require.NoError(t, err)
	require.True(t, added)

	for _, k := range []Key{{JobID: "job_1"}, {IdempotentKey: "key_1"}, {JobID: "job_1", IdempotentKey: "other"}, {JobID: "nope", IdempotentKey: "key_1"}} {
		r, err := s.Wait(context.Background(), k)
		require.NoError(t, err, k.String())
		assert.Equal(t, "job_1", r.JobID)
		assert.Equal(t, clk.Now(), r.ReceivedAt)
	}
	// A stored result is returned even with a finished context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := s.WaitJob(ctx, "job_1")
	require.NoError(t, err)
	assert.Equal(t, "job_1", r.JobID)
	r, err = s.WaitKey(ctx, "key_1")
	require.NoError(t, err)
	assert.Equal(t, "job_1", r.JobID)
}

func TestStoreWaitBeforeArrival(t *testing.T) {
	s := NewStore()
	defer s.Close()

	keys := []Key{{JobID: "job_1"}, {IdempotentKey: "key_1"}, {JobID: "job_1", IdempotentKey: "key_1"}, {JobID: "job_1"}}
	type out struct {
		r   Result
		err error
	}
	outs := make(chan out, len(keys))
	for _, k := range keys {
		go func() {
			r, err := s.Wait(context.Background(), k)
			outs <- out{r, err}
		}()
	}
	// Wait until all are registered; no sleeping on wall time.
	require.Eventually(t, func() bool { return s.waiting() == len(keys) }, 10*time.Second, time.Millisecond)
	added, err := s.Add(res("job_1", "key_1"))
	require.NoError(t, err)
	require.True(t, added)
	for range keys {
		o := <-outs
		require.NoError(t, o.err)
		assert.Equal(t, "job_1", o.r.JobID)
	}
	assert.Zero(t, s.waiting(), "woken waiters are unregistered")
}

func TestStoreWaitCancellation(t *testing.T) {
	s := NewStore()
	defer s.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Wait(ctx, Key{JobID: "job_x", IdempotentKey: "key_x"})
		done <- err
	}()
	require.Eventually(t, func() bool { return s.waiting() == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.Zero(t, s.waiting(), "a cancelled waiter leaves nothing behind")
	s.mu.Lock()
	assert.Empty(t, s.jobWaiters)
	assert.Empty(t, s.keyWaiters)
	s.mu.Unlock()

	// Deadline.
	dctx, dcancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer dcancel()
	_, err := s.WaitJob(dctx, "never")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Zero(t, s.waiting())

	// Many cancelled waits do not accumulate.
	for i := range 100 {
		c, cc := context.WithCancel(context.Background())
		cc()
		_, err := s.WaitJob(c, fmt.Sprint("j", i))
		assert.ErrorIs(t, err, context.Canceled)
	}
	assert.Zero(t, s.waiting())

	_, err = s.Wait(context.Background(), Key{})
	assert.ErrorIs(t, err, ErrEmptyKey)
}

func TestStoreDuplicate(t *testing.T) {
	s := NewStore()
	defer s.Close()
	first := res("job_1", "key_1")
	first.Body = "first"
	added, err := s.Add(first)
	require.NoError(t, err)
	require.True(t, added)
	second := res("job_1", "key_1")
	second.Body = "second"
	added, err = s.Add(second)
	require.NoError(t, err)
	assert.False(t, added, "same job ID is a duplicate")
	r, ok := s.Lookup(Key{JobID: "job_1"})
	require.True(t, ok)
	assert.Equal(t, "first", r.Body, "a duplicate changes nothing")

	_, err = s.Add(Result{})
	assert.ErrorIs(t, err, ErrNoJobID)
}

func TestStoreTTLEviction(t *testing.T) {
	clk := newFakeClock()
	s := NewStore(WithClock(clk.Now), WithTTL(time.Minute))
	defer s.Close()

	_, err := s.Add(res("job_1", "key_1"))
	require.NoError(t, err)
	clk.Advance(30 * time.Second)
	_, err = s.Add(res("job_2", "key_2"))
	require.NoError(t, err)
	assert.Equal(t, 2, s.Len())

	clk.Advance(30 * time.Second) // job_1 is now exactly 1 min old
	_, ok := s.Lookup(Key{JobID: "job_1"})
	assert.False(t, ok, "expired by job ID")
	_, ok = s.Lookup(Key{IdempotentKey: "key_1"})
	assert.False(t, ok, "expired by key")
	_, ok = s.Lookup(Key{JobID: "job_2"})
	assert.True(t, ok)
	assert.Equal(t, 1, s.Len())

	// The result has expired, its job ID has not: a redelivery is still a
	// duplicate, for the de-duplication window.
	added, err := s.Add(res("job_1", "key_1"))
	require.NoError(t, err)
	assert.False(t, added, "job IDs outlive a short TTL")
	clk.Advance(DefaultDedupWindow - time.Minute) // job_1 accepted exactly one window ago
	added, err = s.Add(res("job_1", "key_1"))
	require.NoError(t, err)
	assert.True(t, added, "accepted again after the window")

	// A waiter that starts after expiry does not get the old result.
	clk.Advance(2 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.WaitJob(ctx, "job_2")
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, s.Len())
	s.mu.Lock()
	assert.Empty(t, s.byJob)
	assert.Empty(t, s.byKey)
	assert.Zero(t, len(s.order)-s.head)
	s.mu.Unlock()
}

func TestStoreBounded(t *testing.T) {
	s := NewStore(WithMaxResults(3))
	defer s.Close()
	for i := range 200 {
		_, err := s.Add(res(fmt.Sprint("job_", i), fmt.Sprint("key_", i)))
		require.NoError(t, err)
	}
	assert.Equal(t, 3, s.Len())
	for i := range 197 {
		_, ok := s.Lookup(Key{JobID: fmt.Sprint("job_", i)})
		require.False(t, ok, "job_%d should be evicted", i)
	}
	for i := 197; i < 200; i++ {
		_, ok := s.Lookup(Key{JobID: fmt.Sprint("job_", i), IdempotentKey: fmt.Sprint("key_", i)})
		assert.True(t, ok)
	}
	s.mu.Lock()
	assert.Len(t, s.byKey, 3)
	assert.LessOrEqual(t, len(s.order), 3+65, "insertion queue is compacted")
	s.mu.Unlock()
}

func TestStoreResultsAreCopies(t *testing.T) {
	s := NewStore()
	defer s.Close()
	r := res("job_1", "")
	r.Header = http.Header{"A": {"1"}}
	_, err := s.Add(r)
	require.NoError(t, err)
	r.Header.Set("A", "changed by caller")
	got, err := s.WaitJob(context.Background(), "job_1")
	require.NoError(t, err)
	assert.Equal(t, "1", got.Header.Get("A"))
	got.Header.Set("A", "changed by waiter")
	again, _ := s.Lookup(Key{JobID: "job_1"})
	assert.Equal(t, "1", again.Header.Get("A"))
}

func TestStoreSubscribe(t *testing.T) {
	s := NewStore(WithSubscriberBuffer(2))
	defer s.Close()
	_, err := s.Add(res("before", ""))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	ch, unsubscribe := s.Subscribe(ctx)
	defer unsubscribe()
	ch2, unsubscribe2 := s.Subscribe(context.Background())

	for _, id := range []string{"a", "b", "b", "c"} { // b twice: a duplicate is not published
		_, err := s.Add(res(id, ""))
		require.NoError(t, err)
	}
	// Buffer of 2: a and b delivered, c dropped for each subscriber.
	assert.Equal(t, "a", (<-ch).JobID)
	assert.Equal(t, "b", (<-ch).JobID)
	assert.Equal(t, uint64(2), s.Dropped())
	_, ok := s.Lookup(Key{JobID: "c"})
	assert.True(t, ok, "a dropped result is still stored")

	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, open := <-ch:
			return !open
		default:
			return false
		}
	}, 10*time.Second, time.Millisecond, "channel closed when ctx ends")
	unsubscribe() // idempotent after ctx end

	assert.Equal(t, "a", (<-ch2).JobID)
	unsubscribe2()
	unsubscribe2()
	<-ch2 // b
	_, open := <-ch2
	assert.False(t, open, "channel closed by unsubscribe")
	s.mu.Lock()
	assert.Empty(t, s.subs)
	s.mu.Unlock()
}

func TestStoreClose(t *testing.T) {
	s := NewStore()
	ch, unsub := s.Subscribe(context.Background())
	defer unsub()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := s.WaitJob(context.Background(), "never")
		errs <- err
	}()
	require.Eventually(t, func() bool { return s.waiting() == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	wg.Wait()
	assert.ErrorIs(t, <-errs, ErrClosed)
	_, open := <-ch
	assert.False(t, open)
	_, err := s.Add(res("x", ""))
	assert.ErrorIs(t, err, ErrClosed)
	_, err = s.WaitJob(context.Background(), "x")
	assert.ErrorIs(t, err, ErrClosed)
	ch, _ = s.Subscribe(context.Background())
	_, open = <-ch
	assert.False(t, open)
	_, ok := s.Lookup(Key{JobID: "x"})
	assert.False(t, ok)
}

// TestStoreConcurrent hammers the store under -race: many waiters (some
// cancelled), subscribers and duplicate deliveries at once.
func TestStoreConcurrent(t *testing.T) {
	s := NewStore()
	defer s.Close()
	const n = 200
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, unsub := s.Subscribe(ctx)
	defer unsub()
	got := make(chan string, n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			wctx := context.Background()
			if i%5 == 0 {
				c, cc := context.WithCancel(wctx)
				cc()
				wctx = c
			}
			r, err := s.Wait(wctx, Key{JobID: fmt.Sprint("job_", i), IdempotentKey: fmt.Sprint("key_", i)})
			if err == nil {
				got <- r.JobID
			}
		}()
		go func() {
			defer wg.Done()
			for range 2 {
				_, _ = s.Add(res(fmt.Sprint("job_", i), fmt.Sprint("key_", i)))
			}
		}()
	}
	wg.Wait()
	close(got)
	count := 0
	for range got {
		count++
	}
	assert.GreaterOrEqual(t, count, n*4/5)
	assert.Zero(t, s.waiting())
	assert.Equal(t, n, s.Len())
	assert.Equal(t, uint64(n-DefaultSubscriberBuffer), s.Dropped())
	assert.Len(t, sub, DefaultSubscriberBuffer)
}

func TestStoreResultsAreDeepCopies(t *testing.T) {
	s := NewStore()
	defer s.Close()
	r := res("job_m", "key_m")
	r.Metadata = map[string]any{"order": map[string]any{"id": "o1"}, "tags": []any{"a"}}
	_, err := s.Add(r)
	require.NoError(t, err)
	// The caller's own value is not shared with the store.
	r.Metadata["order"].(map[string]any)["id"] = "changed by the producer"

	a, err := s.WaitJob(context.Background(), "job_m")
	require.NoError(t, err)
	a.Metadata["order"].(map[string]any)["id"] = "changed by consumer a"
	a.Metadata["tags"].([]any)[0] = "changed"
	a.Metadata["new"] = true

	b, err := s.WaitJob(context.Background(), "job_m")
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"order": map[string]any{"id": "o1"}, "tags": []any{"a"}}, b.Metadata,
		"one consumer's changes never reach another's copy")
}
