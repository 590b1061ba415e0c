-- Cut the open epoch: store it closed and open its successor, or refuse
-- when the stored open epoch is not the one being cut (another hub cut it).
--
-- KEYS: 1 epochs (sorted set of epoch JSON scored by number),
--       2 open epoch number (string; missing before the first epoch)
-- ARGV: 1 closed number ('0' opens the first epoch), 2 closed JSON,
--       3 successor number, 4 successor JSON
-- Reply: {'ok'} | {'conflict', open number}

local open = redis.call('GET', KEYS[2]) or '0'
if open ~= ARGV[1] then
  return {'conflict', open}
end
if ARGV[1] ~= '0' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('SET', KEYS[2], ARGV[3])
return {'ok'}
