package redislimit

import "github.com/redis/go-redis/v9"

// Every script reads the Redis server's clock (TIME), so the processes
// sharing a limit never compare their own clocks. Times are integers in
// microseconds since the Unix epoch (well within a Lua double's 2^53). The
// first argument of every script overrides the server's clock when it is
// not empty: only the package's tests use it (Redis TIME cannot be mocked
// otherwise).
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

// clockSrc is the prologue of every script: now, in µs, from ARGV[1] when
// given (tests), else from the server's clock.
const clockSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
`

// acquireSrc admits up to n requests of one host in arrival order, in one
// call. It takes the leases this process released since its last call for
// the host (so a release costs no round trip of its own), then checks the
// pause, then for each request in turn the cap in flight and the GCRA pace.
// A request whose turn comes within its maximum wait is given that turn:
// the theoretical arrival time (TAT) advances by cost x interval at once,
// so the schedule is kept in Redis and a request that starts late (a late
// wake-up) does not move the turns after it. It stops at the first request
// that cannot be admitted in time (FIFO), and reports why and how long that
// request would have to wait.
//
// A released lease is handed on: the i-th admitted request takes the i-th
// released lease's ID (its score is updated) instead of a new one, and the
// released leases not handed on are removed at the end. A set that empties
// is deleted and its expiry lost, so adding and removing a member each
// time would double the cost of a call. Until then the released leases are
// counted as gone: they were this process's and held until now, so present
// unless they expired; if some had expired, the count was short, and the
// turns given beyond the cap are taken back before the reply.
//
// KEYS: tat, leases, learned.
// ARGV: now override, interval µs (0 = unpaced), burst, max in flight (0 =
// no cap), lease TTL µs, number of released lease IDs r, then the r IDs,
// then for each request: cost, maximum wait µs, new lease ID.
// Reply: {granted k, reason, wait µs, interval µs in force, cap in force,
// then the k waits µs (0 = at once)}. reason (why request k+1 was not
// admitted): 0 none (all admitted), 1 paused, 2 rate (wait: until its
// turn), 3 no free slot (wait: until the oldest lease expires), 4 its cost
// exceeds what the bucket can ever hold. When the cap in force is not 0,
// admitted request i holds the lease of the i-th released ID when i <= r,
// else its own new ID.
const acquireSrc = clockSrc + `
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local slots = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local nrel = tonumber(ARGV[6])
local learned = redis.call('HMGET', KEYS[3], 'i', 's', 'p')
if learned[1] then interval = tonumber(learned[1]) end
if learned[2] then slots = tonumber(learned[2]) end
local pause = tonumber(learned[3] or '0') or 0
if pause > now then
  if nrel > 0 then redis.call('ZREM', KEYS[2], unpack(ARGV, 7, 6 + nrel)) end
  return {0, 1, pause - now, interval, slots}
end
local inflight, purged, absent = 0, false, 0
if slots > 0 then
  inflight = redis.call('ZCARD', KEYS[2]) - nrel
  if inflight < 0 then inflight = 0 end
end
local tat, tat0 = 0, 0
if interval > 0 then
  tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if pause > 0 then
    local floor = pause + (burst - 1) * interval
    if tat < floor then tat = floor end
  end
  tat0 = tat
end
local reply = {0, 0, 0, interval, slots}
local waits, tats, ids = {}, {}, {}
local lastexp = 0
local base = 7 + nrel
while base + 2 <= #ARGV do
  local cost = tonumber(ARGV[base])
  local maxwait = tonumber(ARGV[base + 1])
  local k = #waits + 1
  if slots > 0 and inflight >= slots and not purged then
    -- Expired leases (of dead processes) are dropped only when they matter.
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    purged = true
    inflight = redis.call('ZCARD', KEYS[2])
    if nrel >= k then inflight = inflight - (nrel - k + 1) end
  end
  if slots > 0 and inflight >= slots then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = 1000
    if first[2] then wait = tonumber(first[2]) - now end
    reply[2], reply[3] = 3, wait
    break
  end
  local wait = 0
  if interval > 0 then
    if cost > burst then
      reply[2] = 4
      break
    end
    local t = tat
    if t < now then t = now end
    local newtat = t + cost * interval
    wait = newtat - burst * interval - now
    if wait < 0 then wait = 0 end
    if wait > maxwait then
      reply[2], reply[3] = 2, wait
      break
    end
    tat = newtat
  end
  tats[k] = tat
  if slots > 0 then
    local exp = now + wait + ttl
    local id = ARGV[base + 2]
    if k <= nrel then id = ARGV[6 + k] end
    ids[k] = id
    if redis.call('ZADD', KEYS[2], string.format('%d', exp), id) == 1 and k <= nrel then
      absent = absent + 1
    end
    inflight = inflight + 1
    if exp > lastexp then lastexp = exp end
  end
  waits[k] = wait
  base = base + 3
end
local used = 0
if slots > 0 then used = #waits end
if used < nrel then
  absent = absent + (nrel - used) - redis.call('ZREM', KEYS[2], unpack(ARGV, 7 + used, 6 + nrel))
end
if absent > 0 and slots > 0 and #waits > 0 then
  -- Some released leases had expired: the count was short. Take back the
  -- turns given beyond the cap (the last ones; nobody has them yet).
  local n = redis.call('ZCARD', KEYS[2])
  while n > slots and #waits > 0 do
    redis.call('ZREM', KEYS[2], ids[#waits])
    tats[#waits], ids[#waits] = nil, nil
    waits[#waits] = nil
    n = n - 1
    reply[2], reply[3] = 3, 1000
  end
  tat = tats[#waits] or tat0
end
if tat ~= tat0 then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
end
if lastexp > 0 then
  -- The set outlives its last lease; extended with room to spare, so most
  -- calls only read its TTL.
  local need = math.floor((lastexp - now) / 1000) + 1000
  if redis.call('PTTL', KEYS[2]) < need then
    redis.call('PEXPIRE', KEYS[2], need + math.floor(ttl / 1000))
  end
end
reply[1] = #waits
for i = 1, #waits do reply[5 + i] = waits[i] end
return reply
`

// learnSrc stores what a response taught about a host.
//
// KEYS: learned.
// ARGV: now override, interval µs or "", max in flight or "", pause length
// µs or "", expiry ms.
// Reply: the pause end in µs (0 when none).
const learnSrc = clockSrc + `
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 's', ARGV[3]) end
local ttl = tonumber(ARGV[5])
local pause = tonumber(redis.call('HGET', KEYS[1], 'p') or '0') or 0
if ARGV[4] ~= '' then
  local untilp = now + tonumber(ARGV[4])
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
// KEYS: leases. ARGV: now override, lease TTL µs, lease IDs...
// Reply: the IDs that were no longer held.
const renewSrc = clockSrc + `
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local exp = string.format('%d', now + ttl)
local lost = {}
local n = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[i])
    n = n + 1
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if n > 0 then
  local need = math.floor(ttl / 1000) + 1000
  if redis.call('PTTL', KEYS[1]) < need then
    redis.call('PEXPIRE', KEYS[1], need + math.floor(ttl / 1000))
  end
end
return lost
`

// releaseSrc frees leases. KEYS: leases. ARGV: lease IDs. Reply: how many
// were still held. It is used only when the client cannot pipeline a plain
// ZREM (a redis.Scripter without Pipeline).
const releaseSrc = `
return redis.call('ZREM', KEYS[1], unpack(ARGV))
`

// inspectSrc reads a host's shared state, after freeing the leases this
// process released since its last call for the host.
//
// KEYS: tat, leases, learned.
// ARGV: now override, released lease IDs...
// Reply: {now µs, learned interval µs or -1, learned cap or -1, paused until
// µs or 0, leases alive, TAT µs or 0}.
const inspectSrc = clockSrc + `
if #ARGV > 1 then redis.call('ZREM', KEYS[2], unpack(ARGV, 2)) end
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
