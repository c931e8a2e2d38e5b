-- KEYS: ready messages seen reserved delayed receipts errors expiry dedup dedup_until replay unique
-- Remove every message of the queue (ready, reserved, delayed) and end its streams. The key
-- counter and the statistics stay: keys are never reused. Returns {-1, how many were removed}.
local n = redis.call('HLEN', K.messages)
redis.call('DEL', K.ready, K.messages, K.seen, K.reserved, K.delayed, K.receipts, K.errors,
  K.expiry, K.dedup, K.dedup_until, K.replay, K.unique)
redis.call('SPUBLISH', CHANNEL, 'p')
return {-1, n}
