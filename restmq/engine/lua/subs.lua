-- KEYS: subs subs_seen
-- Change this process's stream subscriber count on a queue by ARGV[3] (ARGV[2] = process id; 0
-- just says the process is alive), or, with ARGV[4] = "set", make it ARGV[3]: the heartbeat's
-- absolute count, which repairs what increments cannot (a Redis that came back empty). Increments
-- commute, so counts stay right whichever pool connection carries them; a count that reaches zero
-- is removed. Returns {-1, the new count}.
local left
if ARGV[4] == 'set' then
  left = tonumber(ARGV[3])
  if left > 0 then redis.call('HSET', K.subs, ARGV[2], left) end
else
  left = redis.call('HINCRBY', K.subs, ARGV[2], ARGV[3])
end
if left <= 0 then
  redis.call('HDEL', K.subs, ARGV[2])
  redis.call('HDEL', K.subs_seen, ARGV[2])
  return {-1, 0}
end
redis.call('HSET', K.subs_seen, ARGV[2], now_ms())
return {-1, left}
