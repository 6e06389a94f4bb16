package ezclient

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nestedJob returns a job nested depth levels deep through key
// ("on_success", "on_failure" or "fallback_job"), each level padded with
// pad bytes of URL, followed by tail.
func nestedJob(key string, depth, pad int, tail string) string {
	level := `{"url":"http://h.example/` + strings.Repeat("a", pad) + `","` + key + `":`
	return strings.Repeat(level, depth) + `{"url":"http://h.example/leaf"}` + tail + strings.Repeat("}", depth)
}

// TestJobDecodeStopsAtDepthLimit (issue 14, item 8): a job nested deeper
// than 32 levels, through any of the three nesting keys, is refused by the
// decoder as soon as it reaches level 33: what follows, here invalid JSON,
// is never read. 32 levels still decode.
func TestJobDecodeStopsAtDepthLimit(t *testing.T) {
	for _, key := range []string{"on_success", "on_failure", "fallback_job", "On_Success"} {
		var j Job
		err := j.UnmarshalJSON([]byte(nestedJob(key, 40, 10, `,"x": [[[ not json`)))
		require.ErrorIs(t, err, ErrJobTooDeep, key)
		assert.Contains(t, err.Error(), strings.ToLower(key)+": ")

		require.NoError(t, json.Unmarshal([]byte(nestedJob(key, maxJobDepth, 10, "")), &j), key)
		depth := 0
		for n := &j; n != nil; depth++ {
			switch {
			case n.OnSuccess != nil:
				n = n.OnSuccess
			case n.OnFailure != nil:
				n = n.OnFailure
			case n.Fallback != nil:
				n = n.Fallback.Job
			default:
				n = nil
			}
		}
		assert.Equal(t, maxJobDepth+1, depth, key)
		err = json.Unmarshal([]byte(nestedJob(key, maxJobDepth+1, 10, "")), &j)
		require.True(t, errors.Is(err, ErrJobTooDeep), "%v", err)
	}
}

// TestJobDecodeWorkIsLinear (issue 14, item 8): decoding a job nested 32
// deep, each level carrying 4 KiB, allocates a small multiple of its size;
// decoding each level again from its bytes (the old quadratic decoder)
// allocated tens of times more. Allocation, not time, is measured, so the
// test does not depend on the machine's speed.
func TestJobDecodeWorkIsLinear(t *testing.T) {
	doc := []byte(nestedJob("on_success", maxJobDepth, 4<<10, ""))
	var j Job
	require.NoError(t, j.UnmarshalJSON(doc)) // warm up
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	require.NoError(t, j.UnmarshalJSON(doc))
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	assert.Less(t, allocated, uint64(8*len(doc)), "allocated %d bytes to decode %d", allocated, len(doc))
	t.Logf("allocated %d bytes to decode %d", allocated, len(doc))
}

// BenchmarkJobUnmarshalHostile1MiB: a 1 MiB job nested 9,000 deep (below
// encoding/json's own nesting limit) is refused. Compare with
// BenchmarkJobValid1MiB, the cost of scanning it once.
func BenchmarkJobUnmarshalHostile1MiB(b *testing.B) {
	doc := []byte(nestedJob("on_success", 9000, 80, ""))
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		var j Job
		if err := json.Unmarshal(doc, &j); !errors.Is(err, ErrJobTooDeep) {
			b.Fatal(err)
		}
	}
}

// BenchmarkJobValid1MiB is the baseline of BenchmarkJobUnmarshalHostile1MiB.
func BenchmarkJobValid1MiB(b *testing.B) {
	doc := []byte(nestedJob("on_success", 9000, 80, ""))
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if !json.Valid(doc) {
			b.Fatal("invalid")
		}
	}
}
