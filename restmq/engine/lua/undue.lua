-- KEYS: due
-- Drop schedule ARGV[2] from the global due index (keys.SCHEDULES_DUE) if its entry is still
-- ARGV[3] (ms): a firer found no such schedule, and a set that wrote a new entry since then wins.
-- Returns {-1, 1 if dropped else 0}.
local current = redis.call('ZSCORE', K.due, ARGV[2])
if current and tonumber(current) == tonumber(ARGV[3]) then
  redis.call('ZREM', K.due, ARGV[2])
  return {-1, 1}
end
return {-1, 0}
