-- Joins the fleet, or joins it again, reporting the member's own usage so that a backend that
-- lost its state (restart, flush) recovers the fleet's figures.
-- ARGV: member, client_now, limits descriptor, models, L (models × 5), own_minute, own_day,
--       own (models × 5)
-- Returns {-2} on a limits mismatch, else {1, n, minute, day, figures per model...}
local member = ARGV[1]
local now = now_ms(ARGV[2])
local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
local descriptor, models = ARGV[3], tonumber(ARGV[4])
local limits = read_limits(models, 5)
local at = 5 + models * 5
local own_minute, own_day = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
local stored = redis.call('GET', key('limits'))
if stored ~= false and stored ~= descriptor then return {-2} end
if stored == false then redis.call('SET', key('limits'), descriptor) end
local is_new = redis.call('ZSCORE', members(), member) == false
local aside = key('evicted', member)
-- What the fleet already counts for this member: its usage, or what it had when evicted.
local before = {}
for m = 0, models - 1 do
  before[m] = {}
  for r = 0, 4 do
    if is_new then
      local kept = false
      if r ~= 4 then
        kept = redis.call('HGET', aside, m .. ':' .. r .. ':' .. window_of(r, minute, day))
      end
      before[m][r] = tonumber(kept or '0')
    else
      before[m][r] = own_get(member, m, r, minute, day)
    end
  end
end
redis.call('DEL', aside)
if is_new then
  redis.call('ZADD', members(), redis.call('INCR', key('seq')), member)
end
redis.call('ZADD', key('seen'), now, member)
for m = 0, models - 1 do
  for r = 0, 4 do
    if limits[m][r] >= 0 then
      local reported = 0
      if r == 4 or window_of(r, own_minute, own_day) == window_of(r, minute, day) then
        reported = tonumber(ARGV[at + 2 + m * 5 + r])
      end
      add_used(m, r, minute, day, reported - before[m][r])
      own_set(member, m, r, minute, day, reported)
    end
  end
end
reshare(models, limits, minute, day)
redis.call('PUBLISH', key('changes'), 'membership')
local out = view(member, models, limits, minute, day)
table.insert(out, 1, 1)
return out
