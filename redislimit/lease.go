package redislimit

import (
	"context"
	"sync/atomic"
)

// lease is the Permit of a request admitted under a cap in flight: one
// member of the host's lease set in Redis, scored by its expiry. A live
// Limiter renews it until it is released; if the process dies, it expires
// after the lease TTL and its slot frees itself.
type lease struct {
	l        *Limiter
	host     string // host key, for waking the local gate
	key      string // the host's lease set
	id       string
	released atomic.Bool
}

// Release implements ezthrottle.Permit: it frees the slot in Redis and
// wakes the next local request of the host. It is idempotent. When Redis is
// unavailable the lease is left to expire.
func (p *lease) Release() {
	if !p.released.CompareAndSwap(false, true) {
		return
	}
	l := p.l
	l.lmu.Lock()
	_, held := l.held[p]
	delete(l.held, p)
	if held && len(l.held) == 0 && l.renewing {
		select {
		case l.kick <- struct{}{}: // let the renewer stop now
		default:
		}
	}
	l.lmu.Unlock()
	if held && l.usable() {
		ctx, cancel := l.opCtx(context.Background())
		err := l.sc.release.Run(ctx, l.rdb, []string{p.key}, p.id).Err()
		cancel()
		if err != nil {
			l.failed(err)
		} else {
			l.succeeded()
		}
	}
	l.nudge(p.host)
}

// hold registers a lease for renewal, starting the renewer if needed. The
// renewer runs only while leases are held (and stops on Close).
func (l *Limiter) hold(p *lease) {
	l.lmu.Lock()
	defer l.lmu.Unlock()
	if l.lclosed {
		return // closing: the lease expires on its own
	}
	l.held[p] = struct{}{}
	if !l.renewing {
		l.renewing = true
		l.wg.Add(1)
		go l.renewLoop()
	}
}

// renewLoop renews the held leases every third of the lease TTL.
func (l *Limiter) renewLoop() {
	defer l.wg.Done()
	every := l.cfg.leaseTTL / 3
	for {
		t := l.clock.NewTimer(every)
		select {
		case <-t.C():
		case <-l.kick:
			t.Stop()
		case <-l.stop:
			t.Stop()
			return
		}
		l.lmu.Lock()
		if len(l.held) == 0 || l.lclosed {
			l.renewing = false
			l.lmu.Unlock()
			return
		}
		groups := groupLeases(l.held)
		l.lmu.Unlock()
		l.renew(groups)
	}
}

// renew extends the given leases, host by host. A lease found expired is
// counted as lost and no longer renewed.
func (l *Limiter) renew(groups map[string][]*lease) {
	if !l.usable() {
		return // the leases expire; the fallback throttles meanwhile
	}
	ttl := l.cfg.leaseTTL.Microseconds()
	for key, ls := range groups {
		args := make([]any, 0, len(ls)+1)
		args = append(args, ttl)
		for _, p := range ls {
			args = append(args, p.id)
		}
		ctx, cancel := l.opCtx(context.Background())
		lost, err := l.sc.renew.Run(ctx, l.rdb, []string{key}, args...).StringSlice()
		cancel()
		if err != nil {
			l.failed(err)
			return
		}
		l.succeeded()
		if len(lost) == 0 {
			continue
		}
		l.lost.Add(uint64(len(lost)))
		l.log.Debug("redislimit: leases expired before renewal", "leases", key, "lost", len(lost))
		gone := make(map[string]bool, len(lost))
		for _, id := range lost {
			gone[id] = true
		}
		l.lmu.Lock()
		for _, p := range ls {
			if gone[p.id] {
				delete(l.held, p)
			}
		}
		l.lmu.Unlock()
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
