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

// captureBody records a request body while the base RoundTripper sends it,
// so the request can be forwarded without GetBody. It is safe to inspect
// while the base may still be reading it from another goroutine.
type captureBody struct {
	rc       io.ReadCloser
	max      int64
	declared int64 // ContentLength (> 0 when known)

	mu       sync.Mutex
	buf      []byte
	eof      bool
	overflow bool
}

func newCapture(rc io.ReadCloser, max, contentLength int64) *captureBody {
	c := &captureBody{rc: rc, max: max, declared: contentLength}
	if contentLength > 0 && contentLength <= max {
		c.buf = make([]byte, 0, contentLength)
	}
	return c
}

func (c *captureBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.mu.Lock()
	if n > 0 && !c.overflow {
		if int64(len(c.buf)+n) > c.max {
			c.overflow, c.buf = true, nil
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

// bytes returns the complete body, or why it cannot be reproduced.
func (c *captureBody) bytes() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.overflow:
		return nil, ErrBodyTooLarge
	case c.eof || (c.declared > 0 && int64(len(c.buf)) == c.declared):
		return append([]byte(nil), c.buf...), nil
	}
	return nil, ErrBodyNotReplayable
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeRequestBody(req *http.Request) {
	if req != nil && req.Body != nil {
		_ = req.Body.Close()
	}
}

// drainClose discards up to 64 KiB of a response body, so its connection
// can be reused, and closes it.
func drainClose(rc io.ReadCloser) {
	if rc == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, rc, 64<<10)
	_ = rc.Close()
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
