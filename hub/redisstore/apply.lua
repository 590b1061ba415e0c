-- Apply one hub.Change atomically. Redis runs a script without interleaving
-- other commands, but does not roll back writes made before an error, so
-- every check runs before the first write.
--
-- KEYS: 1 head (hex hash of newest entry), 2 audit (list), 3 tokens (set),
--       4 keyindex (hash hexkey -> id), 5 devices (hash id -> JSON)
-- ARGV: 1 seq, 2 prev hash hex, 3 hash hex, 4 entry JSON, 5 token ('' = none),
--       6 device count, then per device: id, JSON, key count, keys (hex,
--       current key first, then retired keys), then the count of device
--       ids to remove and those ids
-- Reply: {'ok'} | {'audit', headseq} | {'token'} | {'exists', key, owner, id}
--        | {'unreadable', id}

local n = redis.call('LLEN', KEYS[2])
local head = redis.call('GET', KEYS[1]) or string.rep('0', 64)
if tonumber(ARGV[1]) ~= n + 1 or ARGV[2] ~= head then
  return {'audit', tostring(n)}
end
if ARGV[5] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[5]) == 1 then
  return {'token'}
end

-- Pending writes, applied in order so a later device of the same change
-- sees what an earlier one claimed or released (as one bbolt transaction
-- would). idx[key] is an id, or false for a key released by this change.
local idx, docs = {}, {}
local function owner(k)
  local o = idx[k]
  if o == nil then o = redis.call('HGET', KEYS[4], k) end
  return o
end

local i = 7
for _ = 1, tonumber(ARGV[6]) do
  local id, doc, nkeys = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local keys, keep = {}, {}
  for k = 1, nkeys do
    keys[k] = ARGV[i + 2 + k]
    keep[keys[k]] = true
  end
  i = i + 3 + nkeys

  for _, k in ipairs(keys) do
    local o = owner(k)
    if o and o ~= id then
      return {'exists', k, o, id}
    end
  end

  -- Release keys the stored version listed and this one drops.
  local old = docs[id] or redis.call('HGET', KEYS[5], id)
  if old then
    local okdoc, od = pcall(cjson.decode, old)
    if not okdoc or type(od) ~= 'table' then
      return {'unreadable', id}
    end
    local oldkeys = {od.pubkey}
    if type(od.retired_keys) == 'table' then
      for _, k in ipairs(od.retired_keys) do oldkeys[#oldkeys + 1] = k end
    end
    for _, k in ipairs(oldkeys) do
      if not keep[k] and owner(k) == id then idx[k] = false end
    end
  end

  for _, k in ipairs(keys) do idx[k] = id end
  docs[id] = doc
end

for k, o in pairs(idx) do
  if o then
    redis.call('HSET', KEYS[4], k, o)
  else
    redis.call('HDEL', KEYS[4], k)
  end
end
for id, doc in pairs(docs) do
  redis.call('HSET', KEYS[5], id, doc)
end
-- Removals: a record that may not decode, so its index entries are found
-- by scanning the index (an operator's rare repair).
local nremove = tonumber(ARGV[i])
if nremove and nremove > 0 then
  local gone = {}
  for r = 1, nremove do gone[ARGV[i + r]] = true end
  local all = redis.call('HGETALL', KEYS[4])
  for j = 1, #all, 2 do
    if gone[all[j + 1]] then redis.call('HDEL', KEYS[4], all[j]) end
  end
  for id in pairs(gone) do redis.call('HDEL', KEYS[5], id) end
end
if ARGV[5] ~= '' then
  redis.call('SADD', KEYS[3], ARGV[5])
end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[3])
return {'ok'}
