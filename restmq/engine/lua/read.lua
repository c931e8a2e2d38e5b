-- KEYS: ready messages seen reserved delayed errors
-- Read messages without delivering them. ARGV[2] = "peek" (ARGV[3] = count, ARGV[4] = which set:
-- ready, reserved or delayed), "key" (ARGV[3] = n) or "soft" (the original soft get: the next
-- ready message, counting how often it was looked at). Messages past their ttl are invisible.
-- Returns {-1, n, record, seen, last error or "", …}.
local now = now_ms()
local op = ARGV[2]
local want = 1
local set = K.ready
if op == 'peek' then
  want = tonumber(ARGV[3])
  set = K[ARGV[4]]
end
local out = {-1}

local function visit(n)
  local rec = redis.call('HGET', K.messages, n)
  if not rec then return end
  local _, _, _, e = parse(rec)
  if e > 0 and e <= now then return end
  local c = redis.call('HGET', K.seen, n) or '0'
  if op == 'soft' then c = redis.call('HINCRBY', K.seen, n, 1) end
  out[#out + 1] = n
  out[#out + 1] = rec
  out[#out + 1] = c
  out[#out + 1] = redis.call('HGET', K.errors, n) or ''
end

if op == 'key' then
  visit(ARGV[3])
else
  local start = 0
  while #out - 1 < want * 4 do
    local ns = redis.call('ZRANGE', set, start, start + want - 1)
    if #ns == 0 then break end
    for _, n in ipairs(ns) do
      if #out - 1 < want * 4 then visit(n) end
    end
    start = start + want
  end
end
return out
