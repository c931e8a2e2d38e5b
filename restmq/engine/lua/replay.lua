-- KEYS: replay
-- The broadcast messages after replay id ARGV[2], oldest first, at most ARGV[3]:
-- {-1, id, "<n>|<seen>|<record>", …}. A reconnecting subscriber gets what it missed.
local out = {-1}
for _, entry in ipairs(redis.call('XRANGE', K.replay, '(' .. ARGV[2], '+', 'COUNT', ARGV[3])) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
end
return out
