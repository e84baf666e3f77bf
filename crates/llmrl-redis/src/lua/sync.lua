-- Heartbeat and refresh: evicts members silent for longer than the stale threshold (their
-- in-flight units return), marks this member alive and returns the fleet as it sees it.
-- ARGV: member, client_now, stale_ms, models, L (models × 5)
-- Returns {0} if the member is not registered (it must register again), else
-- {1, n, minute, day, figures per model...}
local member = ARGV[1]
local now = now_ms(ARGV[2])
local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
local stale_ms, models = tonumber(ARGV[3]), tonumber(ARGV[4])
local limits = read_limits(models, 5)
local stale = redis.call('ZRANGEBYSCORE', key('seen'), '-inf', '(' .. (now - stale_ms))
local evicted = false
for _, other in ipairs(stale) do
  if other ~= member then
    remove(other, models, limits, minute, day, true)
    evicted = true
  end
end
if evicted then
  reshare(models, limits, minute, day)
  redis.call('PUBLISH', key('changes'), 'membership')
end
if redis.call('ZSCORE', members(), member) == false then return {0} end
redis.call('ZADD', key('seen'), now, member)
local out = view(member, models, limits, minute, day)
table.insert(out, 1, 1)
return out
