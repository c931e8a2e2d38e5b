-- KEYS: subs subs_seen
-- Change this process's stream subscriber count on a queue by ARGV[3] (ARGV[2] = process id; 0
-- just says the process is alive). Increments commute, so counts stay right whichever pool
-- connection carries them; a count that reaches zero is removed. Returns {-1, the new count}.
local left = redis.call('HINCRBY', K.subs, ARGV[2], ARGV[3])
if left <= 0 then
  redis.call('HDEL', K.subs, ARGV[2])
  redis.call('HDEL', K.subs_seen, ARGV[2])
  return {-1, 0}
end
redis.call('HSET', K.subs_seen, ARGV[2], now_ms())
return {-1, left}
