-- KEYS: ready messages seen receipts errors expiry reserved delayed
-- Delete message ARGV[2] from wherever it is. Returns {-1, 1} when it existed, else {-1, 0}.
local n = ARGV[2]
if not redis.call('HGET', K.messages, n) then return {-1, 0} end
forget(n)
redis.call('ZREM', K.ready, n)
redis.call('ZREM', K.reserved, n)
redis.call('ZREM', K.delayed, n)
return {-1, 1}
