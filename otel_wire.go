//go:build ezthrottle_wip

package ezthrottle

import (
	"context"
	"math"
	"runtime"
	"weak"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// registerGauges registers the per-host gauges' callback for t. The
// callback holds t weakly, and is unregistered once t is garbage, so a
// Transport never outlives its use because of its meter provider.
func (tm *telemetry) registerGauges(t *Transport) {
	wp := weak.Make(t)
	reg, err := tm.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if tt := wp.Value(); tt != nil {
			tt.tel.observeHosts(o, tt)
		}
		return nil
	}, tm.rateGauge, tm.slotsGauge)
	if err != nil || reg == nil {
		return
	}
	runtime.AddCleanup(t, func(r metric.Registration) { _ = r.Unregister() }, reg)
}

// statser is implemented by limiters that can report a host's state
// (*MemoryLimiter does).
type statser interface {
	Stats(key string) (HostStats, bool)
}

// observeHosts reports the limits in force of every host: those the
// MemoryLimiter tracks, or those this Transport has called (asking the
// limiter's Stats method when it has one, else the configured limit).
func (tm *telemetry) observeHosts(o metric.Observer, t *Transport) {
	var sumRate float64
	var sumSlots int64
	var anyRate, anySlots bool
	emit := func(key string, s HostStats) {
		paced := s.Rate > 0 && !math.IsInf(s.Rate, 1) && !math.IsNaN(s.Rate)
		if !tm.hostAttr {
			if paced {
				sumRate, anyRate = sumRate+s.Rate, true
			}
			if s.MaxInFlight > 0 {
				sumSlots, anySlots = sumSlots+int64(s.MaxInFlight), true
			}
			return
		}
		opt := metric.WithAttributeSet(attribute.NewSet(AttrHost.String(key)))
		if paced {
			o.ObserveFloat64(tm.rateGauge, s.Rate, opt)
		}
		if s.MaxInFlight > 0 {
			o.ObserveInt64(tm.slotsGauge, int64(s.MaxInFlight), opt)
		}
	}
	if t.mem != nil {
		for _, k := range t.mem.keys() {
			if s, ok := t.mem.Stats(k); ok {
				emit(k, s)
			}
		}
	} else {
		st, _ := t.limiter.(statser)
		for _, hi := range t.cachedHosts() {
			if st != nil {
				if s, ok := st.Stats(hi.key); ok {
					emit(hi.key, s)
				}
				continue
			}
			emit(hi.key, HostStats{Rate: hi.limit.Rate, Burst: int(hi.limit.burst()), MaxInFlight: hi.limit.MaxInFlight})
		}
	}
	if anyRate {
		o.ObserveFloat64(tm.rateGauge, sumRate)
	}
	if anySlots {
		o.ObserveInt64(tm.slotsGauge, sumSlots)
	}
}

// keys returns the keys of the hosts the limiter tracks.
func (m *MemoryLimiter) keys() []string {
	var out []string
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		for k := range s.hosts {
			out = append(out, k)
		}
		s.mu.RUnlock()
	}
	return out
}

// cachedHosts returns the hosts in the Transport's host cache.
func (t *Transport) cachedHosts() []*hostInfo {
	var out []*hostInfo
	for i := range t.keys {
		s := &t.keys[i]
		s.mu.RLock()
		for _, hi := range s.m {
			out = append(out, hi)
		}
		s.mu.RUnlock()
	}
	return out
}

