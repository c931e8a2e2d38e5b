-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- Acknowledge reservations for one or more ack commands, in order: ARGV[2] = how many receipts
-- each command has ("3 1 2"), ARGV[3…] = their receipts (distinct within a command). Each command
-- is all or nothing on its own: if any of its receipts is stale (its lease ended, it was acked, an
-- earlier command of this call acked it, the message was redelivered) that command changes
-- nothing, and the others are not affected.
-- Returns {next due, {"ok", acked} or {"stale", receipt, …} per command}.
local now = now_ms()
settle(now, 1000)
local out = {0}
local total = 0
local i = 3
for size in string.gmatch(ARGV[2], '%d+') do
  local answer = ack_receipts(i, i + tonumber(size) - 1, now)
  i = i + tonumber(size)
  if answer[1] == 'ok' then total = total + answer[2] end
  out[#out + 1] = answer
end
if total > 0 then redis.call('HINCRBY', K.stats, 'acked', total) end
out[1] = next_due()
return out
