package webhook

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// ErrClosed is returned by a Store or Handler after Close.
var ErrClosed = errors.New("webhook: closed")

// ErrEmptyKey is returned when waiting on a Key with neither a job ID nor an
// idempotent key.
var ErrEmptyKey = errors.New("webhook: empty key (need a job ID or an idempotent key)")

// ErrNoJobID is returned by Store.Add for a Result without a JobID.
var ErrNoJobID = errors.New("webhook: result has no job ID")

// Store keeps recent job results and hands them to waiters and subscribers.
//
// Results expire after a TTL and are bounded in number (oldest evicted
// first). The job IDs of accepted results are remembered apart from the
// results, for the de-duplication window (WithDedupWindow, default 15 min,
// never shorter than the TTL), in a bounded set (WithMaxSeenIDs): a
// result evicted early by count is still recognised as a duplicate.
// Expiry is checked on every operation against the injectable clock, so a
// Store starts no goroutines. A waiter finds a result whether it
// arrived before or after the wait began; a waiter whose context ends is
// removed at once, leaving nothing behind. Safe for concurrent use. Create
// one with NewStore; the zero value is not usable.
type Store struct {
	now    func() time.Time
	ttl    time.Duration
	window time.Duration // how long job IDs are remembered: >= ttl
	max    int
	subBuf int
	logger *slog.Logger
	done   chan struct{}

	mu         sync.Mutex
	closed     bool
	byJob      map[string]*entry
	byKey      map[string]*entry
	order      []*entry // insertion order; order[head:] are live or lazily evicted
	head       int
	jobWaiters map[string]map[*waiter]struct{}
	keyWaiters map[string]map[*waiter]struct{}
	subs       map[*subscription]struct{}
	dropped    uint64
	seen       *seenSet // job IDs accepted within the window, and pending ones
}

type entry struct {
	res     Result
	at      time.Time
	evicted bool
}

type waiter struct {
	key Key
	ch  chan Result // capacity 1; receives at most one value
}

type subscription struct {
	ch   chan Result
	stop func() bool // stops the context.AfterFunc
}

// NewStore returns an empty Store. It honours WithTTL, WithMaxResults,
// WithDedupWindow, WithMaxSeenIDs, WithSubscriberBuffer, WithClock and
// WithLogger.
func NewStore(opts ...Option) *Store {
	return newStore(newConfig(opts))
}

func newStore(c *config) *Store {
	window := max(c.dedupWindow, c.ttl)
	return &Store{
		now:        c.now,
		ttl:        c.ttl,
		window:     window,
		seen:       newSeenSet(window, c.maxSeenIDs),
		max:        c.maxResults,
		subBuf:     c.subBuffer,
		logger:     c.logger,
		done:       make(chan struct{}),
		byJob:      make(map[string]*entry),
		byKey:      make(map[string]*entry),
		jobWaiters: make(map[string]map[*waiter]struct{}),
		keyWaiters: make(map[string]map[*waiter]struct{}),
		subs:       make(map[*subscription]struct{}),
	}
}

// Add stores r and hands a copy to every waiter it matches and every
// subscriber. ReceivedAt is set from the clock when zero.
//
// It returns false, and changes nothing, when r.JobID was already added
// within the de-duplication window (WithDedupWindow; job IDs are
// remembered longer than results, so this holds even after the first
// result was evicted by count or TTL): that is a duplicate delivery. It
// fails with ErrNoJobID for a result without a job ID, with a
// *CapacityError (ErrDedupFull) when the Store already remembers as many
// job IDs as WithMaxSeenIDs allows, and with ErrClosed after Close. While
// a Handler is processing a delivery of the same job ID, Add waits for it.
func (s *Store) Add(r Result) (added bool, err error) {
	c, dup, err := s.reserve(context.Background(), r.JobID)
	if err != nil || dup {
		return false, err
	}
	if err := s.commit(c, r, time.Time{}); err != nil {
		return false, err
	}
	return true, nil
}

// claim is a delivery's hold on a job ID, from the duplicate check to the
// decision to accept the delivery (commit) or refuse it (release). While
// it is held, other deliveries of the same ID wait for the decision.
type claim struct{ h idHash }

// reserve claims id for one delivery. It reports dup when the ID is
// remembered; it waits (bounded by ctx) while another delivery of the ID
// holds a claim, then decides again. Errors: ErrNoJobID, ErrClosed, a
// *CapacityError, or ctx's error.
func (s *Store) reserve(ctx context.Context, id string) (c claim, dup bool, err error) {
	if id == "" {
		return claim{}, false, ErrNoJobID
	}
	h := s.seen.hash(id)
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return claim{}, false, ErrClosed
		}
		now := s.now()
		s.sweep(now)
		if s.seen.seen(h, now) {
			s.mu.Unlock()
			return claim{}, true, nil
		}
		ch, busy := s.seen.waitFor(h)
		if !busy {
			err := s.seen.full(now)
			if err == nil {
				s.seen.claim(h)
			}
			s.mu.Unlock()
			return claim{h: h}, false, err
		}
		s.mu.Unlock()
		select {
		case <-ch: // decided: look again
		case <-ctx.Done():
			return claim{}, false, ctx.Err()
		}
	}
}

// release gives up a claim: the delivery was refused, nothing of it is
// remembered, and a redelivery will be taken as new.
func (s *Store) release(c claim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen.settle(c.h)
}

// commit accepts the claimed delivery: its job ID is remembered until the
// later of now + the de-duplication window and until (a Handler passes the
// instant its signature stops verifying, so that a replay is refused for
// as long as it could pass), and r is stored and handed to waiters and
// subscribers. It fails only with ErrClosed.
func (s *Store) commit(c claim, r Result, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	now := s.now()
	s.sweep(now)
	s.seen.settle(c.h)
	s.seen.add(c.h, later(now.Add(s.window), until))

	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = now
	}
	r = r.clone() // the caller keeps its own Header map
	if old, ok := s.byJob[r.JobID]; ok {
		s.evict(old) // a result kept longer than its ID (cannot happen: window >= TTL)
	}
	e := &entry{res: r, at: now}
	s.byJob[r.JobID] = e
	if r.IdempotentKey != "" {
		s.byKey[r.IdempotentKey] = e // the newest result for a key wins
	}
	s.order = append(s.order, e)
	for len(s.order)-s.head > s.max {
		s.evict(s.order[s.head])
		s.order[s.head] = nil
		s.head++
	}
	s.compact()

	s.wake(s.jobWaiters[r.JobID], r)
	if r.IdempotentKey != "" {
		s.wake(s.keyWaiters[r.IdempotentKey], r)
	}
	for sub := range s.subs {
		select {
		case sub.ch <- r.clone():
		default:
			s.dropped++
			s.logger.LogAttrs(context.Background(), slog.LevelWarn, "ezthrottle webhook: subscriber is not keeping up; result not sent to it",
				slog.String("job_id", r.JobID))
		}
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// wake hands r to every waiter in set and unregisters them. Called with mu
// held. Each waiter's channel has room for the one value it will ever get.
func (s *Store) wake(set map[*waiter]struct{}, r Result) {
	for w := range set {
		s.removeWaiter(w)
		w.ch <- r.clone()
	}
}

// sweep evicts expired results from the front of the insertion order and
// forgets expired job IDs. Called with mu held.
func (s *Store) sweep(now time.Time) {
	for s.head < len(s.order) {
		e := s.order[s.head]
		if !e.evicted && !s.expired(e, now) {
			break
		}
		s.evict(e)
		s.order[s.head] = nil
		s.head++
	}
	s.compact()
	s.seen.sweep(now)
}

func (s *Store) expired(e *entry, now time.Time) bool { return now.Sub(e.at) >= s.ttl }

// evict removes e from the indexes. Called with mu held.
func (s *Store) evict(e *entry) {
	if e.evicted {
		return
	}
	e.evicted = true
	if s.byJob[e.res.JobID] == e {
		delete(s.byJob, e.res.JobID)
	}
	if k := e.res.IdempotentKey; k != "" && s.byKey[k] == e {
		delete(s.byKey, k)
	}
}

// compact reclaims the evicted prefix of order once it dominates.
func (s *Store) compact() {
	if s.head == len(s.order) {
		s.order, s.head = s.order[:0], 0
		return
	}
	if s.head > 64 && s.head*2 > len(s.order) {
		n := copy(s.order, s.order[s.head:])
		clear(s.order[n:])
		s.order, s.head = s.order[:n], 0
	}
}

// lookup finds a live result for k, by job ID first. Called with mu held.
func (s *Store) lookup(k Key, now time.Time) (Result, bool) {
	if k.JobID != "" {
		if e, ok := s.byJob[k.JobID]; ok && !s.expired(e, now) {
			return e.res.clone(), true
		}
	}
	if k.IdempotentKey != "" {
		if e, ok := s.byKey[k.IdempotentKey]; ok && !s.expired(e, now) {
			return e.res.clone(), true
		}
	}
	return Result{}, false
}

// Lookup returns the stored result for k without waiting.
func (s *Store) Lookup(k Key) (Result, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Result{}, false
	}
	now := s.now()
	s.sweep(now)
	return s.lookup(k, now)
}

// Len returns the number of results currently kept.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(s.now())
	return len(s.byJob)
}

// Wait returns the result matching k (see Key), waiting for it to arrive if
// it has not yet. A stored result is returned at once, even when ctx is
// already done. Otherwise Wait blocks until a matching result arrives
// (nil error), ctx ends (ctx.Err()), or the Store is closed (ErrClosed).
// When Wait returns, nothing of it remains registered in the Store.
//
// A result is kept only for the Store's TTL: wait within it.
func (s *Store) Wait(ctx context.Context, k Key) (Result, error) {
	if k.IsZero() {
		return Result{}, ErrEmptyKey
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Result{}, ErrClosed
	}
	now := s.now()
	s.sweep(now)
	if r, ok := s.lookup(k, now); ok {
		s.mu.Unlock()
		return r, nil
	}
	w := &waiter{key: k, ch: make(chan Result, 1)}
	if k.JobID != "" {
		addWaiter(s.jobWaiters, k.JobID, w)
	}
	if k.IdempotentKey != "" {
		addWaiter(s.keyWaiters, k.IdempotentKey, w)
	}
	s.mu.Unlock()

	select {
	case r := <-w.ch:
		return r, nil
	case <-ctx.Done():
	case <-s.done:
	}
	s.mu.Lock()
	s.removeWaiter(w)
	s.mu.Unlock()
	// A result handed over just before the removal wins.
	select {
	case r := <-w.ch:
		return r, nil
	default:
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	return Result{}, ErrClosed
}

// WaitJob waits for the result of the job with this ID (see Wait).
func (s *Store) WaitJob(ctx context.Context, jobID string) (Result, error) {
	return s.Wait(ctx, Key{JobID: jobID})
}

// WaitKey waits for the result of the job with this idempotent key (see
// Wait). Only Cloud payloads carry the key; for self-hosted engines wait
// by job ID.
func (s *Store) WaitKey(ctx context.Context, idempotentKey string) (Result, error) {
	return s.Wait(ctx, Key{IdempotentKey: idempotentKey})
}

func addWaiter(m map[string]map[*waiter]struct{}, k string, w *waiter) {
	set := m[k]
	if set == nil {
		set = make(map[*waiter]struct{})
		m[k] = set
	}
	set[w] = struct{}{}
}

// removeWaiter unregisters w from both indexes. Called with mu held.
func (s *Store) removeWaiter(w *waiter) {
	if k := w.key.JobID; k != "" {
		delWaiter(s.jobWaiters, k, w)
	}
	if k := w.key.IdempotentKey; k != "" {
		delWaiter(s.keyWaiters, k, w)
	}
}

func delWaiter(m map[string]map[*waiter]struct{}, k string, w *waiter) {
	if set, ok := m[k]; ok {
		delete(set, w)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// waiting returns how many Wait calls are registered (tests use it to
// check that nothing leaks).
func (s *Store) waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[*waiter]struct{})
	for _, m := range []map[string]map[*waiter]struct{}{s.jobWaiters, s.keyWaiters} {
		for _, set := range m {
			for w := range set {
				seen[w] = struct{}{}
			}
		}
	}
	return len(seen)
}

// Subscribe returns a channel that receives every result added from now on
// (not duplicates, not results stored before the call), and a function that
// ends the subscription. The channel is closed when ctx ends, when the
// function is called, or when the Store is closed, whichever comes first;
// the function may be called any number of times.
//
// Delivery never blocks the Store: a subscriber whose buffer (see
// WithSubscriberBuffer) is full misses the result, which is logged and
// remains available to Wait and Lookup. Subscribe starts no goroutine that
// outlives ctx or the subscription.
func (s *Store) Subscribe(ctx context.Context) (<-chan Result, func()) {
	sub := &subscription{ch: make(chan Result, s.subBuf)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(sub.ch)
		return sub.ch, func() {}
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.unsubscribe(sub) })
	s.mu.Lock()
	sub.stop = stop
	s.mu.Unlock()
	return sub.ch, func() {
		stop()
		s.unsubscribe(sub)
	}
}

func (s *Store) unsubscribe(sub *subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[sub]; ok {
		delete(s.subs, sub)
		close(sub.ch)
	}
}

// Dropped returns how many results subscribers have missed because their
// buffers were full.
func (s *Store) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Close releases the Store: pending Wait calls return ErrClosed, all
// subscription channels are closed, stored results are dropped, and later
// calls fail with ErrClosed (Lookup finds nothing). Close is idempotent and
// always returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
	for sub := range s.subs {
		if sub.stop != nil {
			sub.stop()
		}
		delete(s.subs, sub)
		close(sub.ch)
	}
	clear(s.jobWaiters)
	clear(s.keyWaiters)
	clear(s.byJob)
	clear(s.byKey)
	s.order, s.head = nil, 0
	s.seen.clear()
	return nil
}
