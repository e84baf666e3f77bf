-- Shared by every llmrl script. The arithmetic mirrors llmrl::backend::fair_share and the
-- in-process fleet exactly; numbers are Lua doubles, exact for integers below 2^53.
--
-- KEYS[1] is the limiter's key prefix, hash tag included ("llmrl:{svc}"): every key below
-- derives from it, so all of a limiter's keys live in one Redis Cluster slot.
local P = KEYS[1]
local MINUTE, DAY = 60000, 86400000
-- Window keys outlive their window by a margin, for settlements that arrive late.
local MARGIN = 120000

local function key(...) return P .. ':' .. table.concat({...}, ':') end

local function now_ms(client_now)
  if client_now ~= nil and client_now ~= '' then return tonumber(client_now) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Resources 0..3 are window limits (0, 2 per minute; 1, 3 per day), 4 is concurrency.
local function is_minute(r) return r == 0 or r == 2 end
local function window_of(r, minute, day)
  if r == 4 then return 0 end
  if is_minute(r) then return minute end
  return day
end
-- Set on a window key when it is created: it outlives its window by the margin.
local function window_ttl(r)
  if is_minute(r) then return MINUTE + MARGIN end
  return DAY + MARGIN
end

local function share(limit, n, rank)
  if n <= 0 then return limit end
  local base = math.floor(limit / n)
  if rank < limit % n then return base + 1 end
  return base
end

local function unused(s, own)
  if own >= s then return 0 end
  return s - own
end

local function available(own_unused, all_unused, remaining)
  if remaining < 0 then return 0 end
  local all = math.max(all_unused, own_unused)
  if remaining >= all or all == 0 then return own_unused end
  return math.floor(own_unused * remaining / all)
end

-- Fleet-wide usage of resource r of model m in the current window (in flight for r = 4).
local function used_key(m, r, minute, day)
  if r == 4 then return key('inflight', m) end
  return key('used', m, r, window_of(r, minute, day))
end
local function get_num(k) return tonumber(redis.call('GET', k) or '0') end
local function add_used(m, r, minute, day, delta)
  if delta == 0 then return end
  local k = used_key(m, r, minute, day)
  if r ~= 4 then redis.call('SET', k, 0, 'PX', window_ttl(r), 'NX') end
  local v = redis.call('INCRBY', k, delta)
  if tonumber(v) < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
end

-- A member's own usage: one hash per window kind ('m' minute, 'd' day, 'c' concurrency),
-- holding the window it belongs to; a hash of an ended window reads as zero.
local function own_hash(member, r)
  if r == 4 then return key('own', member, 'c') end
  if is_minute(r) then return key('own', member, 'm') end
  return key('own', member, 'd')
end
local function own_get(member, m, r, minute, day)
  local h = own_hash(member, r)
  if r ~= 4 then
    local w = redis.call('HGET', h, 'w')
    if w == false or tonumber(w) ~= window_of(r, minute, day) then return 0 end
  end
  return tonumber(redis.call('HGET', h, m .. ':' .. r) or '0')
end
local function own_set(member, m, r, minute, day, value)
  local h = own_hash(member, r)
  if r ~= 4 then
    local w = window_of(r, minute, day)
    local stored = redis.call('HGET', h, 'w')
    if stored == false or tonumber(stored) ~= w then
      redis.call('DEL', h)
      redis.call('HSET', h, 'w', w)
    end
    redis.call('PEXPIRE', h, window_ttl(r))
  end
  if value < 0 then value = 0 end
  redis.call('HSET', h, m .. ':' .. r, value)
end

-- Σ over members of max(0, share − own), per resource and window; a fresh window starts at
-- the limit (every member's usage is zero there, and the shares sum to the limit).
local function unused_key(m, r, minute, day)
  if r == 4 then return key('unused', m, 4) end
  return key('unused', m, r, window_of(r, minute, day))
end
local function unused_get(m, r, minute, day, limit)
  local v = redis.call('GET', unused_key(m, r, minute, day))
  if v == false then return limit end
  return tonumber(v)
end
local function unused_set(m, r, minute, day, value)
  local k = unused_key(m, r, minute, day)
  if r == 4 then redis.call('SET', k, value)
  else redis.call('SET', k, value, 'PX', window_ttl(r)) end
end

-- Limits per model come in ARGV as 5 numbers each (-1: no such limit), starting at `at`.
local function read_limits(models, at)
  local limits = {}
  for m = 0, models - 1 do
    limits[m] = {}
    for r = 0, 4 do limits[m][r] = tonumber(ARGV[at + m * 5 + r]) end
  end
  return limits
end

local function members() return key('members') end

-- Moves member's own usage of (m, r) by delta, keeping the unused sum exact.
local function add_own(member, rank, n, m, r, minute, day, limit, delta)
  if delta == 0 then return end
  local s = share(limit, n, rank)
  local before = own_get(member, m, r, minute, day)
  local after = before + delta
  if after < 0 then after = 0 end
  own_set(member, m, r, minute, day, after)
  local sum = unused_get(m, r, minute, day, limit) - unused(s, before) + unused(s, after)
  if sum < 0 then sum = 0 end
  unused_set(m, r, minute, day, sum)
end

-- Shares follow membership: recompute every unused sum of the current windows.
local function reshare(models, limits, minute, day)
  local list = redis.call('ZRANGE', members(), 0, -1)
  local n = #list
  for m = 0, models - 1 do
    for r = 0, 4 do
      local limit = limits[m][r]
      if limit >= 0 then
        local sum = 0
        for i, member in ipairs(list) do
          sum = sum + unused(share(limit, n, i - 1), own_get(member, m, r, minute, day))
        end
        unused_set(m, r, minute, day, sum)
      end
    end
  end
end

-- The figures of model m as member (rank, n) sees them: share, used, own, others' unused.
local function figures(member, rank, n, m, limits, minute, day, out)
  for r = 0, 4 do
    local limit = limits[m][r]
    if limit < 0 then
      table.insert(out, 0); table.insert(out, 0); table.insert(out, 0); table.insert(out, 0)
    else
      local s = share(limit, n, rank)
      local own = own_get(member, m, r, minute, day)
      local sum = unused_get(m, r, minute, day, limit)
      local others = sum - unused(s, own)
      if others < 0 then others = 0 end
      table.insert(out, s)
      table.insert(out, get_num(used_key(m, r, minute, day)))
      table.insert(out, own)
      table.insert(out, others)
    end
  end
end

local function view(member, models, limits, minute, day)
  local rank = redis.call('ZRANK', members(), member)
  local n = redis.call('ZCARD', members())
  local out = {n, minute, day}
  for m = 0, models - 1 do figures(member, rank, n, m, limits, minute, day, out) end
  return out
end

-- Removes a member: its in-flight units return; its window usage stays counted and is kept
-- aside (a day at most) in case it registers again and reports it anew.
local function remove(member, models, limits, minute, day, evicted)
  local aside = key('evicted', member)
  redis.call('DEL', aside)
  for m = 0, models - 1 do
    local inflight = own_get(member, m, 4, minute, day)
    if inflight > 0 then add_used(m, 4, minute, day, -inflight) end
    if evicted then
      for r = 0, 3 do
        local own = own_get(member, m, r, minute, day)
        if own > 0 then
          redis.call('HSET', aside, m .. ':' .. r .. ':' .. window_of(r, minute, day), own)
        end
      end
    end
  end
  if evicted then redis.call('PEXPIRE', aside, DAY) end
  redis.call('DEL', own_hash(member, 0), own_hash(member, 1), own_hash(member, 4))
  redis.call('ZREM', members(), member)
  redis.call('ZREM', key('seen'), member)
end
