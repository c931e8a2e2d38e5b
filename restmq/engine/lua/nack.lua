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
local where = give_back(n, tonumber(ARGV[3]), ARGV[4], now)
return {next_due(), 'ok', where}
