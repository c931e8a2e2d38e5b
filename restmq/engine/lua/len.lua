-- Count the queue's messages by state: {ready, reserved, delayed, dead}.
return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[7]),
  redis.call('ZCARD', KEYS[8]),
  redis.call('ZCARD', KEYS[9]),
}
