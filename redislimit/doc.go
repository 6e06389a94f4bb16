// Package redislimit shares the ezthrottle Transport's per-host throttle
// across every process of a service, through Redis.
//
// A per-process limiter stops working the day a service runs on ten pods:
// each pod allows 2 requests per second and the API sees 20. A Limiter from
// this package keeps the state of each host in Redis instead, so the limit
// holds for the whole fleet:
//
//	rdb := redis.NewClient(&redis.Options{Addr: "redis:6379"})
//	limiter, err := redislimit.New(rdb, redislimit.WithPrefix("billing:"))
//	...
//	defer limiter.Close()
//	client, err := ezthrottle.Wrap(nil, ezthrottle.WithLimiter(limiter))
//
// # What is shared
//
//   - The pace: a GCRA (generic cell rate algorithm, equivalent to a token
//     bucket of Limit.Rate and Limit.Burst) evaluated atomically in a Lua
//     script on the Redis server's clock, so the processes never compare
//     their own clocks. The schedule is kept in Redis: a request whose turn
//     comes within 250ms is given that turn when it asks (the theoretical
//     arrival time advances then) and sleeps until it, so a process that
//     wakes up late does not slow the pace down; after an idle period at
//     most Limit.Burst requests start back to back.
//   - The cap on requests in flight: each admitted request holds a lease, a
//     member of a sorted set scored by its expiry. The holder renews its
//     leases every third of the lease TTL (WithLeaseTTL) while the request
//     runs, however long it takes. Releasing costs no round trip of its
//     own: the release travels with the next admission call for the host
//     (the next request takes the released lease over), or when none comes
//     within a few milliseconds, in one background pipeline with the other
//     pending releases. If the process dies, its leases expire on their
//     own and the slots free themselves. Expired leases are dropped inside
//     the script when the cap is reached.
//   - What the hosts said: a pace or cap read from a response's headers is
//     stored with an expiry (WithLearnedTTL), a Retry-After pause until it
//     ends. Every process applies them from its next request.
//
// Keys are namespaced by WithPrefix and carry the host in a hash tag
// ("<prefix>{https://api.example.com:443}:t"), so a Redis Cluster keeps the
// keys of one host in one slot.
//
// # Cost of a decision
//
// An admitted request costs one call to Redis (Stats.RoundTrips), with or
// without a cap in flight. Requests of one process for one host wait in a
// local queue whose head asks Redis for the turns of those behind it in the
// same call; calls for different hosts made at the same time share
// pipelines. Under load a decision therefore costs a fraction of a round
// trip (see the README for the figures).
//
// # Waiting and deadlines
//
// Redis answers "admitted, at t" or "not before d". A wait for the pace or
// a pause is predicted from that answer: when it would end after the
// admission's deadline (the request context's deadline, or the Transport's
// WithMaxWait), Acquire returns a *ezthrottle.ThrottleError at once instead
// of waiting, and the Transport can forward the request. A wait for a free
// slot in flight cannot be predicted: the request polls (WithPollInterval)
// until its deadline. A turn given and then not used (the caller's context
// ends while it sleeps) is not given back.
//
// Requests of one process wait for a host in arrival order. Across
// processes the order is best effort: there is no queue in Redis, and when
// a turn frees up, whichever process asks first gets it. A request in one
// pod may overtake an older one in another, and a pod that keeps losing
// that race waits longer than its share (bounded, as always, by the
// request's deadline).
//
// # When Redis is unavailable
//
// By default (WithFailOpen) the Limiter falls back to a local
// ezthrottle.MemoryLimiter: no request fails because Redis is down, each
// process applies the limit on its own (so N processes may together send N
// times the limit) and learned limits keep applying locally. WithFailClosed
// refuses requests instead, with an *UnavailableError. Either way the
// outage is logged once (WithLogger, silent by default) and counted (Stats),
// and after WithProbeInterval the next Acquire tries Redis again: the
// Limiter recovers by itself, with no background goroutine. Leases taken
// before the outage that could not be released expire after the lease TTL.
//
// The Redis client's timeouts bound how long an outage can delay a request
// before the fallback takes over: configure short DialTimeout, ReadTimeout
// and WriteTimeout (or ContextTimeoutEnabled, which lets WithTimeout and the
// request's deadline apply).
//
// The Limiter starts one goroutine only while it holds leases or has
// releases to send (to renew and send them); it ends a renewal period
// (a third of the lease TTL) after the last one, or on Close.
package redislimit
