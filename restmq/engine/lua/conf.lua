-- KEYS: conf
-- Read or change a queue's state and policy. ARGV[2] = operation ("get", "pause", "resume",
-- "policy"), ARGV[3] = the new policy, ARGV[4] = the server's default policy. Resuming or
-- changing the policy publishes "r" so streams look at the queue again.
-- Returns {-1, state, policy}.
local op = ARGV[2]
if op == 'pause' then
  redis.call('HSET', K.conf, 'state', 'paused')
elseif op == 'resume' then
  redis.call('HDEL', K.conf, 'state')
  redis.call('SPUBLISH', CHANNEL, 'r')
elseif op == 'policy' then
  redis.call('HSET', K.conf, 'policy', ARGV[3])
  redis.call('SPUBLISH', CHANNEL, 'r')
end
return {-1, redis.call('HGET', K.conf, 'state') or 'running', redis.call('HGET', K.conf, 'policy') or ARGV[4]}
