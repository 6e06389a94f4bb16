package redislimit

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHostEntriesKeptWhateverTheCount: the Limiter's memory of hosts (their
// Redis keys, built once) has no cliff: with 20,000 hosts in use, called
// round robin, no host's entry is rebuilt while it is used, and a hit
// allocates nothing. A host unused for a whole generation is forgotten.
func TestHostEntriesKeptWhateverTheCount(t *testing.T) {
	l := &Limiter{hosts: make(map[string]*hostEntry)}
	now := time.Unix(1_763_674_210, 0)
	const n = 20000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("https://h%d.example:443", i)
	}
	first := make([]*hostEntry, n)
	for i, h := range names {
		first[i] = l.hostEntry(h, now)
		require.Equal(t, "{"+h+"}:t", first[i].keys.tat)
	}
	for pass := range 3 {
		now = now.Add(time.Minute)
		for i, h := range names {
			require.Same(t, first[i], l.hostEntry(h, now), "pass %d: host %d rebuilt", pass, i)
		}
	}
	allocs := testing.AllocsPerRun(100, func() { l.hostEntry(names[7], now) })
	assert.Zero(t, allocs)

	// Only the even hosts are used for two generations: the odd ones go.
	for range 2 {
		now = now.Add(hostGeneration)
		for i := 0; i < n; i += 2 {
			require.Same(t, first[i], l.hostEntry(names[i], now))
		}
	}
	for i, h := range names {
		if i%2 == 0 {
			assert.Same(t, first[i], l.knownHost(h))
		} else if !assert.Nil(t, l.knownHost(h), "host %d kept", i) {
			break
		}
	}
	assert.Len(t, l.hosts, n/2)
	assert.LessOrEqual(t, len(l.oldHosts), n/2)
}
