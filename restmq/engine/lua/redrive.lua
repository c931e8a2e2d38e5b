-- KEYS: ready messages stats dead dead_messages dead_errors
-- Move up to ARGV[2] dead messages (0 = all) back to the queue, oldest first, their attempts reset
-- (their numbers, and so their keys, are kept). Returns {-1, how many moved}.
local want = tonumber(ARGV[2])
local ns = redis.call('ZRANGE', K.dead, 0, want > 0 and want - 1 or -1)
for _, n in ipairs(ns) do
  local rec = redis.call('HGET', K.dead_messages, n)
  redis.call('ZREM', K.dead, n)
  redis.call('HDEL', K.dead_messages, n)
  redis.call('HDEL', K.dead_errors, n)
  if rec then
    local p, t, _, e, v = parse(rec)
    redis.call('HSET', K.messages, n, record(p, t, 0, e, v))
    redis.call('ZADD', K.ready, score(p, n), n)
  end
end
if #ns > 0 then
  redis.call('HINCRBY', K.stats, 'redriven', #ns)
  redis.call('PUBLISH', CHANNEL, 'a')
end
return {-1, #ns}
