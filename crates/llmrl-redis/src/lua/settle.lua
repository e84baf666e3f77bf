-- Replaces a reservation by what happened to it (SPEC §4.2–4.3).
-- ARGV: member, client_now, model, reserved_minute, reserved_day, outcome ('u' used,
--       'x' unknown, 'n' never started), e0..e3, a0..a3, L0..L4
-- Returns {registered (1/0), n, minute, day, figures... (when registered)}
local member, m = ARGV[1], tonumber(ARGV[3])
local now = now_ms(ARGV[2])
local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
local rmin, rday, outcome = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local est, act, limit = {}, {}, {}
for r = 0, 3 do
  est[r] = tonumber(ARGV[7 + r])
  act[r] = tonumber(ARGV[11 + r])
end
for r = 0, 4 do limit[r] = tonumber(ARGV[15 + r]) end
local rank = redis.call('ZRANK', members(), member)
local n = redis.call('ZCARD', members())
for r = 0, 3 do
  if limit[r] >= 0 then
    local same = window_of(r, rmin, rday) == window_of(r, minute, day)
    local delta = 0
    if outcome == 'n' and same then
      delta = -est[r]
    elseif outcome == 'u' then
      delta = act[r] - est[r]
      if not same and delta < 0 then delta = 0 end
    end
    if delta ~= 0 then
      add_used(m, r, minute, day, delta)
      if rank ~= false then add_own(member, rank, n, m, r, minute, day, limit[r], delta) end
    end
  end
end
-- An evicted member's in-flight units were returned when it was evicted.
if limit[4] >= 0 and rank ~= false then
  add_used(m, 4, minute, day, -1)
  add_own(member, rank, n, m, 4, minute, day, limit[4], -1)
end
if rank == false then return {0, n, minute, day} end
local out = {1, n, minute, day}
local limits = {}
limits[m] = limit
figures(member, rank, n, m, limits, minute, day, out)
return out
