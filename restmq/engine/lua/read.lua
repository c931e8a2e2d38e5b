-- KEYS: ready messages seen
-- Read messages without taking them. ARGV[1] = "peek" (ARGV[2] = count), "key" (ARGV[2] = n)
-- or "soft" (the original soft get: the next message, counting how often it was looked at).
-- Messages past their ttl are invisible here (take drops them). Returns {n, record, seen, ...}.
local ready, msgs, seen = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local op = ARGV[1]
local want = 1
if op == 'peek' then want = tonumber(ARGV[2]) end
local out = {}

local function visit(n)
  local rec = redis.call('HGET', msgs, n)
  if not rec then return end
  local expire = tonumber(string.match(rec, '^%d+:%d+:%d+:(%d+):'))
  if expire > 0 and expire <= now then return end
  local c = redis.call('HGET', seen, n) or '0'
  if op == 'soft' then c = redis.call('HINCRBY', seen, n, 1) end
  out[#out + 1] = n
  out[#out + 1] = rec
  out[#out + 1] = c
end

if op == 'key' then
  visit(ARGV[2])
else
  local start = 0
  while #out < want * 3 do
    local ns = redis.call('ZRANGE', ready, start, start + want - 1)
    if #ns == 0 then break end
    for _, n in ipairs(ns) do
      if #out < want * 3 then visit(n) end
    end
    start = start + want
  end
end
return out
