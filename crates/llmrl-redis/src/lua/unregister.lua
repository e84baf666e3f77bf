-- Leaves the fleet: the others' shares grow at once.
-- ARGV: member, client_now, models, L (models × 5)
local member = ARGV[1]
local now = now_ms(ARGV[2])
local minute, day = math.floor(now / MINUTE), math.floor(now / DAY)
local models = tonumber(ARGV[3])
local limits = read_limits(models, 4)
if redis.call('ZSCORE', members(), member) ~= false then
  remove(member, models, limits, minute, day, false)
  reshare(models, limits, minute, day)
  redis.call('PUBLISH', key('changes'), 'membership')
end
return 1
