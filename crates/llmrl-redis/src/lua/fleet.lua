-- llmrl's fleet on Redis (SPEC §7): one library, one entry point per atomic operation. The
-- arithmetic mirrors llmrl::backend::fair_share exactly; numbers are Lua doubles, exact for
-- integers below 2^53.
--
-- Every key derives from P = KEYS[1], the limiter's prefix as a hash tag ("{svc}"), so that all
-- of a limiter's keys live in one Redis Cluster slot:
--   P:fleet            hash. n: members; N: what shares divide by (n, or a floor after a
--                      restart, see register); fl, fu: that floor and until when it holds;
--                      v: the state version; seq: registrations so far. Per member: r:<id> its
--                      rank (the oldest is 0), g:<id> its registration generation. Per model m:
--                      u4:m jobs in flight, x4:m Σ over members of unused concurrency shares,
--                      o4:m:<id> the member's jobs in flight.
--   P:minute:<m>:<w>   hash per model and minute window w: u0, u2 used; x0, x2 Σ over members
--                      of their unused shares; o0:<id>, o2:<id> the member's own usage. Set to
--                      expire once, when created, after its window.
--   P:day:<m>:<w>      the same for day windows (resources 1 and 3).
--   P:members          zset: member → registration order.
--   P:seen             zset: member → last heartbeat.
--   P:limits           the limits every member agreed on (while there are members).
--   P:early:<id>       usage the fleet counted for a member it did not know (evicted, flushed)
--                      or whose registration was on its way, by registration generation, for
--                      that registration to reconcile.
--   P:changes          the pub/sub channel.
-- Resources: 0 tokens/minute, 1 tokens/day, 2 requests/minute, 3 requests/day, 4 concurrency.
--
-- Every reply with figures is {status, n, N, rank, minute, day, version, then per model and
-- per resource with a limit: used, own, Σ unused shares}; the client derives the share and
-- the other members' unused part from them.

local MINUTE, DAY = 60000, 86400000
-- Window keys outlive their window by a margin, for settlements that arrive late.
local MARGIN = 120000
local TTL = {[0] = MINUTE + MARGIN, DAY + MARGIN, MINUTE + MARGIN, DAY + MARGIN}
local KIND = {[0] = ':minute:', ':day:', ':minute:', ':day:'}

local function now_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function window_of(r, minute, day)
  if r == 4 then return 0 end
  if r == 0 or r == 2 then return minute end
  return day
end

local function share(limit, N, rank)
  if N <= 0 then return limit end
  local base = math.floor(limit / N)
  if rank < limit % N then return base + 1 end
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

-- Σ of the first n of N shares: the unused sum of a window nobody has used yet.
local function fresh(limit, N, n)
  if N <= 0 then return limit end
  return n * math.floor(limit / N) + math.min(n, limit % N)
end

---------------------------------------------------------------------------------------------
-- The hot path (admit, settle): every value read once (one HMGET per hash), every hash
-- written once (one HSET) per batch of operations, and nothing built twice. Lua in Redis is
-- slow enough that every table, concatenation and number conversion counts: the names and
-- parsed limits of a "shape" (prefix, model, limits, member) are kept between calls, with the
-- buffers reads and writes reuse. (A function library keeps them for its lifetime; run as an
-- EVAL script they last one call.)

local shapes, shape_count = {}, 0
local estimates, estimate_count = {}, 0

local KINDS = {
  {resources = {1, 3}, tag = ':minute:', ttl = MINUTE + MARGIN, day = false},
  {resources = {2, 4}, tag = ':day:', ttl = DAY + MARGIN, day = true},
}

-- A shape for member id on model m (a string) with limits L (1-based: resource r at r + 1).
local function make_shape(P, m, L, id)
  local s = {
    P = P, m = m, id = id, L = L, F = P .. ':fleet',
    U = {0, 0, 0, 0, 0}, X = {0, 0, 0, 0, 0}, O = {0, 0, 0, 0, 0},
    moved = {false, false, false, false, false}, kinds = {},
  }
  if L[5] >= 0 then
    s.fleet_read = {'N', 'n', 'v', 'r:' .. id, 'g:' .. id, 'u4:' .. m, 'x4:' .. m,
      'o4:' .. m .. ':' .. id}
    s.fleet_write = {'u4:' .. m, '', 'x4:' .. m, '', 'o4:' .. m .. ':' .. id, ''}
  else
    s.fleet_read = {'N', 'n', 'v', 'r:' .. id, 'g:' .. id}
  end
  for _, kind in ipairs(KINDS) do
    local k = {rs = {}, names = {}, values = {}, prefix = P .. kind.tag .. m .. ':',
               ttl = kind.ttl, day = kind.day, w = -1, key = '', new = false}
    for _, i in ipairs(kind.resources) do
      if L[i] >= 0 then
        local r = i - 1
        k.rs[#k.rs + 1] = i
        for _, name in ipairs({'u' .. r, 'x' .. r, 'o' .. r .. ':' .. id}) do
          k.names[#k.names + 1] = name
          k.values[#k.values + 1] = name
          k.values[#k.values + 1] = ''
        end
      end
    end
    if #k.rs > 0 then s.kinds[#s.kinds + 1] = k end
  end
  return s
end

-- The shape of a call: spec is "<model>\n<L0>,<L1>,<L2>,<L3>,<L4>\n<member>".
local function shape_of(P, spec)
  local known = shapes[P]
  local s = known and known[spec]
  if s then return s end
  if shape_count >= 256 then shapes, shape_count = {}, 0 end
  known = shapes[P]
  if not known then
    known = {}
    shapes[P] = known
  end
  local m, l0, l1, l2, l3, l4, id =
    string.match(spec, '^(%d+)\n(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+)\n(.*)$')
  if not m then error('llmrl: malformed call') end
  s = make_shape(P, m, {tonumber(l0), tonumber(l1), tonumber(l2), tonumber(l3), tonumber(l4)}, id)
  known[spec] = s
  shape_count = shape_count + 1
  return s
end

-- A job type's estimates, "<e0>,<e1>,<e2>,<e3>", with concurrency's (one unit) last.
local function estimates_of(spec)
  local e = estimates[spec]
  if e then return e end
  if estimate_count >= 256 then estimates, estimate_count = {}, 0 end
  local a, b, c, d = string.match(spec, '^(%d+),(%d+),(%d+),(%d+)$')
  if not a then error('llmrl: malformed estimates') end
  e = {tonumber(a), tonumber(b), tonumber(c), tonumber(d), 1}
  estimates[spec] = e
  estimate_count = estimate_count + 1
  return e
end

-- Reads the fleet hash and the window hashes of shape s at (minute, day) into s.U (used),
-- s.X (Σ unused shares; false: nobody wrote it in this window yet) and s.O (own). Returns N,
-- n, v, and the member's rank and generation (nil: unknown member).
local function read(s, minute, day)
  local U, X, O = s.U, s.X, s.O
  local f = redis.call('HMGET', s.F, unpack(s.fleet_read))
  if s.L[5] >= 0 then
    U[5], O[5] = tonumber(f[6] or 0), tonumber(f[8] or 0)
    X[5] = f[7] and tonumber(f[7]) or false
  end
  for _, k in ipairs(s.kinds) do
    local w = minute
    if k.day then w = day end
    if k.w ~= w then
      k.w, k.key = w, k.prefix .. w
    end
    local v = redis.call('HMGET', k.key, unpack(k.names))
    local new = true
    for j, i in ipairs(k.rs) do
      local u, x, o = v[3 * j - 2], v[3 * j - 1], v[3 * j]
      if u or x or o then new = false end
      U[i], O[i] = tonumber(u or 0), tonumber(o or 0)
      X[i] = x and tonumber(x) or false
    end
    k.new = new
  end
  local rank, gen = f[4], f[5]
  if rank then rank = tonumber(rank) end
  if gen then gen = tonumber(gen) end
  return tonumber(f[1] or 0), tonumber(f[2] or 0), tonumber(f[3] or 0), rank, gen
end

-- Moves the member's own usage of resource i to `after` (never below zero), keeping the
-- unused sum exact.
local function set_own(s, i, after, N, n, rank)
  if after < 0 then after = 0 end
  local L, X, O = s.L, s.X, s.O
  local sh = share(L[i], N, rank)
  local x = (X[i] or fresh(L[i], N, n)) - unused(sh, O[i]) + unused(sh, after)
  if x < 0 then x = 0 end
  X[i], O[i] = x, after
end

-- Writes what moved (s.moved): one HSET per hash, and an expiry on a window hash this
-- creates. Without `known` (the member is unknown), only fleet-wide usage. Numbers go as
-- strings made with %d: Redis would format them with %.17g, several times slower. Returns
-- whether anything moved.
local function write(s, known, N, n)
  local U, X, O, L, moved, fmt = s.U, s.X, s.O, s.L, s.moved, string.format
  local any = false
  for _, k in ipairs(s.kinds) do
    local here = false
    for _, i in ipairs(k.rs) do
      if moved[i] then here = true end
    end
    if here then
      any = true
      if known then
        local values = k.values
        for j, i in ipairs(k.rs) do
          local at = 6 * j - 4
          values[at] = fmt('%d', U[i])
          values[at + 2] = fmt('%d', X[i] or fresh(L[i], N, n))
          values[at + 4] = fmt('%d', O[i])
        end
        redis.call('HSET', k.key, unpack(values))
      else
        for j, i in ipairs(k.rs) do
          if moved[i] then redis.call('HSET', k.key, k.names[3 * j - 2], fmt('%d', U[i])) end
        end
      end
      if k.new then
        redis.call('PEXPIRE', k.key, k.ttl)
        k.new = false
      end
    end
  end
  if moved[5] then
    any = true
    local fw = s.fleet_write
    if known then
      fw[2], fw[4], fw[6] = fmt('%d', U[5]), fmt('%d', X[5] or fresh(L[5], N, n)), fmt('%d', O[5])
      redis.call('HSET', s.F, unpack(fw))
    else
      redis.call('HSET', s.F, fw[1], fmt('%d', U[5]))
    end
  end
  return any
end

local function figures(out, s, n, N, rank, minute, day, v)
  local U, X, O, L = s.U, s.X, s.O, s.L
  local j = #out
  out[j + 1], out[j + 2], out[j + 3], out[j + 4], out[j + 5], out[j + 6] =
    n, N, rank or -1, minute, day, v
  j = j + 7
  for i = 1, 5 do
    if L[i] >= 0 then
      out[j], out[j + 1], out[j + 2] = U[i], O[i], X[i] or fresh(L[i], N, n)
      j = j + 3
    end
  end
end

-- Admits one job if every limit, concurrency and the member's fair share allow it, and
-- reserves it. Returns 1 (admitted) or 0.
local function admit_one(s, e, N, n, rank)
  local L, U, X, O, moved = s.L, s.U, s.X, s.O, s.moved
  for i = 1, 5 do
    local limit = L[i]
    if limit >= 0 then
      local est, remaining = e[i], limit - U[i]
      if remaining < est then return 0 end
      if est > 0 then
        local own_unused = unused(share(limit, N, rank), O[i])
        if available(own_unused, X[i] or fresh(limit, N, n), remaining) < est then return 0 end
      end
    end
  end
  for i = 1, 5 do
    local est = e[i]
    if L[i] >= 0 and est > 0 then
      U[i] = U[i] + est
      set_own(s, i, O[i] + est, N, n, rank)
      moved[i] = true
    end
  end
  return 1
end

-- Replaces a reservation by what happened to it (SPEC §4.2–4.3); the arguments from `at` are
-- generation, reserved_minute, reserved_day, outcome ('u' used, 'x' unknown, 'n' never
-- started), estimates, a0..a3 (actual usage).
-- A settlement carries the generation of the member's registration it follows. One from
-- before the member's current registration is already in the usage that registration
-- reported: it is dropped (0). One the fleet cannot attribute yet (the member is unknown, or
-- its registration is on its way) counts fleet-wide at once and is kept aside for the next
-- registration to reconcile. Returns 1 if applied, 0 if dropped, -1 if the member is unknown.
local function settle_one(s, args, at, minute, day, N, n, rank, g)
  local gen = args[at]
  local mine = tonumber(gen)
  if rank and g and g > mine then return 0 end
  local early = not (rank and g == mine)
  local rmin, rday, outcome = tonumber(args[at + 1]), tonumber(args[at + 2]), args[at + 3]
  local e = estimates_of(args[at + 4])
  local L, U, O, moved = s.L, s.U, s.O, s.moved
  local aside
  for i = 1, 4 do
    if L[i] >= 0 then
      local same
      if i == 1 or i == 3 then same = rmin == minute else same = rday == day end
      local delta = 0
      if outcome == 'u' then
        delta = tonumber(args[at + 4 + i]) - e[i]
        if delta < 0 and not same then delta = 0 end
      elseif outcome == 'n' and same then
        delta = -e[i]
      end
      if delta ~= 0 then
        local before = U[i]
        local after = before + delta
        if after < 0 then after = 0 end
        U[i], moved[i] = after, true
        if not early then
          set_own(s, i, O[i] + delta, N, n, rank)
        elseif after ~= before then
          aside = aside or {}
          aside[#aside + 1] = gen .. ':' .. s.m .. ':' .. (i - 1) .. ':' .. window_of(i - 1, minute, day)
          aside[#aside + 1] = after - before
        end
      end
    end
  end
  if L[5] >= 0 then
    if early then
      -- Released once the registration has counted the job as in flight.
      aside = aside or {}
      aside[#aside + 1] = gen .. ':' .. s.m .. ':4'
      aside[#aside + 1] = 1
    else
      U[5], moved[5] = math.max(0, U[5] - 1), true
      set_own(s, 5, O[5] - 1, N, n, rank)
    end
  end
  if aside then
    local key = s.P .. ':early:' .. s.id
    for j = 1, #aside, 2 do redis.call('HINCRBY', key, aside[j], aside[j + 1]) end
    redis.call('PEXPIRE', key, DAY + MARGIN)
  end
  if not rank then return -1 end
  return 1
end

-- Runs one member's admissions and settlements, in order, as one atomic step: each hash is
-- read once and written once for the whole batch, and the state version moves once.
-- ARGV: client_now ('' = server time), S (shapes), S shape specs, then the operations:
--   'a', shape number (from 1), estimates                                     (admit)
--   's', shape number, generation, reserved_minute, reserved_day, outcome,
--        estimates, a0..a3                                                     (settle)
-- Returns the status of each operation (admit: 1 admitted, 0 refused; settle: 1 applied, 0
-- dropped; -1: the member is not registered), then the figures of each shape after the batch.
local function batch(keys, args)
  local now = now_ms(args[1])
  local minute = math.floor(now / MINUTE)
  local day = math.floor(minute / 1440)
  local count = tonumber(args[2])
  local used, state = {}, {}
  for j = 1, count do
    local s = shape_of(keys[1], args[2 + j])
    used[j] = s
    local N, n, v, rank, g = read(s, minute, day)
    state[j] = {N, n, v, rank, g}
    local moved = s.moved
    moved[1], moved[2], moved[3], moved[4], moved[5] = false, false, false, false, false
  end
  local out = {}
  local i, last = 3 + count, #args
  while i <= last do
    local op, j = args[i], tonumber(args[i + 1])
    local s, st = used[j], state[j]
    if op == 'a' then
      if st[4] then
        out[#out + 1] = admit_one(s, estimates_of(args[i + 2]), st[1], st[2], st[4])
      else
        out[#out + 1] = -1
      end
      i = i + 3
    else
      out[#out + 1] = settle_one(s, args, i + 2, minute, day, st[1], st[2], st[4], st[5])
      i = i + 11
    end
  end
  local v, any = 0, false
  for j = 1, count do
    local st = state[j]
    v = st[3]
    if write(used[j], st[4] ~= nil, st[1], st[2]) then any = true end
  end
  if any and v > 0 then v = redis.call('HINCRBY', keys[1] .. ':fleet', 'v', '1') end
  for j = 1, count do
    local st = state[j]
    figures(out, used[j], st[2], st[1], st[4], minute, day, v)
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Membership (register, sync, unregister): rare, so written for clarity.

-- Limits per model come as 5 arguments each (-1: no such limit), 0-based by resource.
local function read_limits(args, at, models)
  local limits = {}
  for m = 0, models - 1 do
    local L = {}
    for r = 0, 4 do L[r] = tonumber(args[at + m * 5 + r]) end
    limits[m] = L
  end
  return limits
end

-- Where resource r of model m lives: the key, and its used, unused-sum and own field names
-- (the own field is followed by the member id).
local function place(P, m, r, minute, day)
  if r == 4 then return P .. ':fleet', 'u4:' .. m, 'x4:' .. m, 'o4:' .. m .. ':' end
  return P .. KIND[r] .. m .. ':' .. window_of(r, minute, day), 'u' .. r, 'x' .. r, 'o' .. r .. ':'
end

local function version_bump(P)
  return redis.call('HINCRBY', P .. ':fleet', 'v', '1')
end

-- Sets one field of a window hash, setting its expiry if this creates it.
local function hset(key, r, field, value)
  local new = r ~= 4 and redis.call('EXISTS', key) == 0
  redis.call('HSET', key, field, value)
  if new then redis.call('PEXPIRE', key, TTL[r]) end
end

local function own_get(P, id, m, r, minute, day)
  local key, _, _, o = place(P, m, r, minute, day)
  return tonumber(redis.call('HGET', key, o .. id) or 0)
end

local function used_add(P, m, r, minute, day, delta)
  if delta == 0 then return end
  local key, u = place(P, m, r, minute, day)
  local v = tonumber(redis.call('HGET', key, u) or 0) + delta
  if v < 0 then v = 0 end
  hset(key, r, u, v)
end

-- Shares follow membership (and the floor): recomputes n, N, every rank and every unused sum
-- of the current windows. With nobody left, the fleet's own keys go (its window counters
-- stay, they count what was used).
local function reshare(P, models, limits, minute, day, now)
  local F = P .. ':fleet'
  local list = redis.call('ZRANGE', P .. ':members', 0, -1)
  local n = #list
  if n == 0 then
    redis.call('DEL', F, P .. ':limits')
    return
  end
  local N = n
  local floor = redis.call('HMGET', F, 'fl', 'fu')
  if floor[1] then
    -- The floor holds until the stale threshold, or until the members are as many.
    if tonumber(floor[2]) > now and tonumber(floor[1]) > n then
      N = tonumber(floor[1])
    else
      redis.call('HDEL', F, 'fl', 'fu')
    end
  end
  local w = {'n', n, 'N', N}
  for i, id in ipairs(list) do
    w[#w + 1] = 'r:' .. id
    w[#w + 1] = i - 1
  end
  redis.call('HSET', F, unpack(w))
  for m = 0, models - 1 do
    for r = 0, 4 do
      local limit = limits[m][r]
      if limit >= 0 then
        local key, _, x, o = place(P, m, r, minute, day)
        local names = {}
        for i, id in ipairs(list) do names[i] = o .. id end
        local owns = redis.call('HMGET', key, unpack(names))
        local sum = 0
        for i = 1, n do sum = sum + unused(share(limit, N, i - 1), tonumber(owns[i] or 0)) end
        hset(key, r, x, sum)
      end
    end
  end
end

-- Member id's figures for every model, after `status`, laid out as the hot path's.
local function view(P, id, models, limits, minute, day, status)
  local out = {status}
  for m = 0, models - 1 do
    local L = limits[m]
    local s = make_shape(P, tostring(m), {L[0], L[1], L[2], L[3], L[4]}, id)
    local N, n, v, rank = read(s, minute, day)
    figures(out, s, n, N, rank, minute, day, v)
  end
  return out
end

-- Removes a member: its in-flight units return; its window usage stays counted and, if it was
-- evicted, is kept aside in case it registers again and reports that usage anew.
local function remove(P, id, models, limits, minute, day, evicted)
  local F = P .. ':fleet'
  local gen = redis.call('HGET', F, 'g:' .. id) or '0'
  local early = P .. ':early:' .. id
  for m = 0, models - 1 do
    for r = 0, 4 do
      if limits[m][r] >= 0 then
        local key, _, _, o = place(P, m, r, minute, day)
        local own = tonumber(redis.call('HGET', key, o .. id) or 0)
        if r == 4 then
          used_add(P, m, 4, minute, day, -own)
        elseif evicted and own > 0 then
          redis.call('HINCRBY', early, gen .. ':' .. m .. ':' .. r .. ':' .. window_of(r, minute, day), own)
        end
        redis.call('HDEL', key, o .. id)
      end
    end
  end
  if evicted then
    if redis.call('EXISTS', early) == 1 then redis.call('PEXPIRE', early, DAY + MARGIN) end
  else
    redis.call('DEL', early)
  end
  redis.call('HDEL', F, 'r:' .. id, 'g:' .. id)
  redis.call('ZREM', P .. ':members', id)
  redis.call('ZREM', P .. ':seen', id)
end

-- Joins the fleet, or joins it again, reporting the member's own usage so that a fleet that
-- lost its state (restart, flush) recovers its figures.
-- ARGV: member, client_now, limits descriptor, models, L (models × 5), own_minute, own_day,
--       own (models × 5), last known fleet size, generation, first ('1': this process's first
--       registration), stale_ms
-- The last known fleet size sets a floor under N until the stale threshold has passed: after
-- a restart, the first member back must not take the shares of those still coming.
-- Returns {-2} on a limits mismatch, else {1, figures...}.
local function register(keys, args)
  local P, id = keys[1], args[1]
  local F = P .. ':fleet'
  local now = now_ms(args[2])
  local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
  local descriptor, models = args[3], tonumber(args[4])
  local limits = read_limits(args, 5, models)
  local at = 5 + models * 5
  local own_minute, own_day = tonumber(args[at]), tonumber(args[at + 1])
  local rest = at + 2 + models * 5
  local last_known, gen, first = tonumber(args[rest]), args[rest + 1], args[rest + 2] == '1'
  local stale_ms = tonumber(args[rest + 3])
  local R = tonumber(gen)

  -- A fleet nobody is in any more takes the limits of whoever comes.
  local stored = redis.call('GET', P .. ':limits')
  if stored and stored ~= descriptor and redis.call('ZCARD', P .. ':members') > 0 then
    return {-2}
  end
  if stored ~= descriptor then redis.call('SET', P .. ':limits', descriptor) end

  local known = redis.call('ZSCORE', P .. ':members', id) ~= false
  -- What the fleet counts for this member already (before), and what it counted while this
  -- registration was on its way (after: not in the report).
  local before, after = {}, {}
  for m = 0, models - 1 do
    before[m] = {[0] = 0, 0, 0, 0, 0}
    after[m] = {[0] = 0, 0, 0, 0, 0}
  end
  local early = P .. ':early:' .. id
  local records = redis.call('HGETALL', early)
  redis.call('DEL', early)
  -- A process's first registration reports no earlier process's usage: records under its id
  -- are not its own.
  if not first then
    for i = 1, #records, 2 do
      local g, m, r, w = string.match(records[i], '^([^:]+):(%d+):(%d)(.*)$')
      g, m, r = tonumber(g), tonumber(m), tonumber(r)
      local value = tonumber(records[i + 1])
      if g and m and m < models then
        local current = r == 4 or w == ':' .. window_of(r, minute, day)
        if g > R then
          redis.call('HSET', early, records[i], value)
          redis.call('PEXPIRE', early, DAY + MARGIN)
        elseif current and g < R then
          -- Counted, and in the report: not to be counted again.
          if r ~= 4 then before[m][r] = before[m][r] + value end
        elseif current then
          after[m][r] = after[m][r] + value
        end
      end
    end
  end
  if known then
    for m = 0, models - 1 do
      for r = 0, 4 do
        -- On a process's first registration under an id the fleet still knows (a restart
        -- faster than the stale threshold), what the earlier one used stays counted; its
        -- in-flight units return.
        if limits[m][r] >= 0 and (r == 4 or not first) then
          before[m][r] = before[m][r] + own_get(P, id, m, r, minute, day)
        end
      end
    end
  else
    local seq = redis.call('HINCRBY', F, 'seq', 1)
    redis.call('ZADD', P .. ':members', seq, id)
  end
  redis.call('ZADD', P .. ':seen', now, id)
  for m = 0, models - 1 do
    for r = 0, 4 do
      if limits[m][r] >= 0 then
        local reported = 0
        if r == 4 or window_of(r, own_minute, own_day) == window_of(r, minute, day) then
          reported = tonumber(args[at + 2 + m * 5 + r])
        end
        local own
        if r == 4 then
          own = math.max(0, reported - after[m][r])
          used_add(P, m, r, minute, day, own - before[m][r])
        else
          own = reported + after[m][r]
          used_add(P, m, r, minute, day, reported - before[m][r])
        end
        local key, _, _, o = place(P, m, r, minute, day)
        hset(key, r, o .. id, own)
      end
    end
  end
  redis.call('HSET', F, 'g:' .. id, gen)
  if last_known > redis.call('ZCARD', P .. ':members') then
    local floor = redis.call('HMGET', F, 'fl', 'fu')
    local fl = last_known
    if floor[1] and tonumber(floor[2]) > now then fl = math.max(fl, tonumber(floor[1])) end
    redis.call('HSET', F, 'fl', fl, 'fu', now + stale_ms)
  end
  reshare(P, models, limits, minute, day, now)
  version_bump(P)
  redis.call('PUBLISH', P .. ':changes', 'membership')
  return view(P, id, models, limits, minute, day, 1)
end

-- Heartbeat and refresh: evicts members silent for longer than the stale threshold (their
-- in-flight units return), ends an expired floor, marks this member alive and returns the
-- fleet as it sees it.
-- ARGV: member, client_now, stale_ms, models, L (models × 5)
-- Returns {0} if the member is not registered (it must register again), else {1, figures...}.
local function sync(keys, args)
  local P, id = keys[1], args[1]
  local F = P .. ':fleet'
  local now = now_ms(args[2])
  local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
  local stale_ms, models = tonumber(args[3]), tonumber(args[4])
  local limits = read_limits(args, 5, models)
  local changed = false
  local stale = redis.call('ZRANGEBYSCORE', P .. ':seen', '-inf', '(' .. (now - stale_ms))
  for _, other in ipairs(stale) do
    if other ~= id then
      remove(P, other, models, limits, minute, day, true)
      changed = true
    end
  end
  local fu = redis.call('HGET', F, 'fu')
  if fu and tonumber(fu) <= now then changed = true end
  if changed then
    reshare(P, models, limits, minute, day, now)
    if redis.call('EXISTS', F) == 1 then version_bump(P) end
    redis.call('PUBLISH', P .. ':changes', 'membership')
  end
  if redis.call('ZSCORE', P .. ':members', id) == false then return {0} end
  redis.call('ZADD', P .. ':seen', now, id)
  return view(P, id, models, limits, minute, day, 1)
end

-- Leaves the fleet: the others' shares grow at once.
-- ARGV: member, client_now, models, L (models × 5)
local function unregister(keys, args)
  local P, id = keys[1], args[1]
  local F = P .. ':fleet'
  local now = now_ms(args[2])
  local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
  local models = tonumber(args[3])
  local limits = read_limits(args, 4, models)
  if redis.call('ZSCORE', P .. ':members', id) == false then return 0 end
  remove(P, id, models, limits, minute, day, false)
  -- The floor counted this member.
  local fl = redis.call('HGET', F, 'fl')
  if fl then redis.call('HSET', F, 'fl', tonumber(fl) - 1) end
  reshare(P, models, limits, minute, day, now)
  if redis.call('EXISTS', F) == 1 then version_bump(P) end
  redis.call('PUBLISH', P .. ':changes', 'membership')
  return 1
end
