-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dedup dedup_until unique push_inflight
-- Undo a call that Redis ran after its caller had stopped waiting (Redis stalled between running
-- it and answering): the caller was told "nothing was applied", so make that true. ARGV[2] = what
-- the call did:
--   "add": ARGV[3…] = (n, dedup or "") of each message it added; each one still ready or delayed
--          is removed with its dedup entry and unique index (one already delivered stays).
--   "take": ARGV[3…] = (n, record, seen) of each message it took; each is put back as it was.
--   "del": ARGV[3…] = (n, record, seen) of the message it deleted; put back ready, not counted.
--   "reserve": ARGV[3…] = receipts; each still current is released now, its attempt given back
--          (and, for a push reservation, its concurrency slot).
-- Returns {next due, how many were undone}.
local now = now_ms()
local what = ARGV[2]
local undone = 0
if what == 'add' then
  for i = 3, #ARGV, 2 do
    local n, dedup = ARGV[i], ARGV[i + 1]
    local rec = redis.call('HGET', K.messages, n)
    if rec and (redis.call('ZREM', K.ready, n) + redis.call('ZREM', K.delayed, n)) > 0 then
      local _, _, _, _, v = parse(rec)
      forget(n, v)
      if dedup ~= '' and redis.call('HGET', K.dedup, dedup) == n then
        redis.call('HDEL', K.dedup, dedup)
        redis.call('ZREM', K.dedup_until, dedup)
      end
      undone = undone + 1
    end
  end
  if undone > 0 then redis.call('HINCRBY', K.stats, 'added', -undone) end
elseif what == 'take' or what == 'del' then
  for i = 3, #ARGV, 3 do
    local n, rec, seen = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call('HEXISTS', K.messages, n) == 0 then
      redis.call('HSET', K.messages, n, rec)
      if seen ~= '' and seen ~= '0' then redis.call('HSET', K.seen, n, seen) end
      local _, _, _, _, v = parse(rec)
      reindex(n, v)
      release(n, rec, now)
      undone = undone + 1
    end
  end
  if undone > 0 then
    if what == 'take' then redis.call('HINCRBY', K.stats, 'taken', -undone) end
    redis.call('PUBLISH', CHANNEL, 'a')
  end
elseif what == 'reserve' then
  for i = 3, #ARGV do
    local n = holder(ARGV[i], now)
    if n then
      redis.call('ZREM', K.reserved, n)
      redis.call('ZREM', K.push_inflight, n) -- a push reservation's concurrency slot
      redis.call('HDEL', K.receipts, n)
      local p, t, a, e, v = parse(redis.call('HGET', K.messages, n))
      local rec = record(p, t, math.max(a - 1, 0), e, v)
      redis.call('HSET', K.messages, n, rec)
      release(n, rec, now)
      undone = undone + 1
    end
  end
  if undone > 0 then
    redis.call('HINCRBY', K.stats, 'reserved', -undone)
    redis.call('PUBLISH', CHANNEL, 'a')
  end
end
return {next_due(), undone}
