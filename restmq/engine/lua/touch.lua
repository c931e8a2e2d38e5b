-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- Extend a reservation: ARGV[2] = receipt, ARGV[3] = the new lease from now in ms (0 = the
-- queue's lease). Returns {next due, "ok", new deadline} or {next due, "stale"}.
local now = now_ms()
settle(now, 1000)
local n = holder(ARGV[2], now)
if not n then return {next_due(), 'stale'} end
local lease = tonumber(ARGV[3])
if lease <= 0 then lease = setting('lease') end
redis.call('ZADD', K.reserved, now + lease, n)
return {next_due(), 'ok', int(now + lease)}
