-- KEYS: ready reserved delayed dead conf stats subs
-- One queue's counters, lengths, state and subscribers, in one round trip. ARGV[2] = the server's
-- default policy; subs is the subscriber hash (process -> count).
-- Returns {-1, counters (flat HGETALL), {ready, reserved, delayed, dead}, state, policy, subscribers}.
local subs = 0
for _, v in ipairs(redis.call('HVALS', K.subs)) do subs = subs + tonumber(v) end
return {
  -1,
  redis.call('HGETALL', K.stats),
  {
    redis.call('ZCARD', K.ready),
    redis.call('ZCARD', K.reserved),
    redis.call('ZCARD', K.delayed),
    redis.call('ZCARD', K.dead),
  },
  redis.call('HGET', K.conf, 'state') or 'running',
  redis.call('HGET', K.conf, 'policy') or ARGV[2],
  subs,
}
