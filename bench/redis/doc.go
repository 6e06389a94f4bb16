// Package redisbench compares redislimit with github.com/go-redis/redis_rate
// in the same benchmark run. It is a module of its own so that the main
// module does not depend on the peer library. Run it with a Redis at
// $EZTHROTTLE_REDIS_ADDR (default 127.0.0.1:6390):
//
//	cd bench/redis && go test -run '^$' -bench . -benchtime 3s
package redisbench
