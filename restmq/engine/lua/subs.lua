-- KEYS: subs
-- Change this process's stream subscriber count on a queue by ARGV[2] (ARGV[1] = process id).
-- Increments commute, so counts stay right whichever pool connection carries them; a count that
-- reaches zero is removed. Returns the process's new count.
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
return left
