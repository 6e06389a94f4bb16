package ezthrottle

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// DefaultAnswerTimeout is the default of WithAnswerTimeout: how long the
// Transport reads an upstream answer with a forwarding status before
// forwarding it, and how long it drains a body it discards.
const DefaultAnswerTimeout = time.Second

// maxDrain bounds what is read of a discarded body so that its connection
// can be reused.
const maxDrain = 64 << 10

// readOutcome is how a bounded read (readWithin) ended.
type readOutcome int

const (
	readComplete  readOutcome = iota // EOF within the limit
	readOverLimit                    // more than the limit: the rest is still on the stream
	readFailed                       // the stream failed
	readExpired                      // the time ran out (or ctx ended) first
)

// bgResult is the outcome of one Read made by a backgroundReader.
type bgResult struct {
	n          int
	err        error
	panicked   bool
	panicValue any
}

// get returns the outcome, re-raising the Read's panic in the caller's
// goroutine.
func (r bgResult) get() bgResult {
	if r.panicked {
		panic(r.panicValue)
	}
	return r
}

// backgroundReader performs the Reads of src in a goroutine of its own, so
// that its user can stop waiting for one: a Read of an HTTP body has no
// deadline of its own. The goroutine makes one Read per buffer received on
// req and ends when req is closed (stop) and its last Read has returned;
// closing src makes a pending Read of an HTTP body return.
type backgroundReader struct {
	src      io.Reader
	req      chan []byte
	res      chan bgResult // buffered: a Read nobody waits for any more does not block the goroutine
	stopOnce sync.Once
}

func newBackgroundReader(src io.Reader) *backgroundReader {
	b := &backgroundReader{src: src, req: make(chan []byte), res: make(chan bgResult, 1)}
	go b.loop()
	return b
}

func (b *backgroundReader) loop() {
	for p := range b.req {
		b.res <- b.read(p)
	}
}

// read makes one Read; a panic in it is carried to the goroutine waiting
// for the result (see bgResult.value), where it goes on as it would have
// without the background goroutine, instead of crashing the program.
func (b *backgroundReader) read(p []byte) (r bgResult) {
	defer func() {
		if v := recover(); v != nil {
			r = bgResult{panicked: true, panicValue: v}
		}
	}()
	n, err := b.src.Read(p)
	return bgResult{n: n, err: err}
}

// stop ends the goroutine once its pending Read (if any) has returned.
func (b *backgroundReader) stop() { b.stopOnce.Do(func() { close(b.req) }) }

// boundedRead is the outcome of readWithin.
type boundedRead struct {
	b      []byte      // the bytes read (nil without keep)
	out    readOutcome // how the read ended
	err    error       // the read error, with readFailed
	rest   io.Reader   // the remainder of the stream, with readOverLimit and readExpired
	closer io.Closer   // closes src and lets the background Read end
}

// readWithin reads src until EOF, an error, or more than limit bytes (with
// keep) or limit bytes (without keep: the bytes are discarded, only counted)
// have been read, for at most the Transport's answer timeout and never
// after ctx is done. It is the one time-bounded read of the Transport:
// buffering an answer before a forward and draining a discarded body both
// go through it.
//
// With readOverLimit and readExpired, rest yields the remainder of the
// stream after the bytes returned: first the outcome of the Read that was
// still pending when the time ran out, then src itself. The caller must
// eventually call closer.Close (which closes src and lets the background
// Read end).
func (t *Transport) readWithin(ctx context.Context, src io.ReadCloser, limit int64, sizeHint int64, keep bool) boundedRead {
	timer := t.clock.NewTimer(t.cfg.answerTimeout)
	defer timer.Stop()
	bg := newBackgroundReader(src)
	closer := stopCloser{src: src, bg: bg}
	var (
		buf     []byte
		scratch []byte
		total   int64
	)
	if keep {
		c := int64(512)
		if sizeHint >= 0 && sizeHint < limit {
			c = sizeHint + 1 // room to read the EOF
		}
		buf = make([]byte, 0, c)
	} else {
		scratch = make([]byte, 4<<10)
	}
	for {
		var p []byte
		if keep {
			if int64(len(buf)) > limit {
				bg.stop()
				return boundedRead{buf, readOverLimit, nil, src, closer}
			}
			if len(buf) == cap(buf) {
				n := 2 * cap(buf)
				if int64(n) > limit+1 {
					n = int(limit + 1)
				}
				nb := make([]byte, len(buf), n)
				copy(nb, buf)
				buf = nb
			}
			p = buf[len(buf):cap(buf)]
			if int64(len(buf)+len(p)) > limit+1 {
				p = p[:int(limit+1)-len(buf)]
			}
		} else {
			if total >= limit {
				bg.stop()
				return boundedRead{nil, readOverLimit, nil, src, closer}
			}
			p = scratch
			if int64(len(p)) > limit-total {
				p = p[:limit-total]
			}
		}
		bg.req <- p
		select {
		case res := <-bg.res:
			if res.panicked {
				bg.stop()
			}
			r := res.get()
			if keep {
				buf = buf[:len(buf)+r.n]
			}
			total += int64(r.n)
			switch {
			case r.err == io.EOF:
				bg.stop()
				return boundedRead{buf, readComplete, nil, nil, closer}
			case r.err != nil:
				bg.stop()
				return boundedRead{buf, readFailed, r.err, nil, closer}
			}
		case <-timer.C():
			return boundedRead{buf, readExpired, nil, &pendingTail{bg: bg, p: p}, closer}
		case <-ctx.Done():
			return boundedRead{buf, readExpired, nil, &pendingTail{bg: bg, p: p}, closer}
		}
	}
}

// stopCloser closes a body read by a backgroundReader: the source, then the
// goroutine (which ends when its pending Read returns).
type stopCloser struct {
	src io.Closer
	bg  *backgroundReader
}

func (c stopCloser) Close() error {
	err := c.src.Close()
	c.bg.stop()
	return err
}

// pendingTail is the rest of a stream whose background Read into p was
// still pending when its reader stopped waiting: that Read's outcome
// first, then the source directly.
type pendingTail struct {
	bg     *backgroundReader
	p      []byte
	waited bool
	data   []byte
	err    error
}

func (t *pendingTail) Read(q []byte) (int, error) {
	if !t.waited {
		res := <-t.bg.res // the caller's own Read now: it waits as long as the body does
		t.bg.stop()
		r := res.get()
		t.waited, t.data, t.err, t.p = true, t.p[:r.n], r.err, nil
	}
	if len(t.data) > 0 {
		n := copy(q, t.data)
		t.data = t.data[n:]
		return n, nil
	}
	if t.err != nil {
		return 0, t.err
	}
	return t.bg.src.Read(q)
}

// memBody is an answer held in memory.
type memBody struct{ *bytes.Reader }

func (memBody) Close() error { return nil }

// answerState is what bufferAnswer did with a response body.
type answerState int

const (
	// answerBuffered: the body is in memory (or empty); the response no
	// longer depends on the connection.
	answerBuffered answerState = iota
	// answerLarge: the body is larger than the limit (or failed to read);
	// it is readable from its first byte and still on the connection.
	answerLarge
	// answerSlow: the time budget (or the request context) ran out first;
	// the body is readable from its first byte. Do not forward.
	answerSlow
)

// bufferAnswer reads resp's body into memory when it has at most limit
// bytes and arrives within the answer timeout (and before ctx is done),
// closes the upstream body and replaces it by the bytes read. Otherwise the
// body is replaced by one that yields the bytes already read followed by
// the rest of the stream (or the read error), and closes the upstream body.
func (t *Transport) bufferAnswer(ctx context.Context, resp *http.Response, limit int64) answerState {
	if resp.Body == http.NoBody {
		return answerBuffered
	}
	if resp.ContentLength > limit {
		return answerLarge
	}
	orig := resp.Body
	r := t.readWithin(ctx, orig, limit, resp.ContentLength, true)
	rest := r.rest
	switch r.out {
	case readComplete:
		_ = r.closer.Close()
		resp.Body = memBody{bytes.NewReader(r.b)}
		return answerBuffered
	case readFailed:
		rest = errReader{r.err}
	}
	resp.Body = prefixedBody{Reader: io.MultiReader(bytes.NewReader(r.b), rest), Closer: r.closer, rest: rest}
	if r.out == readExpired {
		return answerSlow
	}
	return answerLarge
}

// drainClose discards up to 64 KiB of a response body, so its connection
// can be reused, for at most the answer timeout (and not after ctx is
// done), and closes it.
func (t *Transport) drainClose(ctx context.Context, rc io.ReadCloser) {
	switch rc.(type) {
	case nil:
		return
	case memBody:
		return
	}
	if rc == http.NoBody {
		return
	}
	if pb, ok := rc.(prefixedBody); ok {
		// What is in memory is not on the connection: drain the rest.
		rc = struct {
			io.Reader
			io.Closer
		}{pb.rest, pb.Closer}
	}
	_ = t.readWithin(ctx, rc, maxDrain, -1, false).closer.Close()
}

// prefixedBody replays bytes already read before the rest of a body.
type prefixedBody struct {
	io.Reader
	io.Closer
	rest io.Reader // what follows the bytes in memory
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
