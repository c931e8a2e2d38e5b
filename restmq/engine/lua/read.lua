-- Read messages without taking them. ARGV[1] = "peek" (ARGV[2] = count), "key" (ARGV[2] = n)
-- or "soft" (the original soft get: the next message, counting how often it was looked at).
-- Returns {n, record, seen, ...}.
local ready, msgs, seen = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local ns
if op == 'key' then
  ns = {ARGV[2]}
elseif op == 'soft' then
  ns = redis.call('ZRANGE', ready, 0, 0)
  if #ns == 1 then redis.call('HINCRBY', seen, ns[1], 1) end
else
  ns = redis.call('ZRANGE', ready, 0, tonumber(ARGV[2]) - 1)
end
local out = {}
for _, n in ipairs(ns) do
  local rec = redis.call('HGET', msgs, n)
  if rec then
    out[#out + 1] = n
    out[#out + 1] = rec
    out[#out + 1] = redis.call('HGET', seen, n) or '0'
  end
end
return out
