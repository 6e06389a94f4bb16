// Package redisbench compares redislimit with github.com/go-redis/redis_rate
// in the same benchmark run. It is a module of its own so that the main
// module does not depend on the peer library. Run it with a Redis at
// $EZTHROTTLE_REDIS_ADDR (default 127.0.0.1:6390; skipped without one):
//
//	cd bench/redis
//	go test -run '^$' -bench Decisions -benchtime 40000x -count 3
//	go test -run '^$' -bench Pacing -benchtime 1x -count 3
//
// BenchmarkPacing4Pods takes 4 s per iteration and contender: give it
// -benchtime 1x (or the default benchtime), never a large count of x.
package redisbench
