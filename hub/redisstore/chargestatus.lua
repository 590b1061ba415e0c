-- Move charges of one provider to a status, all or none: every id is
-- checked before the first write.
--
-- KEYS: 1 charges hash (provider 0 event id -> document)
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
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1] .. string.sub(docs[i], 2))
end
return {'ok'}
