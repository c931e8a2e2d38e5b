-- KEYS per queue: ready reserved delayed dead conf stats subs subs_seen
-- Counters, lengths, state and subscribers of each queue whose keys are given (any number, in
-- one round trip). ARGV[2] = the server's default policy; subs is the subscriber hash (process ->
-- count). A process not heard of for ARGV[3] ms (it crashed) is forgotten here.
-- Returns {-1, {counters (flat HGETALL), {ready, reserved, delayed, dead}, state, policy,
-- subscribers} for each queue, in the order given}.
local oldest = now_ms() - tonumber(ARGV[3])
local out = {-1}
for g = 1, GROUPS do
  K = group(g)
  local subs = 0
  local counts = redis.call('HGETALL', K.subs)
  for i = 1, #counts, 2 do
    local seen = tonumber(redis.call('HGET', K.subs_seen, counts[i]) or 0)
    if seen < oldest then
      redis.call('HDEL', K.subs, counts[i])
      redis.call('HDEL', K.subs_seen, counts[i])
    else
      subs = subs + tonumber(counts[i + 1])
    end
  end
  out[#out + 1] = {
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
end
return out
