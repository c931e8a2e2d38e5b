-- KEYS: ready messages seq stats delayed expiry dedup dedup_until conf reserved unique
-- Add one or more messages atomically. ARGV[2…] = (priority, delay ms, ttl ms, dedup or "",
-- value) for each message, the value its JSON, or "u" .. JSON for a unique message. An item adds
-- nothing and answers the existing message's number negated when its dedup string was seen within
-- the queue's dedup window, when it is unique and a unique message with the same value is still
-- held, or when an earlier item of the batch is that message. Refuses the whole batch with
-- QUEUE_FULL when what it adds would pass the queue's max_length.
-- Returns {next due, now, n1 or -n1, …, ready length after the add} (the length lets a client that
-- wants it, RESP's LPUSH, skip a second script); publishes "a" for ready ones.
local nowms = now_ms()
local now = int(nowms)
local count = (#ARGV - 1) / 5
-- Plain batches (no dedup string, no unique value) skip the duplicate pass entirely.
local special = false
for i = 5, #ARGV, 5 do
  if ARGV[i] ~= '' or string.byte(ARGV[i + 1], 1) == UNIQUE_MARK then
    special = true
    break
  end
end
local window = 0
local same, digests, numbers -- item i (its first ARGV index) -> existing number (a string) or the
-- earlier item it repeats (a number); -> the index digest of its unique value; -> its new number
local fresh = count
if special then
  same, digests, numbers = {}, {}, {}
  local tidied = false
  local dedups, values = {}, {}
  for i = 2, #ARGV, 5 do
    local dedup, v = ARGV[i + 3], ARGV[i + 4]
    if dedup ~= '' then
      if not tidied then
        -- Only adds that carry a dedup string look at (and tidy) the dedup window.
        for _, d in ipairs(redis.call('ZRANGEBYSCORE', K.dedup_until, '-inf', nowms, 'LIMIT', 0, 100)) do
          redis.call('HDEL', K.dedup, d)
          redis.call('ZREM', K.dedup_until, d)
        end
        window = setting('dedup_window')
        tidied = true
      end
      same[i] = redis.call('HGET', K.dedup, dedup) or (window > 0 and dedups[dedup]) or nil
    end
    local d = unique_digest(v)
    if d and not same[i] then
      same[i] = held_unique(d, nowms) or values[d]
    end
    if same[i] then
      fresh = fresh - 1
    else
      if dedup ~= '' and window > 0 then dedups[dedup] = i end
      if d then
        values[d] = i
        digests[i] = d
      end
    end
  end
end
local max_length = setting('max_length')
if max_length > 0 and fresh > 0 then
  local held = redis.call('ZCARD', K.ready) + redis.call('ZCARD', K.delayed) + redis.call('ZCARD', K.reserved)
  if held + fresh > max_length then
    return redis.error_reply('QUEUE_FULL ' .. held .. ' ' .. max_length)
  end
end
local out = {-1, now}
local due, woke = -1, 0
-- The new numbers are consecutive: one INCRBY for the batch, and the records and ready entries
-- written BATCH at a time (one HSET and one ZADD for many messages: redis.call's own cost was
-- most of a plain add's).
local n = fresh > 0 and redis.call('INCRBY', K.seq, fresh) - fresh or 0
local BATCH = 500
local records, ready = {}, {}
local plain = ':' .. now .. ':0:0:' -- the record's middle for a message without ttl
local function flush()
  if #records > 0 then
    redis.call('HSET', K.messages, unpack(records))
    records = {}
  end
  if #ready > 0 then
    redis.call('ZADD', K.ready, unpack(ready))
    ready = {}
  end
end
for i = 2, #ARGV, 5 do
  local first = special and same[i]
  if first then
    if type(first) == 'number' then first = numbers[first] end
    out[#out + 1] = -tonumber(first)
  else
    local p, delay, ttl, dedup = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
    n = n + 1
    local middle = plain
    if ttl > 0 then
      redis.call('ZADD', K.expiry, nowms + ttl, n)
      if due < 0 or nowms + ttl < due then due = nowms + ttl end
      middle = ':' .. now .. ':0:' .. int(nowms + ttl) .. ':'
    end
    records[#records + 1] = n
    records[#records + 1] = ARGV[i] .. middle .. ARGV[i + 4]
    if delay > 0 then
      redis.call('ZADD', K.delayed, nowms + delay, n)
      if due < 0 or nowms + delay < due then due = nowms + delay end
    else
      ready[#ready + 1] = score(p, n)
      ready[#ready + 1] = n
      woke = woke + 1
    end
    if dedup ~= '' and window > 0 then
      redis.call('HSET', K.dedup, dedup, n)
      redis.call('ZADD', K.dedup_until, nowms + window, dedup)
    end
    if special then
      if digests[i] then redis.call('HSET', K.unique, digests[i], n) end
      numbers[i] = n
    end
    out[#out + 1] = n
    if #records >= 2 * BATCH then flush() end
  end
end
flush()
if fresh > 0 then redis.call('HINCRBY', K.stats, 'added', fresh) end
if woke > 0 then redis.call('SPUBLISH', CHANNEL, 'a') end
out[1] = due
out[#out + 1] = redis.call('ZCARD', K.ready)
return out
