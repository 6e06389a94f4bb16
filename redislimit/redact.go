package redislimit

import "fmt"

// String describes the Limiter by its key prefix, never by its Redis
// client (whose options may hold a password).
func (l *Limiter) String() string {
	if l == nil {
		return "(*redislimit.Limiter)(nil)"
	}
	return fmt.Sprintf("redislimit.Limiter{prefix: %q, failClosed: %t}", l.cfg.prefix, l.cfg.failClosed)
}

// GoString is String: %#v never walks into the Redis client.
func (l *Limiter) GoString() string { return l.String() }
