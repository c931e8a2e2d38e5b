-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- Acknowledge reservations: ARGV[2…] are receipts (distinct). All or nothing: if any is stale
-- (its lease ended, it was acked, the message was redelivered) nothing changes.
-- Returns {next due, "ok", acked} or {next due, "stale", receipt, …}.
local now = now_ms()
settle(now, 1000)
local ns, stale = {}, {}
for i = 2, #ARGV do
  local n = holder(ARGV[i], now)
  if n then ns[#ns + 1] = n else stale[#stale + 1] = ARGV[i] end
end
if #stale > 0 then
  local out = {next_due(), 'stale'}
  for _, r in ipairs(stale) do out[#out + 1] = r end
  return out
end
for _, n in ipairs(ns) do finish(n) end
redis.call('HINCRBY', K.stats, 'acked', #ns)
return {next_due(), 'ok', #ns}
