-- Mark charges of one provider paid with a paid time, all or none, if
-- none changed and the open epoch was not cut since the caller read them:
-- the caller re-encoded each record with its paid time (the time sits
-- behind variable-length fields, so the script does not rewrite it in
-- place), no earlier than the open epoch's start (hub.PaidTime).
--
-- KEYS: 1 charges hash (provider 0 event id -> document), 2 owed index
--       (sorted set of owed ids), 3 paid index (sorted set, score 0, of
--       paid time key || id), 4 open epoch number (cutepoch.lua)
-- ARGV: 1 open epoch number read ('' when none was stored), then
--       quadruples of charge id, document read, document to write, paid
--       index member
-- Reply: {'ok'} | {'notfound', id} | {'changed', id} | {'cut', open number}

local open = redis.call('GET', KEYS[4]) or ''
if open ~= ARGV[1] then
  return {'cut', open}
end
for i = 2, #ARGV, 4 do
  local doc = redis.call('HGET', KEYS[1], ARGV[i])
  if not doc then
    return {'notfound', ARGV[i]}
  end
  if doc ~= ARGV[i + 1] then
    return {'changed', ARGV[i]}
  end
end
for i = 2, #ARGV, 4 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  if string.sub(ARGV[i + 1], 1, 1) == 'o' then
    redis.call('ZREM', KEYS[2], ARGV[i])
  end
  redis.call('ZADD', KEYS[3], 0, ARGV[i + 3])
end
return {'ok'}
