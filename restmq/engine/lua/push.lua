-- KEYS: push push_inflight conf
-- A queue's push subscription. ARGV[2] = "set" (ARGV[3…]: field, value pairs replacing the
-- subscription's settings; its state stays), "get" or "rm" (the subscription and its state go;
-- deliveries in flight finish). Returns {-1, in flight, lease ms, max_attempts, field, value, …}
-- (no fields: no subscription).
local now = now_ms()
local op = ARGV[2]
if op == 'set' then
  redis.call('HDEL', K.push, 'url', 'secret', 'timeout', 'concurrency', 'backoff')
  for i = 3, #ARGV, 2 do
    redis.call('HSET', K.push, ARGV[i], ARGV[i + 1])
  end
  redis.call('PUBLISH', CHANNEL, 'r')
elseif op == 'rm' then
  redis.call('DEL', K.push)
end
local inflight = redis.call('ZCOUNT', K.push_inflight, '(' .. now, '+inf')
local out = {-1, inflight, setting('lease'), setting('max_attempts')}
for _, x in ipairs(redis.call('HGETALL', K.push)) do out[#out + 1] = x end
return out
