package ezthrottle

import (
	"hash/maphash"
	"math/bits"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The host cache resolves a request's URL to its hostInfo: the host's
// configuration and the default limiter's state, which a request reads on
// every round trip.
//
// It is built for many hosts. With 100,000 hosts in use their entries are
// no longer in the CPU's caches, and what a lookup costs is the cache
// misses it waits for one after the other. The index here is 32 bits per
// slot (about 0.5 MiB for 100,000 hosts) and the entries' pointers are
// dense (0.8 MiB), so both mostly stay in the caches; the entry itself holds the
// host's name (up to hostInline bytes) and the MemoryLimiter's state of
// the host (hostInfo.own), four lines fetched together. With a Go map of
// pointers, a request waited for the map's group (in a table four times
// larger), the entry, then the state, each a miss with 100,000 hosts
// (BenchmarkManyHosts).

const keyShards = 256

// keyShard caches the resolved hosts of one shard, keyed by the URL's raw
// host, in a hostTable read without locks. Entries are added under mu, in
// place or into a table twice as large that then replaces it; idle entries
// are evicted by the Transport's sweeps, which rebuild the table, so that
// it shrinks. Readers of a replaced table may still find an entry evicted
// meanwhile, which is harmless: an entry stays valid, and its limiter state
// reports its own eviction (hostState.evicted).
type keyShard struct {
	tab atomic.Pointer[hostTable]
	mu  sync.Mutex
	_   [48]byte // keep shards on separate cache lines
}

// hostTable is a compact hash table (as Python's dict): the entries (the
// chains of the hosts, one per scheme) are kept in insertion order in ents,
// and an open-addressed index with linear probing maps a host's hash to its
// entry's position. An index slot is 32 bits, a tag from the hash and the
// position, so the index is small (16 slots to a cache line) and a probe
// passing other hosts' slots reads none of their entries; the entries are
// dense, and read in the order they were made when the hosts are called
// round robin. Both stay in the CPU caches far longer than a table of
// pointers would. Slots and entries are never emptied: eviction builds a
// new table.
type hostTable struct {
	mask  uint64          // len(slots) - 1, a power of two minus one
	bits  uint            // log2(len(slots)): the bits of a position+1 in a slot
	slots []atomic.Uint32 // tag<<bits | position+1; 0: empty
	ents  []atomic.Pointer[hostInfo]
	used  int // entries in use; changed under the shard's mu
}

// minHostTable is the size of an empty shard's index.
const minHostTable = 8

// newHostTable returns a table for n entries: the index is at most 7/8
// full with them.
func newHostTable(n int) *hostTable {
	size := minHostTable
	for size/8*7 < n {
		size *= 2
	}
	return &hostTable{mask: uint64(size - 1), bits: uint(bits.TrailingZeros(uint(size))),
		slots: make([]atomic.Uint32, size), ents: make([]atomic.Pointer[hostInfo], size/8*7)}
}

// tag returns the tag of hash h in tab's slots: the top 32-bits bits of
// h (the slot's index comes from its low bits), above the position.
func (tab *hostTable) tag(h uint64) uint32 { return uint32(h>>32) >> tab.bits << tab.bits }

// pos returns the position in ents that slot value v leads to.
func (tab *hostTable) pos(v uint32) uint32 { return v&uint32(tab.mask) - 1 }

// lookup returns the chain of host, whose hash is h, or nil.
func (tab *hostTable) lookup(h uint64, host string) *hostInfo {
	tag := tab.tag(h)
	for i := (h >> 8) & tab.mask; ; i = (i + 1) & tab.mask {
		v := tab.slots[i].Load()
		if v == 0 {
			return nil
		}
		if v&^uint32(tab.mask) == tag {
			if hi := tab.ents[tab.pos(v)].Load(); hi.host == host {
				return hi
			}
		}
	}
}

// put makes hi the chain of its host (hash h); the shard's mu is held and,
// unless the host has a chain already, the table has room for one more
// (see full).
func (tab *hostTable) put(h uint64, hi *hostInfo) {
	tag := tab.tag(h)
	for i := (h >> 8) & tab.mask; ; i = (i + 1) & tab.mask {
		v := tab.slots[i].Load()
		if v == 0 {
			// The entry first, then the slot that leads to it.
			tab.ents[tab.used].Store(hi)
			tab.used++
			tab.slots[i].Store(tag | uint32(tab.used))
			return
		}
		if v&^uint32(tab.mask) == tag {
			if e := &tab.ents[tab.pos(v)]; e.Load().host == hi.host {
				e.Store(hi)
				return
			}
		}
	}
}

// full reports whether the table has no room for one more host.
func (tab *hostTable) full() bool { return tab.used == len(tab.ents) }

// rebuild returns a table holding the chains of tab that keep says to keep,
// in the same order, with room for as many more (grow) or a few.
func (tab *hostTable) rebuild(keep func(*hostInfo) bool, grow bool) *hostTable {
	n := 0
	for i := range tab.used {
		if keep(tab.ents[i].Load()) {
			n++
		}
	}
	nt := newHostTable(n + 1)
	if grow {
		nt = newHostTable(2 * n)
	}
	for i := range tab.used {
		if hi := tab.ents[i].Load(); keep(hi) {
			nt.put(hi.hash, hi)
		}
	}
	return nt
}

// hostInline is how long a host name may be to be stored in its entry
// (longer ones are stored apart, which costs a lookup one more cache miss
// with many hosts). It pads hostInfo to 256 bytes, a size class whose
// objects are aligned on cache lines (TestHostInfoSize).
const hostInline = 20

// hostInfo is the resolved per-host configuration (immutable once
// published), the default limiter's state for the host, and what the cache
// and the live view record of it.
type hostInfo struct {
	// own is storage for the MemoryLimiter's state of the host, which the
	// limiter uses when this entry's request is the one that creates the
	// state (MemoryLimiter.acquire): state then points into the entry
	// itself, and a request reads both together.
	own   hostState
	state atomic.Pointer[hostState] // the state in use, nil until known

	host   string    // raw URL host this entry is for (in hbuf when short)
	scheme string    // raw URL scheme this entry is for
	next   *hostInfo // same raw host, another scheme
	key    string
	limit  Limit
	live   atomic.Pointer[liveHost] // the live view's record of the host (live.go)
	gen    atomic.Uint64            // the cache generation it was last used in
	hash   uint64                   // of host, with the Transport's seed
	// noBudget is set when the host was found to have no LLM budgets:
	// the value of the Transport's llm.version then, plus one (see
	// budgetHost); 0: not looked up.
	noBudget atomic.Uint32
	hbuf     [hostInline]byte
}

// newHostInfo returns an entry for host and scheme.
func newHostInfo(host, scheme string) *hostInfo {
	hi := &hostInfo{scheme: internScheme(scheme)}
	if n := copy(hi.hbuf[:], host); n == len(host) && n > 0 {
		hi.host = unsafe.String(&hi.hbuf[0], n)
	} else {
		hi.host = strings.Clone(host)
	}
	return hi
}

// find returns the entry of the chain for scheme.
func (hi *hostInfo) find(scheme string) *hostInfo {
	for ; hi != nil; hi = hi.next {
		if hi.scheme == scheme {
			return hi
		}
	}
	return nil
}

// hostFor returns the resolved host of u, from a sharded cache whose idle
// entries are evicted (see Transport.gen). The entry resolved last is
// checked first: a client that calls one API (the common case) then needs
// no hashing. A hit writes shared memory only to stamp an entry with a new
// generation, once per generation.
func (t *Transport) hostFor(u *url.URL) *hostInfo {
	g := t.maintainCache()
	if hi := t.hot.Load(); hi != nil && hi.host == u.Host && hi.scheme == u.Scheme {
		hi.touch(g)
		return hi
	}
	h := maphash.String(t.seed, u.Host)
	s := &t.keys[h%keyShards]
	if hi := s.tab.Load().lookup(h, u.Host).find(u.Scheme); hi != nil {
		hi.touch(g)
		hi.warm()
		return hi
	}
	return t.hostMiss(s, h, u, g)
}

// warm reads a word of each line of the entry's limiter state (own, and
// state, the pointer to it) that the request reads next: with many hosts,
// where the entry is not in the CPU's caches, those lines are then fetched
// together with the entry's others rather than one after the other
// (BenchmarkManyHosts: 100k hosts at 1.23-1.30x the 1k-host cost instead of
// 1.32-1.35x). The values are not used.
func (hi *hostInfo) warm() {
	_ = hi.own.inflight.Load()
	_ = hi.state.Load()
}

// internScheme returns the common schemes as constants: comparing a
// request's scheme with an entry's then reads no memory of the entry's own
// (with many hosts, each such read is a cache miss).
func internScheme(s string) string {
	switch s {
	case "https":
		return "https"
	case "http":
		return "http"
	}
	return s
}

// touch stamps hi with generation g.
func (hi *hostInfo) touch(g uint64) {
	if hi.gen.Load() != g {
		hi.gen.Store(g)
	}
}

// maintainCache starts a new generation when the MemoryLimiter has
// completed a sweep pass, runs one step of a pending sweep, and returns the
// current generation. Without a sweep to do it reads three words that
// change only once per generation.
func (t *Transport) maintainCache() uint64 {
	if t.mem != nil {
		if p, seen := t.mem.passes.Load(), t.genPass.Load(); p != seen && t.genPass.CompareAndSwap(seen, p) {
			t.newGeneration()
		}
	}
	if n := t.sweepNext.Load(); n < keyShards && t.sweepNext.CompareAndSwap(n, n+keySweepShards) {
		for i := n; i < n+keySweepShards; i++ {
			t.sweepKeys(&t.keys[i])
		}
	}
	return t.gen.Load()
}

// keySweepShards is how many shards of the host cache one call sweeps: a
// sweep takes keyShards/keySweepShards calls.
const keySweepShards = 32

// newGeneration starts a generation and a sweep of every shard.
func (t *Transport) newGeneration() {
	t.gen.Add(1)
	t.sweepNext.Store(0)
}

// sweepKeys evicts the entries of s not used in the current generation nor
// the one before, into a new table (so the shard's memory shrinks).
func (t *Transport) sweepKeys(s *keyShard) {
	g := t.gen.Load()
	live := func(hi *hostInfo) bool {
		for ; hi != nil; hi = hi.next {
			if hi.gen.Load()+1 >= g { // used in g or g-1 (or stamped since)
				return true
			}
		}
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tab := s.tab.Load()
	for i := range tab.used {
		if !live(tab.ents[i].Load()) {
			s.tab.Store(tab.rebuild(live, false))
			return
		}
	}
}

// hostMiss resolves u (whose host's hash is h) when the table read by
// hostFor did not have it: from the shard's current table, or as a new
// entry.
func (t *Transport) hostMiss(s *keyShard, h uint64, u *url.URL, g uint64) *hostInfo {
	if t.mem == nil {
		t.maybeNewGeneration()
		g = t.gen.Load()
	}
	if hi := s.tab.Load().lookup(h, u.Host).find(u.Scheme); hi != nil {
		hi.touch(g) // added since hostFor's read
		return hi
	}
	key := HostKey(u)
	host, port := splitHostPort(strings.ToLower(u.Host))
	if port == "" {
		port = key[strings.LastIndexByte(key, ':')+1:]
	}
	hi := newHostInfo(u.Host, u.Scheme)
	hi.key, hi.limit, hi.hash = key, t.cfg.limitFor(host, port), h
	hi.gen.Store(g)
	s.mu.Lock()
	defer s.mu.Unlock()
	tab := s.tab.Load()
	chain := tab.lookup(h, u.Host)
	if prev := chain.find(u.Scheme); prev != nil {
		return prev
	}
	hi.next = chain // chains are immutable: prepend
	if chain == nil && tab.full() {
		tab = tab.rebuild(func(*hostInfo) bool { return true }, true)
		tab.put(h, hi) // before the table is published: it has room
		s.tab.Store(tab)
	} else {
		tab.put(h, hi)
	}
	t.hot.Store(hi)
	if chain == nil {
		defer t.armReaper() // after s.mu is released
	}
	return hi
}

// armReaper arms the cache's sweep timer: every IdleTimeout/2 while the
// cache holds entries, it does what the Transport's calls otherwise do (see
// Transport.gen), so that idle entries go whatever the traffic.
func (t *Transport) armReaper() {
	t.reaper.arm(t.clock, t.idleTimeout()/2, t.sweepAll, t.cacheHolds)
}

// sweepAll starts a generation when one is due and sweeps every shard.
func (t *Transport) sweepAll() {
	if t.mem == nil {
		t.maybeNewGeneration()
	}
	t.maintainCache()
	for t.sweepNext.Load() < keyShards {
		t.maintainCache()
	}
}

// cacheHolds reports whether the host cache has any entry.
func (t *Transport) cacheHolds() bool {
	for i := range t.keys {
		s := &t.keys[i]
		s.mu.Lock()
		n := s.tab.Load().used
		s.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// maybeNewGeneration starts a generation when the current one is older than
// half the idle timeout (with a Limiter other than the MemoryLimiter, whose
// passes otherwise start them); called on misses only.
func (t *Transport) maybeNewGeneration() {
	now := t.clock.Now().UnixNano()
	if at := t.genAt.Load(); now-at >= int64(t.idleTimeout()/2) && t.genAt.CompareAndSwap(at, now) {
		t.newGeneration()
	}
}

// idleTimeout is the configured idle timeout, or the default.
func (t *Transport) idleTimeout() time.Duration {
	if t.cfg.idleTimeout > 0 {
		return t.cfg.idleTimeout
	}
	return DefaultIdleTimeout
}

// forEachCached calls f for every entry of the host cache.
func (t *Transport) forEachCached(f func(*hostInfo)) {
	for i := range t.keys {
		s := &t.keys[i]
		s.mu.Lock()
		tab := s.tab.Load()
		for j := range tab.used {
			for hi := tab.ents[j].Load(); hi != nil; hi = hi.next {
				f(hi)
			}
		}
		s.mu.Unlock()
	}
}
