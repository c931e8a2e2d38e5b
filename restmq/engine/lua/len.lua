-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors unique
-- Count the queue's messages by state, after bringing it up to date (expired leases back, due
-- delays ready, ttls dropped). Returns {next due, ready, reserved, delayed, dead}.
settle(now_ms(), 1000)
return {
  next_due(),
  redis.call('ZCARD', K.ready),
  redis.call('ZCARD', K.reserved),
  redis.call('ZCARD', K.delayed),
  redis.call('ZCARD', K.dead),
}
