-- KEYS: ready messages seen reserved delayed
-- Delete message ARGV[1] from wherever it is. Returns 1 when it existed, else 0.
local ready, msgs, seen, reserved, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n = ARGV[1]
if redis.call('HDEL', msgs, n) == 0 then return 0 end
redis.call('HDEL', seen, n)
redis.call('ZREM', ready, n)
redis.call('ZREM', reserved, n)
redis.call('ZREM', delayed, n)
return 1
