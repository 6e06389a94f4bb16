package redislimit

import (
	"encoding/binary"
	"testing"
)

// FuzzParseDecision: the acquire script's reply (from Redis, shared with
// every other process) is checked, never trusted: any integers give a
// decision with non-negative waits and at most as many turns as were asked
// for, or an error.
func FuzzParseDecision(f *testing.F) {
	add := func(n byte, v ...int64) {
		b := make([]byte, 1+8*len(v))
		b[0] = n
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[1+8*i:], uint64(x))
		}
		f.Add(b)
	}
	add(1, 0, reasonRate, 1500, 50_000, 0)
	add(2, 2, 0, 0, 0, 1, 0, 20_000)
	add(1, 0, reasonSlots, 1<<62, 1<<62, 0)
	add(3, 1, 0, -1, 0, 7, -5)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		n := int(b[0]%64) + 1
		b = b[1:]
		v := make([]int64, len(b)/8)
		for i := range v {
			v[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		d, err := parseDecision(v, n)
		if err != nil {
			return
		}
		if d.wait < 0 || d.interval < 0 {
			t.Fatalf("negative wait or interval from %v: %+v", v, d)
		}
		if d.reason < 0 || d.reason > reasonCost {
			t.Fatalf("unknown reason from %v", v)
		}
		if d.granted > n || len(d.waits) != d.granted {
			t.Fatalf("%d turns for %d asked from %v", d.granted, n, v)
		}
		for _, w := range d.waits {
			if w < 0 {
				t.Fatalf("negative turn wait from %v", v)
			}
		}
	})
}
