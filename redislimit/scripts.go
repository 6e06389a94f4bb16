package redislimit

import "github.com/redis/go-redis/v9"

// Every script reads the Redis server's clock (TIME), so the processes
// sharing a limit never compare their own clocks. Times are integers in
// microseconds since the Unix epoch (well within a Lua double's 2^53).
//
// Keys of one host (all carry the host in a hash tag, so a Redis Cluster
// keeps them in one slot):
//
//	<prefix>{<host>}:t  GCRA theoretical arrival time (string, µs), PX expiry
//	<prefix>{<host>}:f  leases in flight (sorted set: lease ID -> expiry µs),
//	                    PX expiry after the last lease's (processes may
//	                    use different lease TTLs)
//	<prefix>{<host>}:l  learned limits (hash: i = interval µs, s = max in
//	                    flight, p = paused until µs), PX expiry

// acquireSrc decides one admission atomically: pause, then the cap in flight
// (expired leases are dropped first), then the GCRA rate. When every check
// passes it records the admission (new TAT, new lease).
//
// KEYS: tat, leases, learned.
// ARGV: interval µs (0 = unpaced), burst, max in flight (0 = no cap),
// lease ID, lease TTL µs.
// Reply: {allowed 0|1, wait µs, reason, interval µs in force, cap in force,
// leased 0|1}. reason: 0 admitted, 1 paused, 2 rate, 3 no free slot (wait is
// then the time until the oldest lease expires).
const acquireSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
local learned = redis.call('HMGET', KEYS[3], 'i', 's', 'p')
if learned[1] then interval = tonumber(learned[1]) end
if learned[2] then slots = tonumber(learned[2]) end
local pause = tonumber(learned[3] or '0') or 0
if pause > now then
  return {0, pause - now, 1, interval, slots, 0}
end
if slots > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= slots then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = 1000
    if first[2] then wait = tonumber(first[2]) - now end
    return {0, wait, 3, interval, slots, 0}
  end
end
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if pause > 0 then
    local floor = pause + (burst - 1) * interval
    if tat < floor then tat = floor end
  end
  if tat < now then tat = now end
  local newtat = tat + interval
  local allowat = newtat - burst * interval
  if allowat > now then
    return {0, allowat - now, 2, interval, slots, 0}
  end
  redis.call('SET', KEYS[1], string.format('%d', newtat), 'PX', math.floor((newtat - now) / 1000) + 1000)
end
if slots > 0 then
  redis.call('ZADD', KEYS[2], string.format('%d', now + ttl), ARGV[4])
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[2], math.floor((tonumber(last[2]) - now) / 1000) + 1000)
  return {1, 0, 0, interval, slots, 1}
end
return {1, 0, 0, interval, slots, 0}
`

// learnSrc stores what a response taught about a host.
//
// KEYS: learned.
// ARGV: interval µs or "", max in flight or "", pause length µs or "",
// expiry ms.
// Reply: the pause end in µs (0 when none).
const learnSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 's', ARGV[2]) end
local ttl = tonumber(ARGV[4])
local pause = tonumber(redis.call('HGET', KEYS[1], 'p') or '0') or 0
if ARGV[3] ~= '' then
  local untilp = now + tonumber(ARGV[3])
  if untilp > pause then
    pause = untilp
    redis.call('HSET', KEYS[1], 'p', string.format('%d', pause))
  end
end
if pause > now then
  local left = math.floor((pause - now) / 1000) + 1000
  if left > ttl then ttl = left end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return pause
`

// renewSrc extends the leases still present (a lease that expired is not
// resurrected: its slot may already be taken).
//
// KEYS: leases. ARGV: lease TTL µs, lease IDs...
// Reply: the IDs that were no longer held.
const renewSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local exp = string.format('%d', now + ttl)
local lost = {}
local n = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[i])
    n = n + 1
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if n > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.floor((tonumber(last[2]) - now) / 1000) + 1000)
end
return lost
`

// releaseSrc frees leases. KEYS: leases. ARGV: lease IDs. Reply: how many
// were still held.
const releaseSrc = `
return redis.call('ZREM', KEYS[1], unpack(ARGV))
`

// inspectSrc reads a host's shared state.
//
// KEYS: tat, leases, learned.
// Reply: {now µs, learned interval µs or -1, learned cap or -1, paused until
// µs or 0, leases alive, TAT µs or 0}.
const inspectSrc = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local learned = redis.call('HMGET', KEYS[3], 'i', 's', 'p')
local n = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%d', now), '+inf')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
return {now, tonumber(learned[1] or '-1'), tonumber(learned[2] or '-1'), tonumber(learned[3] or '0'), n, tat}
`

// scripts are the Lua scripts of one Limiter (a redis.Script caches its
// SHA-1 and is therefore kept per Limiter, not in package state).
type scripts struct {
	acquire, learn, renew, release, inspect *redis.Script
}

func newScripts() scripts {
	return scripts{
		acquire: redis.NewScript(acquireSrc),
		learn:   redis.NewScript(learnSrc),
		renew:   redis.NewScript(renewSrc),
		release: redis.NewScript(releaseSrc),
		inspect: redis.NewScript(inspectSrc),
	}
}
