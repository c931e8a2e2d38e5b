-- KEYS: ready messages seen conf stats
-- Remove up to ARGV[1] ready messages, lowest priority then oldest first (at-most-once).
-- Messages past their ttl are dropped on the way and counted as expired.
-- ARGV[2] = "take" (a consumer asked) or "stream" (the hub drains for subscribers; then
-- ARGV[3] = event channel, ARGV[4] = the server's default policy).
-- Returns {"paused"}, or {"ok", n, record, seen, ...}, or for a broadcast stream
-- {"broadcast", how many} after publishing each message as "b<n>|<seen>|<record>".
local ready, msgs, seen, conf, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('HGET', conf, 'state') == 'paused' then
  return {'paused'}
end
local broadcast = false
if ARGV[2] == 'stream' then
  local policy = redis.call('HGET', conf, 'policy') or ARGV[4]
  broadcast = policy == 'broadcast'
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local want = tonumber(ARGV[1])
local out = {'ok'}
local taken, expired = 0, 0
while taken < want do
  local popped = redis.call('ZPOPMIN', ready, want - taken)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local n = popped[i]
    local rec = redis.call('HGET', msgs, n)
    if rec then
      redis.call('HDEL', msgs, n)
      local c = redis.call('HGET', seen, n) or '0'
      if c ~= '0' then redis.call('HDEL', seen, n) end
      local expire = tonumber(string.match(rec, '^%d+:%d+:%d+:(%d+):'))
      if expire > 0 and expire <= now then
        expired = expired + 1
      elseif broadcast then
        taken = taken + 1
        redis.call('PUBLISH', ARGV[3], 'b' .. n .. '|' .. c .. '|' .. rec)
      else
        taken = taken + 1
        out[#out + 1] = n
        out[#out + 1] = rec
        out[#out + 1] = c
      end
    end
  end
end
if taken > 0 then redis.call('HINCRBY', stats, 'taken', taken) end
if expired > 0 then redis.call('HINCRBY', stats, 'expired', expired) end
if broadcast then return {'broadcast', taken} end
return out
