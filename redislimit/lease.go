package redislimit

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// lease is the Permit of a request admitted under a cap in flight: one
// member of the host's lease set in Redis, scored by its expiry. A live
// Limiter renews it until it is released; if the process dies, it expires
// after the lease TTL and its slot frees itself.
type lease struct {
	l        *Limiter
	host     string // host key, for waking the local gate
	key      string // the host's lease set
	expKey   string // the lease set's expiry record
	id       string
	released atomic.Bool
	// scored is when (local clock) its expiry in Redis was last set to at
	// least a lease TTL ahead; l.lmu guards it.
	scored time.Time
}

// released is a lease released but not yet removed from Redis.
type released struct {
	id     string
	scored time.Time
}

// Release implements ezthrottle.Permit: it frees the slot and wakes the
// next local request of the host. It never waits for Redis: the release
// travels with the next admission call of the host (so a local request
// waiting for the slot gets it in that same call), or, when none comes
// within flushDelay, in the background, in one pipeline with every other
// pending release. It is idempotent. When Redis is unavailable the lease is
// left to expire.
func (p *lease) Release() {
	if !p.released.CompareAndSwap(false, true) {
		return
	}
	l := p.l
	l.lmu.Lock()
	if _, held := l.held[p]; held {
		delete(l.held, p)
		l.queueRelease(p.key, released{id: p.id, scored: p.scored})
	}
	l.lmu.Unlock()
	l.nudge(p.host)
}

// queueRelease records a released lease until it is sent to Redis. l.lmu
// must be held.
func (l *Limiter) queueRelease(key string, r released) {
	if l.lclosed {
		return
	}
	if l.npend == 0 {
		l.pendSince = l.clock.Now()
	}
	l.pend[key] = append(l.pend[key], r)
	l.npend++
	if !l.flushArmed {
		l.flushArmed = true
		l.startKeeper()
		select {
		case l.kick <- struct{}{}: // let the keeper time the flush
		default:
		}
	}
}

// requeue queues for release the leases of an acquire call whose outcome
// is unknown (ZREM of a lease that is not there is harmless). When Redis is
// unavailable they are dropped with the other pending releases.
func (l *Limiter) requeue(key string, ids []string) {
	l.lmu.Lock()
	defer l.lmu.Unlock()
	for _, id := range ids {
		l.queueRelease(key, released{id: id})
	}
}

// takeReleases removes from the pending releases those of one lease set
// (at most maxFold), for a call that carries them to Redis.
func (l *Limiter) takeReleases(key string) []released {
	l.lmu.Lock()
	defer l.lmu.Unlock()
	rs := l.pend[key]
	if len(rs) == 0 {
		return nil
	}
	if len(rs) > maxFold {
		l.pend[key] = rs[maxFold:]
		rs = rs[:maxFold:maxFold]
	} else {
		delete(l.pend, key)
	}
	l.npend -= len(rs)
	return rs
}

// hold registers leases for renewal, starting the keeper if needed.
func (l *Limiter) hold(ls []*lease) {
	l.lmu.Lock()
	defer l.lmu.Unlock()
	if l.lclosed {
		return // closing: the leases expire on their own
	}
	for _, p := range ls {
		l.held[p] = struct{}{}
	}
	l.startKeeper()
}

// startKeeper starts the keeper goroutine unless it runs. l.lmu must be
// held.
func (l *Limiter) startKeeper() {
	if l.keeping || l.lclosed {
		return
	}
	l.keeping = true
	l.keeperStarts++
	l.wg.Add(1)
	go l.keep()
}

// keep renews the held leases every third of the lease TTL and sends the
// releases no admission call carried within flushDelay. It runs while
// leases are held or releases pending, and lingers one renewal period
// after that, so a process admitting requests one at a time does not start
// and stop it for each.
func (l *Limiter) keep() {
	defer l.wg.Done()
	every := l.cfg.leaseTTL / 3
	nextRenew := l.clock.Now().Add(every)
	var idleSince, flushAt time.Time
	for {
		l.lmu.Lock()
		wake := nextRenew
		if l.npend > 0 && flushAt.IsZero() {
			flushAt = l.pendSince.Add(flushDelay)
		}
		// While armed, releases do not kick the keeper: one wake-up per
		// flushDelay at most, however many requests are released.
		l.flushArmed = !flushAt.IsZero()
		if l.flushArmed && flushAt.Before(wake) {
			wake = flushAt
		}
		l.lmu.Unlock()
		t := ezthrottle.NewTimerAt(l.clock, wake)
		kicked := false
		select {
		case <-t.C():
		case <-l.kick:
			t.Stop()
			kicked = true
		case <-l.stop:
			t.Stop()
			return
		}
		now := l.clock.Now()
		l.lmu.Lock()
		if l.lclosed {
			l.lmu.Unlock()
			return
		}
		var rel map[string][]released
		switch {
		case kicked && flushAt.IsZero():
			// A release (perhaps carried away already by an admission
			// call): look again after flushDelay.
			flushAt = now.Add(flushDelay)
		case !flushAt.IsZero() && !now.Before(flushAt):
			flushAt = time.Time{}
			if l.npend > 0 {
				if due := l.pendSince.Add(flushDelay); now.Before(due) {
					flushAt = due
				} else {
					rel = l.pend
					l.pend, l.npend = make(map[string][]released), 0
				}
			}
		}
		var groups map[string][]*lease
		if !now.Before(nextRenew) {
			nextRenew = now.Add(every)
			if len(l.held) > 0 {
				groups = groupLeases(l.held)
			}
		}
		switch {
		case len(l.held) > 0 || l.npend > 0 || rel != nil || !flushAt.IsZero():
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = now
		case now.Sub(idleSince) >= every:
			l.keeping = false
			l.flushArmed = false
			l.lmu.Unlock()
			return
		}
		l.lmu.Unlock()
		if rel != nil {
			_ = l.flush(rel)
		}
		if groups != nil {
			l.renew(groups)
		}
	}
}

// flush frees released leases: one pipeline of ZREMs when the client can
// pipeline, else one call per lease set. When Redis is unavailable they are
// left to expire.
func (l *Limiter) flush(rel map[string][]released) error {
	l.fmu.Lock() // Inspect waits for releases on their way
	defer l.fmu.Unlock()
	if !l.usable() {
		return nil
	}
	ctx, cancel := l.opCtx(context.Background())
	defer cancel()
	var err error
	if l.pipe != nil {
		pipe := l.pipe.Pipeline()
		for key, ids := range rel {
			pipe.ZRem(ctx, key, anys(ids)...)
		}
		_, err = pipe.Exec(ctx)
		l.rts.Add(1)
	} else {
		var errs []error
		for key, ids := range rel {
			errs = append(errs, l.sc.release.Run(ctx, l.rdb, []string{key}, anys(ids)...).Err())
			l.rts.Add(1)
		}
		err = errors.Join(errs...)
	}
	if err != nil {
		l.failed(err)
		return err
	}
	l.succeeded()
	return nil
}

func anys(rs []released) []any {
	a := make([]any, len(rs))
	for i, r := range rs {
		a[i] = r.id
	}
	return a
}

// renew extends the given leases, host by host. A lease found expired is
// counted as lost and no longer renewed.
func (l *Limiter) renew(groups map[string][]*lease) {
	if !l.usable() {
		return // the leases expire; the fallback throttles meanwhile
	}
	ttl := l.cfg.leaseTTL.Microseconds()
	for key, ls := range groups {
		args := append(l.scriptArgs(make([]any, 0, len(ls)+2)), ttl)
		for _, p := range ls {
			args = append(args, p.id)
		}
		ctx, cancel := l.opCtx(context.Background())
		at := l.clock.Now()
		lost, err := l.sc.renew.Run(ctx, l.rdb, []string{key, ls[0].expKey}, args...).StringSlice()
		cancel()
		l.rts.Add(1)
		if err != nil {
			l.failed(err)
			return
		}
		l.succeeded()
		gone := make(map[string]bool, len(lost))
		for _, id := range lost {
			gone[id] = true
		}
		l.lmu.Lock()
		for _, p := range ls {
			if gone[p.id] {
				delete(l.held, p)
			} else if at.After(p.scored) {
				p.scored = at
			}
		}
		l.lmu.Unlock()
		if len(lost) == 0 {
			continue
		}
		l.lost.Add(uint64(len(lost)))
		l.log.Debug("redislimit: leases expired before renewal", "leases", key, "lost", len(lost))
	}
}

// groupLeases groups leases by lease set.
func groupLeases(held map[*lease]struct{}) map[string][]*lease {
	g := make(map[string][]*lease)
	for p := range held {
		g[p.key] = append(g[p.key], p)
	}
	return g
}
