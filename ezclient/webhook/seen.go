package webhook

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"time"
)

// ErrDedupFull matches the *CapacityError returned when the set of
// remembered job IDs is full (WithMaxSeenIDs): the delivery is refused, not
// accepted at the cost of forgetting an ID that may still be redelivered
// or replayed.
var ErrDedupFull = errors.New("webhook: de-duplication capacity reached")

// CapacityError reports that a delivery was refused because the Store
// already remembers as many job IDs as it may (WithMaxSeenIDs). The
// Handler answers it with 503 and a Retry-After of RetryAfter; nothing of
// the delivery is recorded. errors.Is(err, ErrDedupFull) is true.
type CapacityError struct {
	// Limit is the configured bound on remembered job IDs.
	Limit int
	// RetryAfter is how long until the oldest remembered IDs expire and
	// make room (at least one second).
	RetryAfter time.Duration
}

// Error describes the refusal.
func (e *CapacityError) Error() string {
	return fmt.Sprintf("webhook: de-duplication capacity of %d job IDs reached; delivery refused (room in %s)",
		e.Limit, e.RetryAfter)
}

// Is makes errors.Is(err, ErrDedupFull) true.
func (e *CapacityError) Is(target error) bool { return target == ErrDedupFull }

// idHash is a 128-bit keyed hash of a job ID. IDs are remembered by hash:
// a fixed 16 bytes each whatever the ID's length (job IDs come from the
// delivery and have no length limit of their own), with two random
// per-Store seeds so that no sender can aim for a collision.
type idHash [2]uint64

// seenSet remembers job IDs, each until its own expiry instant, in a
// bounded number of entries. It is the single mechanism behind duplicate
// detection (a redelivery within the de-duplication window) and replay
// protection (a captured delivery sent again while its signature is still
// within the tolerance): both carry the job ID of the first delivery.
//
// An ID's expiry is exact (an ID is seen while now < expiry). Memory is
// reclaimed per time bucket: every ID lives in the bucket of its expiry
// instant (buckets are gran wide), and a bucket is dropped once its end
// has passed, so an expired ID occupies memory for at most gran more.
// Pending IDs (claimed by a delivery that is still being processed) count
// against the bound too. Not safe for concurrent use: the Store's mutex
// guards it.
type seenSet struct {
	seeds   [2]maphash.Seed
	max     int
	gran    time.Duration
	ids     map[idHash]int64 // expiry, unix nanoseconds
	pending map[idHash]chan struct{}
	buckets []seenBucket // ascending idx
	peak    int          // len(ids) when ids was last (re)allocated or at its largest since
}

type seenBucket struct {
	idx int64 // the bucket holds expiries in ((idx-1)*gran, idx*gran]
	ids []idHash
}

// seenBuckets is how many buckets a de-duplication window is cut into.
const seenBuckets = 32

func newSeenSet(window time.Duration, limit int) *seenSet {
	gran := max(window/seenBuckets, time.Second)
	return &seenSet{
		seeds:   [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		max:     limit,
		gran:    gran,
		ids:     make(map[idHash]int64),
		pending: make(map[idHash]chan struct{}),
	}
}

func (s *seenSet) hash(id string) idHash {
	return idHash{maphash.String(s.seeds[0], id), maphash.String(s.seeds[1], id)}
}

// seen reports whether h is remembered at now.
func (s *seenSet) seen(h idHash, now time.Time) bool {
	exp, ok := s.ids[h]
	return ok && exp > now.UnixNano()
}

// size is the number of entries held against the bound: remembered IDs
// (including expired ones whose bucket has not ended yet) and pending ones.
func (s *seenSet) size() int { return len(s.ids) + len(s.pending) }

// full returns a *CapacityError when no entry can be added at now.
func (s *seenSet) full(now time.Time) error {
	if s.size() < s.max {
		return nil
	}
	retry := time.Second
	if len(s.buckets) > 0 {
		end := time.Unix(0, s.buckets[0].idx*int64(s.gran))
		d := end.Sub(now)
		retry = max((d+time.Second-1)/time.Second*time.Second, time.Second) // whole seconds, rounded up
	}
	return &CapacityError{Limit: s.max, RetryAfter: retry}
}

// add remembers h until exp. Called only after full returned nil (or for
// an ID that was pending, whose entry is already counted).
func (s *seenSet) add(h idHash, exp time.Time) {
	// An absurd expiry (a tolerance of centuries) is remembered until the
	// end of representable time, not wrapped around into the past.
	n := int64(math.MaxInt64 - 2*int64(s.gran))
	if exp.Before(time.Unix(0, n)) {
		n = exp.UnixNano()
	}
	if old, ok := s.ids[h]; ok && old >= n {
		return
	}
	s.ids[h] = n
	s.peak = max(s.peak, len(s.ids))
	idx := ceilDiv(n, int64(s.gran))
	i, found := slices.BinarySearchFunc(s.buckets, idx, func(b seenBucket, idx int64) int {
		switch {
		case b.idx < idx:
			return -1
		case b.idx > idx:
			return 1
		}
		return 0
	})
	if !found {
		s.buckets = slices.Insert(s.buckets, i, seenBucket{idx: idx})
	}
	s.buckets[i].ids = append(s.buckets[i].ids, h)
}

// sweep drops the buckets that ended at or before now, forgetting their
// expired IDs, and gives memory back once the set has shrunk to a quarter
// of its peak.
func (s *seenSet) sweep(now time.Time) {
	n := now.UnixNano()
	drop := 0
	for drop < len(s.buckets) && s.buckets[drop].idx*int64(s.gran) <= n {
		for _, h := range s.buckets[drop].ids {
			// An ID renewed later lives in a later bucket too: keep it.
			if exp, ok := s.ids[h]; ok && exp <= n {
				delete(s.ids, h)
			}
		}
		s.buckets[drop] = seenBucket{}
		drop++
	}
	if drop > 0 {
		s.buckets = slices.Delete(s.buckets, 0, drop)
	}
	// Go maps do not shrink: reallocate after a burst has expired.
	if s.peak > 1024 && len(s.ids) < s.peak/4 {
		m := make(map[idHash]int64, len(s.ids))
		for h, exp := range s.ids {
			m[h] = exp
		}
		s.ids, s.peak = m, len(m)
	}
}

// claim marks h pending. Its channel is made when a second delivery of
// the ID waits for the claim (waitFor), and closed when the claim is
// settled (committed or released).
func (s *seenSet) claim(h idHash) {
	s.pending[h] = nil
}

// waitFor returns the channel that is closed when the claim on h is
// settled, and false when h is not pending.
func (s *seenSet) waitFor(h idHash) (<-chan struct{}, bool) {
	ch, ok := s.pending[h]
	if ok && ch == nil {
		ch = make(chan struct{})
		s.pending[h] = ch
	}
	return ch, ok
}

// settle ends the claim on h (committed or released) and wakes the
// deliveries waiting for it.
func (s *seenSet) settle(h idHash) {
	if ch, ok := s.pending[h]; ok {
		delete(s.pending, h)
		if ch != nil {
			close(ch)
		}
	}
}

// clear forgets everything and wakes every waiter (Store.Close).
func (s *seenSet) clear() {
	for h := range s.pending {
		s.settle(h)
	}
	s.ids = make(map[idHash]int64)
	s.buckets, s.peak = nil, 0
}

func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a > 0) == (b > 0) {
		q++
	}
	return q
}
