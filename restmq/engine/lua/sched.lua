-- KEYS: schedules ready messages seq stats delayed reserved conf
-- The recurring schedules that target this queue (restmq/engine/schedules.py): K.schedules maps a
-- name to its record "next_ms:last_ms:fires:last_n:" followed by the definition's JSON (last_ms
-- and last_n are 0 before the first fire). ARGV[2] is the operation, ARGV[3] the name:
--   "get": {-1, record or ""}.                      "list": {-1, name, record, …}.
--   "set": ARGV[4] = the new record (its last, fires and last_n are carried over from the record
--          it replaces): {-1, previous record or "", written record}.
--   "del": {-1, previous record or ""}.
--   "undo": put ARGV[5] back (a record, or "" for none) if the record is still ARGV[4] (a late
--          set or del that its caller was told did not happen): {-1, 1 or 0}.
--   "fire": the tick of record ARGV[4]: only if the stored record is still exactly ARGV[4] (so
--          each tick fires once however many processes try), add one message with value ARGV[6]
--          (its JSON) at priority ARGV[7] and store the record with next ARGV[5], last = the fired tick:
--          {-1, "ok", n}; {-1, "stale"} when another fire or a set came first; {-1, "full",
--          held, max_length} when the queue is full (the tick is skipped, next still moves on).
local op, name = ARGV[2], ARGV[3]
local FIELDS = '^(%d+):(%d+):(%d+):(%d+):(.*)$'
if op == 'get' then
  return {-1, redis.call('HGET', K.schedules, name) or ''}
elseif op == 'list' then
  local out = {-1}
  for _, x in ipairs(redis.call('HGETALL', K.schedules)) do out[#out + 1] = x end
  return out
elseif op == 'set' then
  local previous = redis.call('HGET', K.schedules, name) or ''
  local nxt, _, _, _, def = string.match(ARGV[4], FIELDS)
  local rec = ARGV[4]
  if previous ~= '' then
    local _, last, fires, lastn = string.match(previous, FIELDS)
    rec = nxt .. ':' .. last .. ':' .. fires .. ':' .. lastn .. ':' .. def
  end
  redis.call('HSET', K.schedules, name, rec)
  return {-1, previous, rec}
elseif op == 'del' then
  local previous = redis.call('HGET', K.schedules, name) or ''
  redis.call('HDEL', K.schedules, name)
  return {-1, previous}
elseif op == 'undo' then
  if (redis.call('HGET', K.schedules, name) or '') ~= ARGV[4] then return {-1, 0} end
  if ARGV[5] == '' then
    redis.call('HDEL', K.schedules, name)
  else
    redis.call('HSET', K.schedules, name, ARGV[5])
  end
  return {-1, 1}
elseif op == 'fire' then
  if redis.call('HGET', K.schedules, name) ~= ARGV[4] then return {-1, 'stale'} end
  local tick, last, fires, lastn, def = string.match(ARGV[4], FIELDS)
  local max_length = setting('max_length')
  if max_length > 0 then
    local held = redis.call('ZCARD', K.ready) + redis.call('ZCARD', K.delayed) + redis.call('ZCARD', K.reserved)
    if held + 1 > max_length then
      redis.call('HSET', K.schedules, name, ARGV[5] .. ':' .. last .. ':' .. fires .. ':' .. lastn .. ':' .. def)
      return {-1, 'full', held, max_length}
    end
  end
  local n = redis.call('INCR', K.seq)
  redis.call('HSET', K.messages, n, ARGV[7] .. ':' .. int(now_ms()) .. ':0:0:' .. ARGV[6])
  redis.call('ZADD', K.ready, score(tonumber(ARGV[7]), n), n)
  redis.call('HINCRBY', K.stats, 'added', 1)
  redis.call('HSET', K.schedules, name, ARGV[5] .. ':' .. tick .. ':' .. int(tonumber(fires) + 1) .. ':' .. n .. ':' .. def)
  redis.call('PUBLISH', CHANNEL, 'a')
  return {-1, 'ok', n}
end
return redis.error_reply('ERR unknown schedule operation ' .. tostring(op))
