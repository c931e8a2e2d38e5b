-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- The held unique message whose value JSON is ARGV[2], after bringing the queue up to date (so a
-- message past its ttl, or dead after its last lease, is not found). Returns {next due, n} or
-- {next due} when there is none.
local now = now_ms()
settle(now, 1000)
local n = nil
if unique_on() then n = held_unique(redis.sha1hex(ARGV[2]), now) end
if n then return {next_due(), n} end
return {next_due()}
