package redislimit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// redisTarget finds the Redis of the tests once: $EZTHROTTLE_REDIS_ADDR, or
// (when unset) the standard port, which CI uses too.
var redisTarget = sync.OnceValues(func() (string, error) {
	if addr := os.Getenv("EZTHROTTLE_REDIS_ADDR"); addr != "" {
		return addr, ping(addr)
	}
	var errs []error
	for _, addr := range []string{"127.0.0.1:6379"} {
		err := ping(addr)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
})

func ping(addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// redisAddr returns the address of a reachable Redis. Without one the test
// is skipped, except in CI (CI=true) or when EZTHROTTLE_REDIS_ADDR names one:
// then it fails.
func redisAddr(t testing.TB) string {
	t.Helper()
	addr, err := redisTarget()
	if err == nil {
		return addr
	}
	if os.Getenv("CI") == "true" || os.Getenv("EZTHROTTLE_REDIS_ADDR") != "" {
		t.Fatalf("redislimit tests need Redis (EZTHROTTLE_REDIS_ADDR=%q): %v", os.Getenv("EZTHROTTLE_REDIS_ADDR"), err)
	}
	t.Skipf("skipping: no Redis reachable (set EZTHROTTLE_REDIS_ADDR, or run redis-server on 127.0.0.1:6379): %v", err)
	return ""
}

// newClient returns a go-redis client with short timeouts, as a pod would
// configure it, closed at the end of the test.
func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		DialTimeout:           300 * time.Millisecond,
		ReadTimeout:           300 * time.Millisecond,
		WriteTimeout:          300 * time.Millisecond,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		PoolSize:              8,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testPrefix is a key namespace of its own for one test.
func testPrefix(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return "ezthrottle-test:" + name + ":" + hex.EncodeToString(b[:]) + ":"
}

// newTestLimiter returns a Limiter closed at the end of the test.
func newTestLimiter(t testing.TB, rdb redis.Scripter, opts ...Option) *Limiter {
	t.Helper()
	l, err := New(rdb, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// logBuffer collects log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tcpProxy forwards TCP connections to a target; cut makes Redis
// "unavailable" (open connections are closed, new ones are closed at once)
// without touching the real server, restore brings it back.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
		p.mu.Unlock()
	}
}

func (p *tcpProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// cut closes every connection and refuses new ones.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}
