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
  local ns, stale = {}, {}
  for j = i, i + tonumber(size) - 1 do
    local n = holder(ARGV[j], now)
    if n then ns[#ns + 1] = n else stale[#stale + 1] = ARGV[j] end
  end
  i = i + tonumber(size)
  if #stale > 0 then
    local answer = {'stale'}
    for _, r in ipairs(stale) do answer[#answer + 1] = r end
    out[#out + 1] = answer
  else
    for _, n in ipairs(ns) do finish(n) end
    total = total + #ns
    out[#out + 1] = {'ok', #ns}
  end
end
if total > 0 then redis.call('HINCRBY', K.stats, 'acked', total) end
out[1] = next_due()
return out
