-- Create or replace a channel record, keeping its payment state (seq, paid,
-- owed, sig) when it exists. Every check runs before the first write.
--
-- KEYS: 1 channel hash, 2 funding index (hash outpoint -> pending id),
--       3 the device's channel list, 4 set of all pending ids
-- ARGV: 1 pending id hex, 2 record JSON, 3 funding outpoint ('' = none),
--       4 device id, 5 seq, 6 paid, 7 owed, 8 updated (unix ns, '' = zero),
--       9 device signature, 10 key prefix
-- Reply: {'ok'} | {'exists', owner pending id}

local pid, op, dev = ARGV[1], ARGV[3], ARGV[4]
if op ~= '' then
  local owner = redis.call('HGET', KEYS[2], op)
  if owner and owner ~= pid then
    return {'exists', owner}
  end
end

local old = redis.call('HMGET', KEYS[1], 'op', 'dev', 'upd')
if old[2] then
  if old[1] ~= '' and old[1] ~= op then
    redis.call('HDEL', KEYS[2], old[1])
  end
  if old[2] ~= dev then
    -- Another device's list: derived from the prefix, so on a cluster the
    -- prefix's hash tag keeps it in this slot.
    redis.call('LREM', ARGV[10] .. 'chdev:' .. old[2], 0, pid)
    redis.call('RPUSH', KEYS[3], pid)
  end
  local upd = old[3]
  if ARGV[8] ~= '' and (upd == '' or tonumber(ARGV[8]) > tonumber(upd)) then
    upd = ARGV[8]
  end
  redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'op', op, 'dev', dev, 'upd', upd)
else
  redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'op', op, 'dev', dev,
    'seq', ARGV[5], 'paid', ARGV[6], 'owed', ARGV[7], 'upd', ARGV[8], 'sig', ARGV[9])
  redis.call('RPUSH', KEYS[3], pid)
  redis.call('SADD', KEYS[4], pid)
end
if op ~= '' then
  redis.call('HSET', KEYS[2], op, pid)
end
return {'ok'}
