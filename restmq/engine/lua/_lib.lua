-- The shared part of every script, inserted by scripts.py after `local K = {role = KEYS[i]…}`,
-- `local CHANNEL = ARGV[1]` and `local DEFAULT = {…}` (the queue settings' defaults, in ms).
-- A record is "priority:enqueued_ms:attempts:expire_ms:" followed by the value's JSON text; a
-- unique message's value has a "u" before its JSON (keys.UNIQUE_MARK), and K.unique maps the sha1
-- of that JSON to the message's number while the message is held (ready, delayed or reserved).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(x)
  return string.format('%d', x)
end

local function parse(rec)
  local p, t, a, e, v = string.match(rec, '^(%d+):(%d+):(%d+):(%d+):(.*)$')
  return tonumber(p), t, tonumber(a), tonumber(e), v
end

local function record(p, t, a, e, v)
  return p .. ':' .. t .. ':' .. int(a) .. ':' .. int(e) .. ':' .. v
end

local function score(p, n)
  return string.format('%.0f', p * 1e13 + tonumber(n))
end

-- A queue setting from its conf hash, else the server default.
local function setting(name)
  return tonumber(redis.call('HGET', K.conf, name)) or DEFAULT[name]
end

local UNIQUE_MARK = 117 -- string.byte('u')
local unique_index = nil -- whether K.unique exists: looked up once per script run, when needed

local function unique_on()
  if unique_index == nil then
    unique_index = K.unique ~= nil and redis.call('EXISTS', K.unique) == 1
  end
  return unique_index
end

-- The index digest of a unique message's stored value ("u" .. JSON), else nil.
local function unique_digest(v)
  if string.byte(v, 1) ~= UNIQUE_MARK then return nil end
  return redis.sha1hex(string.sub(v, 2))
end

-- Message n stops being held: drop its index entry if it is unique. With its stored value at
-- hand (v) a plain message costs one byte test; without, nothing unless this queue has an index.
local function unindex(n, v)
  if not K.unique then return end
  if not v then
    if not unique_on() then return end
    local rec = redis.call('HGET', K.messages, n)
    if not rec then return end
    local _, _, _, _, value = parse(rec)
    v = value
  end
  local d = unique_digest(v)
  if d and redis.call('HGET', K.unique, d) == tostring(n) then redis.call('HDEL', K.unique, d) end
end

-- Message n (stored value v) is held again (redriven): index it unless another held message
-- already has its value, which keeps that one.
local function reindex(n, v)
  local d = unique_digest(v)
  if not d then return end
  local other = redis.call('HGET', K.unique, d)
  if other and redis.call('HEXISTS', K.messages, other) == 1 then return end
  redis.call('HSET', K.unique, d, n)
  unique_index = true
end

-- The number of the held unique message whose value JSON has digest d, or nil. A message past
-- its ttl that the sweeper has not dropped yet no longer counts (unless it is reserved: a lease
-- holds it).
local function held_unique(d, now)
  local n = redis.call('HGET', K.unique, d)
  if not n then return nil end
  local rec = redis.call('HGET', K.messages, n)
  if not rec then return nil end
  local _, _, _, e = parse(rec)
  if e > 0 and e <= now and not redis.call('ZSCORE', K.reserved, n) then return nil end
  return n
end

-- Forget every trace of message n (v: its stored value, when the caller has parsed it) but its
-- key (the counter never goes back).
local function forget(n, v)
  if v then -- inlined test: this is every take's path
    if string.byte(v, 1) == UNIQUE_MARK then unindex(n, v) end
  elseif unique_on() then
    unindex(n)
  end
  redis.call('HDEL', K.messages, n)
  if K.seen then redis.call('HDEL', K.seen, n) end
  if K.receipts then redis.call('HDEL', K.receipts, n) end
  if K.errors then redis.call('HDEL', K.errors, n) end
  if K.expiry then redis.call('ZREM', K.expiry, n) end
end

-- Move message n (record rec, already out of ready/reserved/delayed) to the dead-letter queue,
-- keeping its number, attempts and last error.
local function bury(n, rec)
  local p, _, _, _, v = parse(rec)
  redis.call('HSET', K.dead_messages, n, rec)
  redis.call('ZADD', K.dead, score(p, n), n)
  local err = redis.call('HGET', K.errors, n)
  if err then redis.call('HSET', K.dead_errors, n, err) end
  forget(n, v)
  redis.call('HINCRBY', K.stats, 'dead', 1)
end

-- Message n (record rec, out of every set) becomes ready again, unless its ttl has passed
-- meanwhile: then it is dropped and counted as expired. Answers 1 when it became ready.
local function release(n, rec, now)
  local p, _, _, e, v = parse(rec)
  if e > 0 and e <= now then
    forget(n, v)
    redis.call('HINCRBY', K.stats, 'expired', 1)
    return 0
  end
  if e > 0 then redis.call('ZADD', K.expiry, e, n) end
  redis.call('ZADD', K.ready, score(p, n), n)
  return 1
end

-- When something of this queue is next due (a delay, a lease, a ttl), or -1.
local function next_due()
  local due = -1
  for _, key in ipairs({K.delayed, K.reserved, K.expiry}) do
    if key then
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if #first == 2 then
        local at = tonumber(first[2])
        if due < 0 or at < due then due = at end
      end
    end
  end
  return due
end

-- Bring the queue up to date at `now`: due delayed messages become ready, expired leases come
-- back (or go to the dead-letter queue after max_attempts deliveries), messages past their ttl
-- are dropped. At most `limit` of each per call; the sweeper finishes the rest. Publishes "a"
-- when something became ready. Needs K.ready, messages, delayed, reserved, receipts, errors,
-- expiry, conf, stats, dead, dead_messages, dead_errors.
local function settle(now, limit)
  local woke = 0
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', K.delayed, n)
    local rec = redis.call('HGET', K.messages, n)
    if rec then woke = woke + release(n, rec, now) end
  end
  local late = redis.call('ZRANGEBYSCORE', K.reserved, '-inf', now, 'LIMIT', 0, limit)
  if #late > 0 then
    -- leases that ran out: the consumer died or was too slow (counted as "returned")
    redis.call('HINCRBY', K.stats, 'returned', #late)
    local max_attempts = setting('max_attempts')
    for _, n in ipairs(late) do
      redis.call('ZREM', K.reserved, n)
      redis.call('HDEL', K.receipts, n)
      local rec = redis.call('HGET', K.messages, n)
      if rec then
        local _, _, a = parse(rec)
        if a >= max_attempts then
          bury(n, rec)
        else
          woke = woke + release(n, rec, now)
        end
      end
    end
  end
  local expired = 0
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', K.expiry, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', K.expiry, n)
    if not redis.call('ZSCORE', K.reserved, n) then
      redis.call('ZREM', K.ready, n)
      redis.call('ZREM', K.delayed, n)
      forget(n)
      expired = expired + 1
    end
  end
  if expired > 0 then redis.call('HINCRBY', K.stats, 'expired', expired) end
  if woke > 0 then redis.call('SPUBLISH', CHANNEL, 'a') end
end

-- Check a receipt "<n>.<attempts>.<nonce>": the message's current, unexpired reservation.
-- Answers n, or nil when the receipt is stale or unknown.
local function holder(receipt, now)
  local n = string.match(receipt, '^(%d+)%.')
  if not n or redis.call('HGET', K.receipts, n) ~= receipt then return nil end
  local deadline = redis.call('ZSCORE', K.reserved, n)
  if not deadline or tonumber(deadline) <= now then return nil end
  return n
end

-- Message n's reservation is done (acked): it is gone.
local function finish(n)
  redis.call('ZREM', K.reserved, n)
  forget(n)
end

-- One ack of the receipts ARGV[first..last], all or nothing: answers {"stale", receipt, …} with
-- nothing changed when any is stale, else finishes them all and answers {"ok", how many}. The
-- caller counts the acked ones in K.stats.
local function ack_receipts(first, last, now)
  local ns, stale = {}, {'stale'}
  for j = first, last do
    local n = holder(ARGV[j], now)
    if n then ns[#ns + 1] = n else stale[#stale + 1] = ARGV[j] end
  end
  if #stale > 1 then return stale end
  for _, n in ipairs(ns) do finish(n) end
  return {'ok', #ns}
end

-- Give message n's reservation back (a nack): err ("" for none) becomes its last error; after
-- max_attempts deliveries it goes to the dead-letter queue, else it is ready again after delay ms
-- (now when 0). Answers where it went: ready, delayed, dead or expired.
local function give_back(n, delay, err, now)
  redis.call('ZREM', K.reserved, n)
  redis.call('HDEL', K.receipts, n)
  if err ~= '' then redis.call('HSET', K.errors, n, err) end
  local rec = redis.call('HGET', K.messages, n)
  local _, _, a = parse(rec)
  redis.call('HINCRBY', K.stats, 'nacked', 1)
  if a >= setting('max_attempts') then
    bury(n, rec)
    return 'dead'
  elseif delay > 0 then
    redis.call('ZADD', K.delayed, now + delay, n)
    return 'delayed'
  elseif release(n, rec, now) == 1 then
    redis.call('SPUBLISH', CHANNEL, 'a')
    return 'ready'
  end
  return 'expired'
end
