package redislimit

import (
	"encoding/binary"
	"testing"
)

// FuzzParseDecision: the acquire script's reply (from Redis, shared with
// every other process) is checked, never trusted: any six integers give a
// decision with non-negative waits, or an error.
func FuzzParseDecision(f *testing.F) {
	add := func(v ...int64) {
		b := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
		}
		f.Add(b)
	}
	add(0, 1500, reasonRate, 50_000, 2, 0)
	add(1, 0, 0, 0, 2, 1)
	add(0, 1<<62, reasonSlots, 1<<62, 0, 0)
	add(1, -1, 0, 0, 0, 7)
	f.Fuzz(func(t *testing.T, b []byte) {
		v := make([]int64, len(b)/8)
		for i := range v {
			v[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		d, err := parseDecision(v)
		if err != nil {
			return
		}
		if d.wait < 0 || d.interval < 0 {
			t.Fatalf("negative wait or interval from %v: %+v", v, d)
		}
		if d.reason < 0 || d.reason > reasonSlots {
			t.Fatalf("unknown reason from %v", v)
		}
	})
}
