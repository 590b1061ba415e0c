-- Commit a settlement run and move its channels to their next outputs, all
-- or nothing: every check runs before the first write, because Redis does
-- not roll a script back.
--
-- The caller read each old channel and sends the record it read with the
-- closed record it built from it; the script writes the closed record only
-- when the stored one is still the one read (compare and set), so a record
-- changed meanwhile, or closed by a concurrent rollover, is never
-- overwritten. Closing rewrites JSON, which Go does rather than Lua: cjson
-- would round large numbers. The channel's seq, paid and owed must also
-- still be those the settlement read (the next channel carries owed and
-- what was paid after the cut): another hubd may have recorded a charge.
--
-- KEYS: 1 funding index, 2 set of all pending ids, 3 runs (hash key ->
--       run JSON), 4 run index (sorted set of keys, all scored 0),
--       5 settlement lease (fence.lua)
-- ARGV: 1 key prefix, 2 run key, 3 run JSON, 4 zero device signature,
--       5 number of old channels, then per old channel: outpoint,
--       record read, closed record, updated (unix ns, '' = zero), and
--       the seq, paid and owed the settlement read;
--       then the number of next channels, then per next channel: pending
--       id hex, record JSON, outpoint, device id, owed, updated; last
--       the fencing token (fence.lua)
-- Reply: {'ok'} | {'notfound', outpoint} | {'moved', outpoint} |
--        {'stale', outpoint} | {'exists', pending id or outpoint}

local prefix = ARGV[1]
local nold = tonumber(ARGV[5])
local i = 6
local old = {}
for k = 1, nold do
  local op, was, closed, upd = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local seq, paid, owed = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local pid = redis.call('HGET', KEYS[1], op)
  if not pid then
    return {'notfound', op}
  end
  local ck = prefix .. 'ch:' .. pid
  local cur = redis.call('HMGET', ck, 'doc', 'upd', 'seq', 'paid', 'owed')
  if cur[1] ~= was then
    return {'moved', op}
  end
  if tonumber(cur[3]) ~= tonumber(seq) or tonumber(cur[4]) ~= tonumber(paid) or
      tonumber(cur[5]) ~= tonumber(owed) then
    return {'stale', op}
  end
  old[k] = {ck, closed, upd, cur[2] or ''}
end
local nnext = tonumber(ARGV[i])
i = i + 1
local first = i
for k = 1, nnext do
  local pid, op = ARGV[i], ARGV[i + 2]
  i = i + 6
  if redis.call('EXISTS', prefix .. 'ch:' .. pid) == 1 then
    return {'exists', pid}
  end
  if redis.call('HEXISTS', KEYS[1], op) == 1 then
    return {'exists', op}
  end
end

-- Unix nanoseconds compared as decimal strings: as Lua doubles they lose
-- the last digits.
local function later(a, b)
  if a == '' then return false end
  if b == '' then return true end
  if #a ~= #b then return #a > #b end
  return a > b
end

for _, o in ipairs(old) do
  redis.call('HSET', o[1], 'doc', o[2])
  if later(o[3], o[4]) then
    redis.call('HSET', o[1], 'upd', o[3])
  end
end
i = first
for k = 1, nnext do
  local pid, doc, op, dev, owed, upd = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  redis.call('HSET', prefix .. 'ch:' .. pid, 'doc', doc, 'op', op, 'dev', dev,
    'seq', '0', 'paid', '0', 'owed', owed, 'upd', upd, 'sig', ARGV[4])
  redis.call('RPUSH', prefix .. 'chdev:' .. dev, pid)
  redis.call('SADD', KEYS[2], pid)
  redis.call('HSET', KEYS[1], op, pid)
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[4], 0, ARGV[2])
return {'ok'}
