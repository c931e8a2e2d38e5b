-- KEYS: ready messages seq stats
-- Add one or more messages atomically.
-- ARGV[1] = event channel; then (priority, ttl ms or 0, value JSON) triples.
-- Returns {now_ms, n1, n2, ...}. Publishes "a" so waiting consumers and streams wake up.
local ready, msgs, seq, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local nowms = t[1] * 1000 + math.floor(t[2] / 1000)
local now = string.format('%d', nowms)
local out = {now}
for i = 2, #ARGV, 3 do
  local n = redis.call('INCR', seq)
  local p = tonumber(ARGV[i])
  local ttl = tonumber(ARGV[i + 1])
  local expire = '0'
  if ttl > 0 then expire = string.format('%d', nowms + ttl) end
  redis.call('ZADD', ready, string.format('%.0f', p * 1e13 + n), n)
  redis.call('HSET', msgs, n, ARGV[i] .. ':' .. now .. ':0:' .. expire .. ':' .. ARGV[i + 2])
  out[#out + 1] = n
end
redis.call('HINCRBY', stats, 'added', #out - 1)
redis.call('PUBLISH', ARGV[1], 'a')
return out
