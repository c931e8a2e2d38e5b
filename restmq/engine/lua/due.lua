-- KEYS: timers
-- The queues with something due by Redis's clock (a delay, a lease, a ttl), at most ARGV[2]:
-- {-1, queue, …}. The sweeper settles each one.
local due = redis.call('ZRANGEBYSCORE', K.timers, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {-1}
for _, q in ipairs(due) do out[#out + 1] = q end
return out
