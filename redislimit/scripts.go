package redislimit

import "github.com/redis/go-redis/v9"

// Every script reads the Redis server's clock (TIME), so the processes
// sharing a limit never compare their own clocks. Times are integers in
// microseconds since the Unix epoch (well within a Lua double's 2^53). The
// package's tests give the scripts their clock as a first argument instead
// (Redis TIME cannot be mocked otherwise): see testClockSrc.
//
// Keys of one host (all carry the host in a hash tag, so a Redis Cluster
// keeps them in one slot):
//
//	<prefix>{<host>}:t  GCRA theoretical arrival time (string, µs), PX expiry
//	<prefix>{<host>}:f  leases in flight (sorted set: lease ID -> expiry µs),
//	                    PX expiry at least 1 s after its last lease's
//	                    (processes may use different lease TTLs)
//	<prefix>{<host>}:x  the lease set's expiry (string, µs; same PX), so
//	                    that an admission need not ask for it
//	<prefix>{<host>}:m  learned limits (string "interval µs,max in flight,
//	                    paused until µs", each field possibly empty), PX
//	                    expiry
//
// A Lua script pays about as much for each redis.call as for the command
// itself, so the admission script reads its three strings in one MGET, and
// touches the lease set only as much as the admission needs.

// clockSrc is the prologue of every script: now, in µs, from the server's
// clock.
const clockSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
`

// testClockSrc replaces clockSrc in the package's tests: now is the first
// argument, removed from ARGV so that the rest of the script is the same.
const testClockSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(table.remove(ARGV, 1))
`

// learnedSrc parses the learned limits string v (false when absent) into
// interval, max in flight and pause end (each empty when not learned).
const learnedSrc = `
local function learned(v)
  if v then
    local i, s, p = string.match(v, '^(%d*),(%d*),(%d*)$')
    if i then return i, s, p end
  end
  return '', '', ''
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
// A released lease is handed on: the i-th admitted request takes over the
// i-th released lease's ID (its score is updated) instead of a new one, and
// the released leases not handed on are removed at the end (a set that
// empties is deleted: removing and adding a member each time would also
// recreate the key and its expiry). A request that takes over a lease
// leaves the count in flight as it was, so the set is counted only when a
// new lease is added (or the cap was learned: it may have been lowered).
// Released leases are counted as gone: they were this process's and held
// until now, so present unless they expired; if some had expired, the
// count was short, and the turns given beyond the cap are taken back
// before the reply.
//
// KEYS: tat, leases, learned, leases expiry.
// ARGV: interval µs (0 = unpaced), burst, max in flight (0 =
// no cap), lease TTL µs, number of released lease IDs r, how many of them
// keep their expiry (c: the first c expire at least two thirds of a lease
// TTL from now, so a request given its turn at once takes one over without
// a new expiry), then the r IDs, then for each request: cost, maximum wait
// µs, new lease ID (empty for the first r).
// Reply: {granted k, reason, wait µs, interval µs in force, cap in force,
// then the k waits µs (0 = at once)}. reason (why request k+1 was not
// admitted): 0 none (all admitted), 1 paused, 2 rate (wait: until its
// turn), 3 no free slot (wait: until the oldest lease expires), 4 its cost
// exceeds what the bucket can ever hold. When the cap in force is not 0,
// admitted request i holds the lease of the i-th released ID when i <= r,
// else its own new ID.
const acquireSrc = `
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local nrel = tonumber(ARGV[5])
local nkeep = tonumber(ARGV[6])
local got = redis.call('MGET', KEYS[1], KEYS[3], KEYS[4])
local capLearned, pause = false, 0
if got[2] then
  local li, ls, lp = string.match(got[2], '^(%d*),(%d*),(%d*)$')
  if li then
    if li ~= '' then interval = tonumber(li) end
    if ls ~= '' then slots, capLearned = tonumber(ls), true end
    pause = tonumber(lp) or 0
  end
end
if pause > now then
  if nrel > 0 then redis.call('ZREM', KEYS[2], unpack(ARGV, 7, 6 + nrel)) end
  return {0, 1, pause - now, interval, slots}
end
local tat, tat0 = 0, 0
if interval > 0 then
  tat = tonumber(got[1] or '0') or 0
  if pause > 0 then
    local floor = pause + (burst - 1) * interval
    if tat < floor then tat = floor end
  end
  tat0 = tat
end
-- inflight: live leases other than the released ones, plus the turns
-- given so far; counted (ZCARD) only when needed.
local inflight, counted, purged, fresh, absent = 0, false, false, false, 0
local count, tats, ids
if slots > 0 then
  count = function(k)
    local n = redis.call('ZCARD', KEYS[2])
    if n == 0 then fresh = true end
    local unused = nrel - (k - 1)
    if unused < 0 then unused = 0 end
    inflight = n - unused
    if inflight < 0 then inflight = 0 end
    counted = true
  end
  tats, ids = {}, {}
end
local reason, rwait = 0, 0
local waits, ng = {}, 0 -- the turns given: waits[1..ng]
local lastexp = 0
local base, nargs = 7 + nrel, #ARGV
while base + 2 <= nargs do
  local cost = tonumber(ARGV[base])
  local maxwait = tonumber(ARGV[base + 1])
  local k = ng + 1
  if slots > 0 then
    if not counted and (k > nrel or capLearned) then count(k) end
    if counted and inflight >= slots and not purged then
      -- Expired leases (of dead processes) are dropped only when they matter.
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
      purged = true
      count(k)
    end
    if counted and inflight >= slots then
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local wait = 1000
      if first[2] then wait = tonumber(first[2]) - now end
      reason, rwait = 3, wait
      break
    end
  end
  local wait = 0
  if interval > 0 then
    if cost > burst then
      reason = 4
      break
    end
    local t = tat
    if t < now then t = now end
    local newtat = t + cost * interval
    wait = newtat - burst * interval - now
    if wait < 0 then wait = 0 end
    if wait > maxwait then
      reason, rwait = 2, wait
      break
    end
    tat = newtat
  end
  if slots > 0 then
    tats[k] = tat
    local id = ARGV[base + 2]
    if k <= nrel then id = ARGV[6 + k] end
    ids[k] = id
    if k > nkeep or wait > 0 then
      local exp = now + wait + ttl
      if redis.call('ZADD', KEYS[2], string.format('%d', exp), id) == 1 and k <= nrel then
        absent = absent + 1
      end
      if exp > lastexp then lastexp = exp end
    end
    inflight = inflight + 1
  end
  waits[k], ng = wait, k
  base = base + 3
end
local used = 0
if slots > 0 then used = ng end
if used < nrel then
  absent = absent + (nrel - used) - redis.call('ZREM', KEYS[2], unpack(ARGV, 7 + used, 6 + nrel))
end
if absent > 0 and slots > 0 and ng > 0 then
  -- Some released leases had expired: the count was short. Take back the
  -- turns given beyond the cap (the last ones; nobody has them yet).
  local n = redis.call('ZCARD', KEYS[2])
  while n > slots and ng > 0 do
    redis.call('ZREM', KEYS[2], ids[ng])
    tats[ng], ids[ng], waits[ng] = nil, nil, nil
    ng, n = ng - 1, n - 1
    reason, rwait = 3, 1000
  end
  tat = tats[ng] or tat0
end
if tat ~= tat0 then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
end
if lastexp > 0 then
  -- The set outlives its last lease by at least 1 s; when extended, with
  -- room to spare (one more TTL), so most calls need not touch it.
  local need = lastexp + 1000000
  if fresh or absent > 0 or (tonumber(got[3] or '0') or 0) < need then
    local exp = need + ttl
    local px = math.floor((exp - now) / 1000)
    redis.call('PEXPIRE', KEYS[2], px)
    redis.call('SET', KEYS[4], string.format('%d', exp), 'PX', px)
  end
end
return {ng, reason, rwait, interval, slots, unpack(waits, 1, ng)}
`

// learnSrc stores what a response taught about a host.
//
// KEYS: learned.
// ARGV: interval µs or "", max in flight or "", pause length
// µs or "", expiry ms.
// Reply: the pause end in µs (0 when none).
const learnSrc = `
local i, s, p = learned(redis.call('GET', KEYS[1]))
if ARGV[1] ~= '' then i = ARGV[1] end
if ARGV[2] ~= '' then s = ARGV[2] end
local ttl = tonumber(ARGV[4])
local pause = tonumber(p) or 0
if ARGV[3] ~= '' then
  local untilp = now + tonumber(ARGV[3])
  if untilp > pause then
    pause = untilp
    p = string.format('%d', pause)
  end
end
if pause > now then
  local left = math.floor((pause - now) / 1000) + 1000
  if left > ttl then ttl = left end
end
redis.call('SET', KEYS[1], i .. ',' .. s .. ',' .. p, 'PX', ttl)
return pause
`

// lowerSrc lowers a host's bucket to at most ARGV avail cost units: the
// TAT moves on to now + (burst - avail) x interval when it is earlier (a
// learned interval, when the host has one, wins over the configured one,
// as in the acquire script). It never moves the TAT back.
//
// KEYS: tat, learned. ARGV: interval µs, burst, avail. Reply: 1 when the
// TAT moved.
const lowerSrc = `
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local avail = tonumber(ARGV[3])
local li = learned(redis.call('GET', KEYS[2]))
if li and li ~= '' then interval = tonumber(li) end
if interval <= 0 or avail >= burst then return 0 end
if avail < 0 then avail = 0 end
local want = now + (burst - avail) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat >= want then return 0 end
redis.call('SET', KEYS[1], string.format('%d', want), 'PX', math.floor((want - now) / 1000) + 1000)
return 1
`

// renewSrc extends the leases still present (a lease that expired is not
// resurrected: its slot may already be taken).
//
// KEYS: leases, leases expiry. ARGV: lease TTL µs, lease IDs...
// Reply: the IDs that were no longer held.
const renewSrc = `
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
  local need = math.floor(ttl / 1000) + 1000
  if redis.call('PTTL', KEYS[1]) < need then
    local px = need + math.floor(ttl / 1000)
    redis.call('PEXPIRE', KEYS[1], px)
    redis.call('SET', KEYS[2], string.format('%d', now + px * 1000), 'PX', px)
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
// ARGV: released lease IDs...
// Reply: {now µs, learned interval µs or -1, learned cap or -1, paused until
// µs or 0, leases alive, TAT µs or 0}.
const inspectSrc = `
if #ARGV > 0 then redis.call('ZREM', KEYS[2], unpack(ARGV)) end
local got = redis.call('MGET', KEYS[1], KEYS[3])
local i, s, p = learned(got[2])
local n = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%d', now), '+inf')
return {now, tonumber(i) or -1, tonumber(s) or -1, tonumber(p) or 0, n, tonumber(got[1] or '0') or 0}
`

// scripts are the Lua scripts of one Limiter (a redis.Script caches its
// SHA-1 and is therefore kept per Limiter, not in package state).
type scripts struct {
	acquire, learn, renew, release, inspect, lower *redis.Script
}

// newScripts returns the scripts reading the server's clock, or with test,
// the clock given as their first argument.
func newScripts(test bool) scripts {
	clock := clockSrc
	if test {
		clock = testClockSrc
	}
	return scripts{
		acquire: redis.NewScript(clock + acquireSrc),
		learn:   redis.NewScript(clock + learnedSrc + learnSrc),
		lower:   redis.NewScript(clock + learnedSrc + lowerSrc),
		renew:   redis.NewScript(clock + renewSrc),
		release: redis.NewScript(releaseSrc),
		inspect: redis.NewScript(clock + learnedSrc + inspectSrc),
	}
}
