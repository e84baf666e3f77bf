-- Admits one job on one model if every limit, concurrency and the member's fair share allow it,
-- and reserves it: one atomic step for the whole fleet.
-- ARGV: member, client_now ('' = server time), model, e0..e3 (estimates), L0..L4 (-1 = none)
-- Returns {admitted (1/0, or -1 if not registered), n, minute, day, figures...}
local member, m = ARGV[1], tonumber(ARGV[3])
local now = now_ms(ARGV[2])
local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
local est, limit = {}, {}
for r = 0, 3 do est[r] = tonumber(ARGV[4 + r]) end
est[4] = 1
for r = 0, 4 do limit[r] = tonumber(ARGV[8 + r]) end
local rank = redis.call('ZRANK', members(), member)
if rank == false then return {-1} end
local n = redis.call('ZCARD', members())
local ok = 1
for r = 0, 4 do
  local L = limit[r]
  if L >= 0 then
    local remaining = L - get_num(used_key(m, r, minute, day))
    local e = est[r]
    if remaining < e then ok = 0; break end
    if e > 0 then
      local own_unused = unused(share(L, n, rank), own_get(member, m, r, minute, day))
      if available(own_unused, unused_get(m, r, minute, day, L), remaining) < e then
        ok = 0; break
      end
    end
  end
end
if ok == 1 then
  for r = 0, 4 do
    if limit[r] >= 0 and est[r] > 0 then
      add_used(m, r, minute, day, est[r])
      add_own(member, rank, n, m, r, minute, day, limit[r], est[r])
    end
  end
end
local out = {ok, n, minute, day}
local limits = {}
limits[m] = limit
figures(member, rank, n, m, limits, minute, day, out)
return out
