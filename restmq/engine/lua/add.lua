-- KEYS: ready messages seq stats delayed expiry dedup dedup_until conf reserved
-- Add one or more messages atomically. ARGV[2…] = (priority, delay ms, ttl ms, dedup or "",
-- value JSON) for each message. A dedup string seen within the queue's dedup window answers the
-- first message's number and adds nothing. Refuses the whole batch with QUEUE_FULL when it would
-- pass the queue's max_length. Returns {next due, now, n1, n2, …}; publishes "a" for ready ones.
local nowms = now_ms()
local now = int(nowms)
local count = (#ARGV - 1) / 5
local max_length = setting('max_length')
if max_length > 0 then
  local held = redis.call('ZCARD', K.ready) + redis.call('ZCARD', K.delayed) + redis.call('ZCARD', K.reserved)
  if held + count > max_length then
    return redis.error_reply('QUEUE_FULL ' .. held .. ' ' .. max_length)
  end
end
local window = 0
for i = 5, #ARGV, 5 do
  if ARGV[i] ~= '' then
    -- Only adds that carry a dedup string look at (and tidy) the dedup window.
    for _, d in ipairs(redis.call('ZRANGEBYSCORE', K.dedup_until, '-inf', nowms, 'LIMIT', 0, 100)) do
      redis.call('HDEL', K.dedup, d)
      redis.call('ZREM', K.dedup_until, d)
    end
    window = setting('dedup_window')
    break
  end
end
local out = {-1, now}
local due, added, woke = -1, 0, 0
for i = 2, #ARGV, 5 do
  local p, delay, ttl, dedup = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  local first = false
  if dedup ~= '' then first = redis.call('HGET', K.dedup, dedup) end
  if first then
    out[#out + 1] = first
  else
    local n = redis.call('INCR', K.seq)
    local expire = '0'
    if ttl > 0 then
      redis.call('ZADD', K.expiry, nowms + ttl, n)
      if due < 0 or nowms + ttl < due then due = nowms + ttl end
      expire = int(nowms + ttl)
    end
    redis.call('HSET', K.messages, n, ARGV[i] .. ':' .. now .. ':0:' .. expire .. ':' .. ARGV[i + 4])
    if delay > 0 then
      redis.call('ZADD', K.delayed, nowms + delay, n)
      if due < 0 or nowms + delay < due then due = nowms + delay end
    else
      redis.call('ZADD', K.ready, score(p, n), n)
      woke = woke + 1
    end
    if dedup ~= '' and window > 0 then
      redis.call('HSET', K.dedup, dedup, n)
      redis.call('ZADD', K.dedup_until, nowms + window, dedup)
    end
    added = added + 1
    out[#out + 1] = n
  end
end
if added > 0 then redis.call('HINCRBY', K.stats, 'added', added) end
if woke > 0 then redis.call('PUBLISH', CHANNEL, 'a') end
out[1] = due
return out
