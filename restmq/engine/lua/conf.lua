-- KEYS: conf
-- Read or change a queue's state and policy. ARGV[1] = event channel, ARGV[2] = operation
-- ("get", "pause", "resume", "policy"), ARGV[3] = the new policy for "policy",
-- ARGV[4] = the server's default policy. Returns {state, policy}. Resuming or changing the
-- policy publishes "r" so streams look at the queue again.
local conf = KEYS[1]
local op = ARGV[2]
if op == 'pause' then
  redis.call('HSET', conf, 'state', 'paused')
elseif op == 'resume' then
  redis.call('HDEL', conf, 'state')
  redis.call('PUBLISH', ARGV[1], 'r')
elseif op == 'policy' then
  redis.call('HSET', conf, 'policy', ARGV[3])
  redis.call('PUBLISH', ARGV[1], 'r')
end
return {
  redis.call('HGET', conf, 'state') or 'running',
  redis.call('HGET', conf, 'policy') or ARGV[4],
}
