-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- Give a reservation back: ARGV[2] = receipt, ARGV[3] = delay ms before it is ready again,
-- ARGV[4] = the error it failed with ("" for none). After max_attempts deliveries the message goes
-- to the dead-letter queue instead; past its ttl it is dropped. Returns {next due, "ok",
-- "ready"|"delayed"|"dead"|"expired"} or
-- {next due, "stale"}.
local now = now_ms()
settle(now, 1000)
local n = holder(ARGV[2], now)
if not n then return {next_due(), 'stale'} end
redis.call('ZREM', K.reserved, n)
redis.call('HDEL', K.receipts, n)
if ARGV[4] ~= '' then redis.call('HSET', K.errors, n, ARGV[4]) end
local rec = redis.call('HGET', K.messages, n)
local _, _, a = parse(rec)
local where = 'ready'
redis.call('HINCRBY', K.stats, 'nacked', 1)
if a >= setting('max_attempts') then
  bury(n, rec)
  where = 'dead'
elseif tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', K.delayed, now + tonumber(ARGV[3]), n)
  where = 'delayed'
elseif release(n, rec, now) == 1 then
  redis.call('SPUBLISH', CHANNEL, 'a')
else
  where = 'expired'
end
return {next_due(), 'ok', where}
