package ezthrottle

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHostInfoSize: an entry of the host cache fills the 256-byte size
// class, whose objects are aligned on cache lines (a smaller one would fall
// in the 240-byte class, whose objects straddle one line more).
func TestHostInfoSize(t *testing.T) {
	size := unsafe.Sizeof(hostInfo{})
	assert.Greater(t, size, uintptr(240))
	assert.LessOrEqual(t, size, uintptr(256))
	assert.Zero(t, unsafe.Offsetof(hostInfo{}.own), "the state first: its two lines are whole")
}

// cacheHosts returns n host names of every shape the cache stores
// differently: short (inline), long (stored apart), with ports, IPv6, in
// upper case, empty.
func cacheHosts(n int) []string {
	hosts := []string{"", "a", "A", "a:443", "[::1]:8443", "[::1]", strings.Repeat("x", hostInline), strings.Repeat("y", hostInline+1)}
	for i := len(hosts); i < n; i++ {
		switch i % 4 {
		case 0:
			hosts = append(hosts, fmt.Sprintf("h%d.example.com", i))
		case 1:
			hosts = append(hosts, fmt.Sprintf("H%d.Example.COM:8080", i))
		case 2:
			hosts = append(hosts, fmt.Sprintf("a-rather-long-host-name-%d.eu-west-1.example.com", i))
		default:
			hosts = append(hosts, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		}
	}
	return hosts
}

// TestHostCacheResolvesEveryHost resolves thousands of hosts of every
// shape, under two schemes, in random order and again: each (host, scheme)
// has exactly one entry, found again on every later request, with the
// right key, and every entry is listed once.
func TestHostCacheResolvesEveryHost(t *testing.T) {
	tr, err := New(WithBase(noBodyRT{}), WithLimiter(nopLimiter{}))
	require.NoError(t, err)
	hosts := cacheHosts(5000)
	type pair struct{ host, scheme string }
	var pairs []pair
	for _, h := range hosts {
		pairs = append(pairs, pair{h, "https"}, pair{h, "http"})
	}
	seen := map[pair]*hostInfo{}
	for round := range 3 {
		rand.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
		for _, p := range pairs {
			u := &url.URL{Scheme: p.scheme, Host: strings.Clone(p.host)}
			hi := tr.hostFor(u)
			require.NotNil(t, hi)
			require.Equal(t, p.host, hi.host)
			require.Equal(t, p.scheme, hi.scheme)
			require.Equal(t, HostKey(u), hi.key)
			if prev, ok := seen[p]; ok {
				require.Same(t, prev, hi, "round %d: %q %s resolved to a new entry", round, p.host, p.scheme)
			}
			seen[p] = hi
		}
	}
	listed := map[*hostInfo]int{}
	tr.forEachCached(func(hi *hostInfo) { listed[hi]++ })
	assert.Len(t, listed, len(seen))
	for p, hi := range seen {
		assert.Equal(t, 1, listed[hi], "%q %s", p.host, p.scheme)
	}
}

// TestHostTableCollisions drives a table with made-up hashes: hosts that
// share a tag, a home slot or both are told apart by their names, and a
// table rebuilt without some of them keeps the rest findable, in order.
func TestHostTableCollisions(t *testing.T) {
	const (
		tagA = uint64(0xdeadbeef) << 32
		tagB = uint64(0x0badf00d) << 32
	)
	home := uint64(5) << 8
	hashes := map[string]uint64{
		"a": tagA | home, // same tag and slot
		"b": tagA | home,
		"c": tagB | home,                // same slot, another tag
		"d": tagA | (home + 1<<8),       // same tag, next slot
		"e": tagA | (home + 1<<8) | 0x7, // as d, another shard bits
	}
	order := []string{"a", "b", "c", "d", "e"}
	tab := newHostTable(0)
	for _, h := range order {
		if tab.full() {
			tab = tab.rebuild(func(*hostInfo) bool { return true }, true)
		}
		hi := newHostInfo(h, "https")
		hi.hash = hashes[h]
		tab.put(hi.hash, hi)
	}
	for _, h := range order {
		hi := tab.lookup(hashes[h], h)
		require.NotNil(t, hi, h)
		assert.Equal(t, h, hi.host)
	}
	assert.Nil(t, tab.lookup(tagA|home, "z"), "same tag and slot, another name")
	assert.Nil(t, tab.lookup(tagA|home, "c"), "a name under another tag")

	// A second scheme for "b" replaces its chain's head in place.
	hb := newHostInfo("b", "http")
	hb.hash, hb.next = hashes["b"], tab.lookup(hashes["b"], "b")
	used := tab.used
	tab.put(hb.hash, hb)
	assert.Equal(t, used, tab.used)
	assert.Same(t, hb, tab.lookup(hashes["b"], "b"))
	assert.Equal(t, "https", tab.lookup(hashes["b"], "b").find("https").scheme)

	nt := tab.rebuild(func(hi *hostInfo) bool { return hi.host != "a" && hi.host != "d" }, false)
	assert.Nil(t, nt.lookup(hashes["a"], "a"))
	assert.Nil(t, nt.lookup(hashes["d"], "d"))
	var kept []string
	for i := range nt.used {
		kept = append(kept, nt.ents[i].Load().host)
	}
	assert.Equal(t, []string{"b", "c", "e"}, kept, "insertion order kept")
	for _, h := range kept {
		assert.NotNil(t, nt.lookup(hashes[h], h), h)
	}
	assert.Same(t, hb, nt.lookup(hashes["b"], "b"), "the whole chain kept")
}

// TestHostTableSizes: the index stays at most 7/8 full, and grows by
// doubling (amortized constant time per new host).
func TestHostTableSizes(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 100, 448, 449, 10000} {
		tab := newHostTable(n)
		assert.GreaterOrEqual(t, len(tab.ents), n, n)
		assert.LessOrEqual(t, len(tab.ents)*8, len(tab.slots)*7, n)
		assert.Equal(t, uint64(len(tab.slots)-1), tab.mask, n)
		assert.Zero(t, len(tab.slots)&(len(tab.slots)-1), "a power of two")
	}
	tr, err := New(WithBase(noBodyRT{}), WithLimiter(nopLimiter{}))
	require.NoError(t, err)
	rebuilt := 0
	for i := range 20000 {
		s := &tr.keys[0]
		before := s.tab.Load()
		tr.hostFor(&url.URL{Scheme: "https", Host: fmt.Sprintf("h%d", i)})
		if s.tab.Load() != before {
			rebuilt++
		}
	}
	total := 0
	for i := range tr.keys {
		tab := tr.keys[i].tab.Load()
		total += tab.used
		assert.LessOrEqual(t, tab.used*8, len(tab.slots)*7)
		assert.Less(t, len(tab.slots), 16*max(tab.used, minHostTable), "shard %d: %d slots for %d hosts", i, len(tab.slots), tab.used)
	}
	assert.Equal(t, 20000, total)
	assert.Less(t, rebuilt, 12, "shard 0 rebuilt %d times for ~80 hosts", rebuilt)
}

// TestHostCacheConcurrent resolves overlapping hosts from many goroutines
// (run with -race): every goroutine gets the same entry for a host, whether
// it found it, added it, or lost the race to add it.
func TestHostCacheConcurrent(t *testing.T) {
	tr, err := New(WithBase(noBodyRT{}), WithLimiter(nopLimiter{}))
	require.NoError(t, err)
	hosts := cacheHosts(3000)
	var first sync.Map // host -> *hostInfo
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 4 * len(hosts) {
				h := hosts[r.IntN(len(hosts))]
				hi := tr.hostFor(&url.URL{Scheme: "https", Host: strings.Clone(h)})
				if hi.host != h || hi.scheme != "https" {
					t.Errorf("%q resolved to %q %s", h, hi.host, hi.scheme)
					return
				}
				if prev, loaded := first.LoadOrStore(h, hi); loaded && prev != hi {
					t.Errorf("%q: two entries", h)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestHostStateInEntry: the MemoryLimiter keeps a host's state in the
// cache entry of the request that created it; a Transport sharing the
// limiter uses that state, not its own entry's storage; once the state is
// evicted, the storage is not used again (a request may still hold it).
func TestHostStateInEntry(t *testing.T) {
	clk := &handClock{t: time.Now()}
	mw, err := Middleware(WithClock(clk), WithIdleTimeout(time.Minute), WithDefaultLimit(Limit{Rate: 1000, Burst: 10}))
	require.NoError(t, err)
	a, b := mw(noBodyRT{}).(*Transport), mw(noBodyRT{}).(*Transport)
	require.Same(t, a.mem, b.mem)
	get := func(tr *Transport, host string) *hostInfo {
		req, err := http.NewRequest(http.MethodGet, "https://"+host+"/", nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return tr.hostFor(req.URL)
	}
	ha := get(a, "api.example.com")
	assert.Same(t, &ha.own, ha.state.Load(), "the state is in the entry")
	hb := get(b, "api.example.com")
	assert.Same(t, &ha.own, hb.state.Load(), "the other Transport uses the same state")
	assert.False(t, hb.own.claimed)

	for range 100 { // idle past the timeout: the state goes
		clk.advance(time.Second)
		get(a, "other.example.com")
	}
	_, ok := a.mem.Stats("https://api.example.com:443")
	require.False(t, ok, "evicted")
	require.True(t, ha.own.evicted)
	ha2 := get(a, "api.example.com")
	st := ha2.state.Load()
	require.NotNil(t, st)
	assert.NotSame(t, &ha.own, st, "evicted storage not used again")
	assert.False(t, st.evicted)
	s, ok := a.mem.Stats("https://api.example.com:443")
	require.True(t, ok)
	assert.Zero(t, s.InFlight)
	assert.Same(t, st, get(b, "api.example.com").state.Load())
}

// TestHostTableLarge fills one table with 200,000 hosts, so that its slots
// keep few tag bits (the position takes the rest): every host is found
// through the tag and its name, and absent names are not.
func TestHostTableLarge(t *testing.T) {
	seed := maphash.MakeSeed()
	tab := newHostTable(0)
	const n = 200000
	for i := range n {
		host := fmt.Sprintf("h%d.example", i)
		if tab.full() {
			tab = tab.rebuild(func(*hostInfo) bool { return true }, true)
		}
		hi := newHostInfo(host, "https")
		hi.hash = maphash.String(seed, host)
		tab.put(hi.hash, hi)
	}
	assert.GreaterOrEqual(t, tab.bits, uint(18))
	for i := range n {
		host := fmt.Sprintf("h%d.example", i)
		hi := tab.lookup(maphash.String(seed, host), host)
		require.NotNil(t, hi, host)
		require.Equal(t, host, hi.host)
	}
	for i := range n / 10 {
		host := fmt.Sprintf("absent%d.example", i)
		require.Nil(t, tab.lookup(maphash.String(seed, host), host), host)
	}
}
