-- KEYS: ready reserved delayed dead conf stats subs
-- One queue's counters, lengths, state and subscribers, in one round trip.
-- ARGV[1] = the server's default policy; subs is the subscriber hash (process -> count).
-- Returns {counters (flat HGETALL), {ready, reserved, delayed, dead}, state, policy, subscribers}.
local conf = KEYS[5]
local subs = 0
for i, v in ipairs(redis.call('HVALS', KEYS[7])) do subs = subs + tonumber(v) end
return {
  redis.call('HGETALL', KEYS[6]),
  {
    redis.call('ZCARD', KEYS[1]),
    redis.call('ZCARD', KEYS[2]),
    redis.call('ZCARD', KEYS[3]),
    redis.call('ZCARD', KEYS[4]),
  },
  redis.call('HGET', conf, 'state') or 'running',
  redis.call('HGET', conf, 'policy') or ARGV[1],
  subs,
}
