-- Cut the open epoch: store it closed and open its successor, or refuse
-- when the stored open epoch is not the one being cut (another hub cut it),
-- or when the epoch before it has no run or a latest run that has not
-- settled it (a run is under way: one is open at a time).
--
-- KEYS: 1 epochs (sorted set of epoch JSON scored by number),
--       2 open epoch number (string; missing before the first epoch),
--       3 runs (hash run key -> run JSON), 4 runidx (run keys, by bytes),
--       5 settlement lease (fence.lua)
-- ARGV: 1 closed number ('0' opens the first epoch), 2 closed JSON,
--       3 successor number, 4 successor JSON,
--       5 first and 6 last run key of the previous epoch ('' when closed
--       is epoch 1 or none), 7.. the run states that settle an epoch, last
--       the fencing token (fence.lua)
-- Reply: {'ok'} | {'conflict', open number} | {'open', state or 'none'}

local open = redis.call('GET', KEYS[2]) or '0'
if open ~= ARGV[1] then
  return {'conflict', open}
end
if ARGV[5] ~= '' then
  local keys = redis.call('ZREVRANGEBYLEX', KEYS[4], '[' .. ARGV[6], '[' .. ARGV[5], 'LIMIT', 0, 1)
  if #keys == 0 then
    return {'open', 'none'}
  end
  local state = cjson.decode(redis.call('HGET', KEYS[3], keys[1])).state
  local settled = false
  for i = 7, #ARGV - 1 do
    if ARGV[i] == state then
      settled = true
    end
  end
  if not settled then
    return {'open', state}
  end
end
if ARGV[1] ~= '0' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('SET', KEYS[2], ARGV[3])
return {'ok'}
