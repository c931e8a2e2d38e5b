-- KEYS: timers sweeper
-- The queues of one bucket with something due by Redis's clock (a delay, a lease, a ttl), at most
-- ARGV[2]: {1, queue, …}. The sweeper settles each one. With an owner (ARGV[3], a process id)
-- only the process holding this bucket's sweeper lease gets them: it takes the lease,
-- or extends its own, for ARGV[4] ms; any other process gets {0} while the lease lasts.
if ARGV[3] ~= '' then
  local holder = redis.call('GET', K.sweeper)
  if holder and holder ~= ARGV[3] then return {0} end
  redis.call('SET', K.sweeper, ARGV[3], 'PX', tonumber(ARGV[4]))
end
local due = redis.call('ZRANGEBYSCORE', K.timers, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {1}
for _, q in ipairs(due) do out[#out + 1] = q end
return out
