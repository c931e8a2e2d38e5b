-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- The sweeper's step: bring an idle queue up to date. Returns {next due, now}.
local now = now_ms()
settle(now, 1000)
return {next_due(), int(now)}
