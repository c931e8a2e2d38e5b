-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique push push_inflight
-- The end of one push delivery: ARGV[2] = its receipt, ARGV[3] = "" when the receiver answered 2xx
-- (the message is acked), else why it failed (the message is nacked with that error, ready again
-- after ARGV[4] ms, or dead after max_attempts deliveries). Its in-flight slot is freed, and the
-- subscription (if it still exists) records its last success or last error and counts them.
-- Returns {next due, "ok", "acked"|"ready"|"delayed"|"dead"|"expired"} or {next due, "stale"}.
local now = now_ms()
settle(now, 1000)
local mine = string.match(ARGV[2], '^(%d+)%.')
if mine then redis.call('ZREM', K.push_inflight, mine) end
if redis.call('HEXISTS', K.push, 'url') == 1 then
  if ARGV[3] == '' then
    redis.call('HSET', K.push, 'last_ok', now)
    redis.call('HINCRBY', K.push, 'pushed', 1)
  else
    redis.call('HSET', K.push, 'last_error', ARGV[3], 'last_error_at', now)
    redis.call('HINCRBY', K.push, 'failed', 1)
  end
end
local n = holder(ARGV[2], now)
if not n then return {next_due(), 'stale'} end
if ARGV[3] == '' then
  finish(n)
  redis.call('HINCRBY', K.stats, 'acked', 1)
  return {next_due(), 'ok', 'acked'}
end
local where = give_back(n, tonumber(ARGV[4]), ARGV[3], now)
return {next_due(), 'ok', where}
