-- KEYS: conf
-- Set the settings named in ARGV[2…] (name, value pairs; times in ms), then answer them all:
-- {-1, max_attempts, lease, dedup_window, max_length}.
for i = 2, #ARGV, 2 do
  redis.call('HSET', K.conf, ARGV[i], ARGV[i + 1])
end
return {-1, setting('max_attempts'), setting('lease'), setting('dedup_window'), setting('max_length')}
