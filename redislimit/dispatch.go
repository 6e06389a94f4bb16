package redislimit

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxCalls is how many acquire calls (or pipelines of them) a Limiter has
// in flight at once. Calls made while all are busy queue, and go together
// in one pipeline when one returns: under load a decision costs a fraction
// of a network round trip and of the system calls on both ends, while an
// idle Limiter sends each call at once.
const maxCalls = 4

// maxPipeline is the most acquire calls one pipeline carries.
const maxPipeline = 64

// dispatcher groups concurrent acquire calls (of different hosts: the
// calls of one host are already grouped by its gate).
type dispatcher struct {
	mu    sync.Mutex
	busy  int
	queue []*acall
}

// acall is an acquire call waiting for a pipeline.
type acall struct {
	keys  []string
	args  []any
	v     []int64
	err   error
	done  chan struct{}
	batch []*acall // set when this call is to send the pipeline
}

// runAcquire runs the acquire script, at once when fewer than maxCalls are
// in flight, else in the next pipeline. A queued call is sent whatever
// happens to ctx meanwhile (its result would otherwise be lost with the
// turns and leases it grants): it waits at most one round trip, bounded by
// WithTimeout and the client's timeouts.
func (l *Limiter) runAcquire(ctx context.Context, keys []string, args []any) ([]int64, error) {
	if l.pipe == nil {
		return l.acquireOnce(ctx, keys, args)
	}
	d := &l.disp
	d.mu.Lock()
	if d.busy < maxCalls {
		d.busy++
		d.mu.Unlock()
		v, err := l.acquireOnce(ctx, keys, args)
		l.passOn()
		return v, err
	}
	c := &acall{keys: keys, args: args, done: make(chan struct{})}
	d.queue = append(d.queue, c)
	d.mu.Unlock()
	<-c.done
	if c.batch != nil { // this call sends the pipeline for the queue
		l.sendPipeline(c.batch)
		l.passOn()
	}
	return c.v, c.err
}

func (l *Limiter) acquireOnce(ctx context.Context, keys []string, args []any) ([]int64, error) {
	cctx, cancel := l.opCtx(ctx)
	defer cancel()
	l.rts.Add(1)
	return l.sc.acquire.Run(cctx, l.rdb, keys, args...).Int64Slice()
}

// passOn frees a call in flight: the queued calls (up to maxPipeline) go in
// one pipeline, sent by the first of them.
func (l *Limiter) passOn() {
	d := &l.disp
	d.mu.Lock()
	if len(d.queue) == 0 {
		d.busy--
		d.mu.Unlock()
		return
	}
	n := min(len(d.queue), maxPipeline)
	batch := d.queue[:n:n]
	if n == len(d.queue) {
		d.queue = nil
	} else {
		d.queue = d.queue[n:]
	}
	d.mu.Unlock()
	batch[0].batch = batch
	close(batch[0].done)
}

// sendPipeline sends the calls of batch in one pipeline and hands each its
// result.
func (l *Limiter) sendPipeline(batch []*acall) {
	ctx, cancel := l.opCtx(context.Background())
	defer cancel()
	pipe := l.pipe.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = l.sc.acquire.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	l.rts.Add(1)
	for i, c := range batch {
		c.v, c.err = cmds[i].Int64Slice()
		if c.err != nil && strings.HasPrefix(c.err.Error(), "NOSCRIPT") {
			// The script cache was flushed: Run loads it again.
			c.v, c.err = l.acquireOnce(ctx, c.keys, c.args)
		}
		if i > 0 {
			close(c.done)
		}
	}
}
