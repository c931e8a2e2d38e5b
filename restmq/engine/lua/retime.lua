-- KEYS: timers
-- After the sweeper settled queue ARGV[2] at ARGV[4] (ms), set its timer to ARGV[3] (its next
-- due time, -1 for none), unless a script set a later timer since then (that one stands).
local current = redis.call('ZSCORE', K.timers, ARGV[2])
if current and tonumber(current) > tonumber(ARGV[4]) then return {-1, 0} end
if tonumber(ARGV[3]) < 0 then
  redis.call('ZREM', K.timers, ARGV[2])
else
  redis.call('ZADD', K.timers, ARGV[3], ARGV[2])
end
return {-1, 1}
