-- KEYS: ready reserved delayed dead
-- Count the queue's messages by state: {ready, reserved, delayed, dead}.
return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]),
}
