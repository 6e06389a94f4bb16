package ezlocal

import (
	"container/list"
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// Bounds of the pace a destination may ask for; values outside are garbage
// and ignored.
const (
	maxPaceRPS         = 10000
	maxPaceConcurrency = 10000
)

// pacer holds one destination host's pace; guarded by Engine.mu. The pace
// (learned from the host's replies) is shared by every region, while each
// region is a separate worker with its own lane: maxConc in flight and one
// start every 1/rps per region, as on the real engine's machines.
type pacer struct {
	rps     float64
	maxConc int
	lanes   map[string]*lane // by region
}

// lane is one region's use of a host. Requests that find no free slot
// wait in FIFO order; a freed slot is handed to the first of them directly
// (it never becomes free for a newcomer to take), so each release wakes
// exactly one waiter and the order of arrival is kept whatever the queue's
// length.
type lane struct {
	next     time.Time // earliest start of the next request
	inflight int       // requests running, including granted waiters
	waiters  list.List // of *laneWaiter, oldest first
}

// laneWaiter is a request waiting for a slot of its lane; guarded by
// Engine.mu.
type laneWaiter struct {
	ready   chan struct{} // closed when granted
	start   time.Time     // the granted slot's start time
	granted bool
	elem    *list.Element
}

// takeLocked books a slot of the lane for a request arriving at now and
// returns its start time: now, or one 1/rps interval after the previous
// start.
func (l *lane) takeLocked(now time.Time, rps float64) time.Time {
	start := now
	if l.next.After(now) {
		start = l.next
	}
	l.next = start.Add(time.Duration(float64(time.Second) / rps))
	l.inflight++
	return start
}

// grantLocked hands free slots to the oldest waiters, one per slot.
func (e *Engine) grantLocked(p *pacer, l *lane) {
	for l.inflight < p.maxConc && l.waiters.Len() > 0 {
		w := l.waiters.Remove(l.waiters.Front()).(*laneWaiter)
		w.start = l.takeLocked(e.now(), p.rps)
		w.granted = true
		close(w.ready)
	}
}

// parsePace reads the pace headers of a destination's reply (protocol §5)
// with the root package's parsers, so the engine and the Transport agree on
// every value: for each value the first valid one of X-Aqueduct-*,
// X-Aquifer-* and X-EZTHROTTLE-* wins, as in the Transport. A
// value that is empty, not a number, not positive, infinite or beyond the
// bounds is ignored (ok = false), so a 0 can never stall a host.
func parsePace(h http.Header) (rps float64, rpsOK bool, conc int, concOK bool) {
	for _, name := range []string{ezthrottle.HeaderAqueductRPS, ezthrottle.HeaderAquiferRPS, ezthrottle.HeaderEZThrottleRPS} {
		if v, ok := ezthrottle.ParseRate(h.Get(name)); ok && v > 0 && v <= maxPaceRPS {
			rps, rpsOK = v, true
			break
		}
	}
	for _, name := range []string{ezthrottle.HeaderAqueductMaxConcurrent, ezthrottle.HeaderAquiferMaxConcurrent, ezthrottle.HeaderEZThrottleMaxConcurrent} {
		if v, ok := ezthrottle.ParseConcurrency(h.Get(name)); ok && v >= 1 && v <= maxPaceConcurrency {
			conc, concOK = v, true
			break
		}
	}
	return
}

func (e *Engine) pacerLocked(host string) *pacer {
	p, ok := e.pacers[host]
	if !ok {
		p = &pacer{rps: e.cfg.rps, maxConc: e.cfg.maxConc, lanes: map[string]*lane{}}
		e.pacers[host] = p
	}
	return p
}

func (p *pacer) lane(region string) *lane {
	l, ok := p.lanes[region]
	if !ok {
		l = &lane{}
		p.lanes[region] = l
	}
	return l
}

// acquire waits for a free slot of host's pace in region: fewer than maxConc
// requests in flight, and 1/rps after the previous start. Waiters are served
// in arrival order. The returned release must be called with the reply's
// header (nil without a reply); it applies the pace headers and reports a
// change as a string ("" for none).
func (e *Engine) acquire(ctx context.Context, region, host string) (release func(http.Header) string, err error) {
	rel := func(h http.Header) string { return e.release(region, host, h) }
	e.mu.Lock()
	p := e.pacerLocked(host)
	l := p.lane(region)
	var start time.Time
	if l.inflight < p.maxConc && l.waiters.Len() == 0 {
		start = l.takeLocked(e.now(), p.rps)
		e.mu.Unlock()
	} else {
		w := &laneWaiter{ready: make(chan struct{})}
		w.elem = l.waiters.PushBack(w)
		e.mu.Unlock()
		select {
		case <-w.ready:
		case <-ctx.Done():
			e.mu.Lock()
			granted := w.granted
			if !granted {
				l.waiters.Remove(w.elem)
			}
			e.mu.Unlock()
			if granted {
				rel(nil) // hand the slot on to the next waiter
			}
			return nil, ctx.Err()
		}
		start = w.start
	}
	if wait := start.Sub(e.now()); wait > 0 {
		if err := e.cfg.clock.Sleep(ctx, wait); err != nil {
			rel(nil)
			return nil, err
		}
	}
	return rel, nil
}

func (e *Engine) release(region, host string, h http.Header) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pacerLocked(host)
	l := p.lane(region)
	l.inflight--
	change := ""
	if h != nil {
		rps, rok, conc, cok := parsePace(h)
		if rok && rps != p.rps {
			change += fmt.Sprintf("rps %g→%g ", p.rps, rps)
			// Re-space every lane's next start by the new interval.
			delta := time.Duration(float64(time.Second)/rps) - time.Duration(float64(time.Second)/p.rps)
			for _, o := range p.lanes {
				o.next = o.next.Add(delta)
			}
			p.rps = rps
		}
		if cok && conc != p.maxConc {
			change += fmt.Sprintf("max_concurrent %d→%d", p.maxConc, conc)
			p.maxConc = conc
		}
	}
	if change == "" {
		e.grantLocked(p, l)
	} else {
		// A raised limit frees slots in every lane of the host.
		for _, o := range p.lanes {
			e.grantLocked(p, o)
		}
	}
	return strings.TrimSpace(change)
}
