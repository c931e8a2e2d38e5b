-- KEYS: ready messages seen receipts errors expiry reserved delayed unique
-- Delete message ARGV[2] from wherever it is. Returns {-1, 1} when it existed, else {-1, 0}.
local n = ARGV[2]
local rec = redis.call('HGET', K.messages, n)
if not rec then return {-1, 0} end
local _, _, _, _, v = parse(rec)
forget(n, v)
redis.call('ZREM', K.ready, n)
redis.call('ZREM', K.reserved, n)
redis.call('ZREM', K.delayed, n)
return {-1, 1}
