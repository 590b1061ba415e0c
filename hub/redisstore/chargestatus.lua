-- Move charges of one provider to a status, all or none: every id is
-- checked before the first write.
--
-- KEYS: 1 charges hash (provider 0 event id -> document), 2 owed index
--       (sorted set of owed ids), 3 its sequence (hash, field n)
-- ARGV: 1 status byte, 2.. charge ids
-- Reply: {'ok'} | {'notfound', id}

local docs = {}
for i = 2, #ARGV do
  local doc = redis.call('HGET', KEYS[1], ARGV[i])
  if not doc then
    return {'notfound', ARGV[i]}
  end
  docs[i] = doc
end
local seq = false
for i = 2, #ARGV do
  local was = string.sub(docs[i], 1, 1)
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1] .. string.sub(docs[i], 2))
  if ARGV[1] == 'o' and was ~= 'o' then
    if not seq then
      seq = tonumber(redis.call('HGET', KEYS[3], 'n') or '0')
    end
    seq = seq + 1
    redis.call('ZADD', KEYS[2], seq, ARGV[i])
  elseif ARGV[1] ~= 'o' and was == 'o' then
    redis.call('ZREM', KEYS[2], ARGV[i])
  end
end
if seq then
  redis.call('HSET', KEYS[3], 'n', string.format('%.0f', seq))
end
return {'ok'}
