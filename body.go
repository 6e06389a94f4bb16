package ezthrottle

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// releaseBody frees the request's slot in flight when the response body is
// closed (as the http.Client contract requires of every caller).
type releaseBody struct {
	rc   io.ReadCloser
	p    Permit
	done atomic.Bool
}

func (b *releaseBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *releaseBody) Close() error {
	err := b.rc.Close()
	b.release()
	return err
}

func (b *releaseBody) release() {
	if b.done.CompareAndSwap(false, true) {
		b.p.Release()
	}
}

// memReleaseBody is releaseBody for a MemoryLimiter permit: holding the
// host state directly makes it a smaller allocation (32 bytes, not 48).
type memReleaseBody struct {
	rc   io.ReadCloser
	h    *hostState
	done atomic.Bool
}

func (b *memReleaseBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *memReleaseBody) Close() error {
	err := b.rc.Close()
	if b.done.CompareAndSwap(false, true) {
		b.h.Release()
	}
	return err
}

// wrapBody returns rc wrapped to release p when closed.
func wrapBody(rc io.ReadCloser, p Permit) io.ReadCloser {
	if h, ok := p.(*hostState); ok {
		return &memReleaseBody{rc: rc, h: h}
	}
	return &releaseBody{rc: rc, p: p}
}

// capturedRequest is the shallow copy of a request whose body is captured
// while it is sent; the copy and the capturing body take one allocation.
type capturedRequest struct {
	req  http.Request
	body captureBody
}

// maxPooledCapture bounds the capture buffers kept for reuse.
const maxPooledCapture = 64 << 10

// captureBody records a request body while the base RoundTripper sends it,
// so the request can be forwarded without GetBody. It is safe to inspect
// while the base may still be reading it from another goroutine. Its buffer
// comes from the Transport's pool and goes back there on release.
type captureBody struct {
	rc       io.ReadCloser
	max      int64
	declared int64 // ContentLength (> 0 when known)
	pool     *sync.Pool

	mu       sync.Mutex
	bp       *[]byte // pooled slice header, nil when not from the pool
	buf      []byte
	eof      bool
	overflow bool
	released bool
}

// newCaptured returns a shallow copy of req whose body records what is
// read from req.Body.
func (t *Transport) newCaptured(req *http.Request) (*http.Request, *captureBody) {
	cr := &capturedRequest{req: *req}
	c := &cr.body
	c.rc, c.max, c.declared, c.pool = req.Body, t.cfg.maxBody, req.ContentLength, &t.bufPool
	if bp, ok := t.bufPool.Get().(*[]byte); ok {
		c.bp, c.buf = bp, (*bp)[:0]
	} else if c.declared > 0 && c.declared <= c.max {
		c.buf = make([]byte, 0, c.declared)
	}
	cr.req.Body = c
	return &cr.req, c
}

func (c *captureBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.mu.Lock()
	if n > 0 && !c.overflow && !c.released {
		if int64(len(c.buf)+n) > c.max {
			c.overflow = true
			c.release()
		} else {
			c.buf = append(c.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		c.eof = true
	}
	c.mu.Unlock()
	return n, err
}

func (c *captureBody) Close() error { return c.rc.Close() }

// bytes returns a copy of the complete body, or why it cannot be
// reproduced.
func (c *captureBody) bytes() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.overflow:
		return nil, ErrBodyTooLarge
	case c.released:
		return nil, ErrBodyNotReplayable
	case c.eof || (c.declared > 0 && int64(len(c.buf)) == c.declared):
		return append([]byte(nil), c.buf...), nil
	}
	return nil, ErrBodyNotReplayable
}

// done stops recording and returns the buffer to the pool. Reads that the
// base may still make go through unrecorded.
func (c *captureBody) done() {
	c.mu.Lock()
	c.release()
	c.mu.Unlock()
}

// release frees the buffer; c.mu is held.
func (c *captureBody) release() {
	if c.released {
		return
	}
	c.released = true
	if cap(c.buf) > 0 && cap(c.buf) <= maxPooledCapture {
		bp := c.bp
		if bp == nil {
			bp = new([]byte)
		}
		*bp = c.buf[:0]
		c.pool.Put(bp)
	}
	c.bp, c.buf = nil, nil
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeRequestBody(req *http.Request) {
	if req != nil && req.Body != nil {
		_ = req.Body.Close()
	}
}

// readLimited reads all of r, failing with ErrBodyTooLarge beyond max bytes.
func readLimited(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, ErrBodyTooLarge
	}
	return b, nil
}
