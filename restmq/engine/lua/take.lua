-- KEYS: ready messages seen conf stats delayed reserved receipts errors expiry dead dead_messages dead_errors replay unique push push_inflight
-- Deliver up to ARGV[2] ready messages, lowest priority then oldest first. ARGV[3] = "take"
-- (at-most-once: the message is gone), "reserve" (at-least-once: hidden for ARGV[4] ms, 0 = the
-- queue's lease, under receipt "<n>.<attempts>.<ARGV[5]>") or "stream" (the hub drains for
-- subscribers; ARGV[6] = the server's default policy, ARGV[7] = how many broadcast messages the
-- replay stream keeps, 0 for none). Messages past their ttl are dropped. "push" reserves as
-- "reserve" does for a push delivery: nothing ({next due, "none"}) without a subscription, nothing
-- ({next due, "busy"}) while its concurrency is reached (push_inflight: its unexpired leases,
-- across every process), and the lease is the queue's, at least the push timeout + 1 s.
-- ARGV[8…], when given, are receipts to ack first (ack with next: a worker's ack and its next
-- reserve in one call): all or nothing, as in ack.lua; a stale one answers
-- {next due, "stale", receipt, …} and changes nothing.
-- Returns {next due, "paused"}, {next due, "ok", lease deadline, n, record, seen, receipt, …},
-- or for a broadcast stream {next due, "broadcast", how many} after publishing each message as
-- "b<replay id>|<n>|<seen>|<record>" (and appending it to the replay stream).
local now = now_ms()
settle(now, 1000)
if #ARGV >= 8 then
  local acked = ack_receipts(8, #ARGV, now)
  if acked[1] == 'stale' then
    table.insert(acked, 1, next_due())
    return acked
  end
  redis.call('HINCRBY', K.stats, 'acked', acked[2])
end
if redis.call('HGET', K.conf, 'state') == 'paused' then
  return {next_due(), 'paused'}
end
local mode = ARGV[3]
local broadcast = false
if mode == 'stream' then
  broadcast = (redis.call('HGET', K.conf, 'policy') or ARGV[6]) == 'broadcast'
end
local lease = tonumber(ARGV[4])
if mode == 'reserve' and lease <= 0 then lease = setting('lease') end
local deadline = now + lease
local want = tonumber(ARGV[2])
if mode == 'push' then
  local concurrency = tonumber(redis.call('HGET', K.push, 'concurrency') or '0')
  if concurrency <= 0 then return {next_due(), 'none'} end
  redis.call('ZREMRANGEBYSCORE', K.push_inflight, '-inf', now)
  local free = concurrency - redis.call('ZCARD', K.push_inflight)
  if free <= 0 then return {next_due(), 'busy'} end
  if want > free then want = free end
  lease = math.max(setting('lease'), tonumber(redis.call('HGET', K.push, 'timeout') or '0') + 1000)
  deadline = now + lease
end
local reserving = mode == 'reserve' or mode == 'push'
local out = {0, 'ok', int(deadline)}
local delivered, expired = 0, 0
while delivered < want do
  local popped = redis.call('ZPOPMIN', K.ready, want - delivered)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local n = popped[i]
    local rec = redis.call('HGET', K.messages, n)
    if rec then
      local p, t, a, e, v = parse(rec)
      local c = redis.call('HGET', K.seen, n) or '0'
      if e > 0 and e <= now then
        forget(n, v)
        expired = expired + 1
      elseif reserving then
        a = a + 1
        rec = record(p, t, a, e, v)
        local receipt = n .. '.' .. a .. '.' .. ARGV[5]
        redis.call('HSET', K.messages, n, rec)
        redis.call('ZADD', K.reserved, deadline, n)
        redis.call('HSET', K.receipts, n, receipt)
        redis.call('ZREM', K.expiry, n)
        if mode == 'push' then redis.call('ZADD', K.push_inflight, deadline, n) end
        delivered = delivered + 1
        out[#out + 1] = n
        out[#out + 1] = rec
        out[#out + 1] = c
        out[#out + 1] = receipt
      else
        forget(n, v)
        delivered = delivered + 1
        if broadcast then
          local body = n .. '|' .. c .. '|' .. rec
          local id = ''
          if tonumber(ARGV[7]) > 0 then
            id = redis.call('XADD', K.replay, 'MAXLEN', '~', ARGV[7], '*', 'm', body)
          end
          redis.call('SPUBLISH', CHANNEL, 'b' .. id .. '|' .. body)
        else
          out[#out + 1] = n
          out[#out + 1] = rec
          out[#out + 1] = c
          out[#out + 1] = ''
        end
      end
    end
  end
end
if delivered > 0 then
  redis.call('HINCRBY', K.stats, reserving and 'reserved' or 'taken', delivered)
end
if expired > 0 then redis.call('HINCRBY', K.stats, 'expired', expired) end
out[1] = next_due()
if broadcast then return {out[1], 'broadcast', delivered} end
return out
