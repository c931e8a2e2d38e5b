-- KEYS: ready messages seen reserved delayed
-- Remove every message of the queue (ready, reserved, delayed) and end its streams.
-- The key counter and the statistics stay: keys are never reused. ARGV[1] = event channel.
-- Returns how many messages were removed.
local ready, msgs, seen, reserved, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n = redis.call('HLEN', msgs)
redis.call('DEL', ready, msgs, seen, reserved, delayed)
redis.call('PUBLISH', ARGV[1], 'p')
return n
