-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- Move up to ARGV[2] dead messages (0 = all) back to the queue, oldest first, their attempts reset
-- and their ttl cleared (their numbers, and so their keys, are kept). The queue is settled first,
-- so a lease that just ran out on a last attempt counts as dead. A unique message becomes findable
-- again unless another held message has taken its value meanwhile. Returns {next due, moved}.
settle(now_ms(), 1000)
local want = tonumber(ARGV[2])
local ns = redis.call('ZRANGE', K.dead, 0, want > 0 and want - 1 or -1)
for _, n in ipairs(ns) do
  local rec = redis.call('HGET', K.dead_messages, n)
  redis.call('ZREM', K.dead, n)
  redis.call('HDEL', K.dead_messages, n)
  redis.call('HDEL', K.dead_errors, n)
  if rec then
    local p, t, _, _, v = parse(rec)
    redis.call('HSET', K.messages, n, record(p, t, 0, 0, v))
    redis.call('ZADD', K.ready, score(p, n), n)
    reindex(n, v)
  end
end
if #ns > 0 then
  redis.call('HINCRBY', K.stats, 'redriven', #ns)
  redis.call('SPUBLISH', CHANNEL, 'a')
end
return {next_due(), #ns}
