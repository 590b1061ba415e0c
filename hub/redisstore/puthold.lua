-- Create or replace a hold, keeping what it captured.
--
-- KEYS: 1 hold hash, 2 the channel's hold set
-- ARGV: 1 hold id hex, 2 hold JSON, 3 '1' when active, 4 max, 5 captured
--       (used only when the hold is new), 6 outpoint, 7 key prefix
-- Reply: {'ok'}

local oldchan = redis.call('HGET', KEYS[1], 'chan')
if oldchan and oldchan ~= ARGV[6] then
  redis.call('SREM', ARGV[7] .. 'holds:' .. oldchan, ARGV[1])
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'active', ARGV[3], 'max', ARGV[4], 'chan', ARGV[6])
redis.call('HSETNX', KEYS[1], 'captured', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
return {'ok'}
