-- KEYS: ready messages seen receipts errors expiry reserved delayed unique
-- Delete one message from wherever it is, in one step: message ARGV[2], or with ARGV[2] = "" the
-- held unique message whose value JSON is ARGV[3] (so a delete by value cannot race another).
-- Returns {-1, 1, n, record, seen} when it existed (what undo.lua needs to put it back), else {-1, 0}.
local n = ARGV[2]
if n == '' then
  n = nil
  if unique_on() then n = held_unique(redis.sha1hex(ARGV[3]), now_ms()) end
  if not n then return {-1, 0} end
end
local rec = redis.call('HGET', K.messages, n)
if not rec then return {-1, 0} end
local seen = redis.call('HGET', K.seen, n) or ''
local _, _, _, _, v = parse(rec)
forget(n, v)
redis.call('ZREM', K.ready, n)
redis.call('ZREM', K.reserved, n)
redis.call('ZREM', K.delayed, n)
return {-1, 1, n, rec, seen}
