-- Raise a channel's unsigned balance (and a hold's capture) within the
-- credit limit. Every check runs before the first write.
--
-- KEYS: 1 funding index, 2 the hold hash (any key when there is no hold)
-- ARGV: 1 outpoint, 2 amount, 3 limit, 4 '1' when a hold is captured,
--       5 key prefix
-- Reply: {'ok'} | {'notfound'} | {'credit', owed} | {'nohold'} | {'hold', why}

local pid = redis.call('HGET', KEYS[1], ARGV[1])
if not pid then
  return {'notfound'}
end
local ck = ARGV[5] .. 'ch:' .. pid
local owed = redis.call('HGET', ck, 'owed')
local amount = tonumber(ARGV[2])
if tonumber(owed) + amount > tonumber(ARGV[3]) then
  return {'credit', owed}
end
if ARGV[4] == '1' then
  local h = redis.call('HMGET', KEYS[2], 'active', 'max', 'captured', 'chan')
  if not h[1] then
    return {'nohold'}
  end
  if h[1] ~= '1' then
    return {'hold', 'not active'}
  end
  if h[4] ~= ARGV[1] then
    return {'hold', 'another channel'}
  end
  if tonumber(h[2]) - tonumber(h[3]) < amount then
    return {'hold', 'exhausted'}
  end
  redis.call('HINCRBY', KEYS[2], 'captured', ARGV[2])
end
redis.call('HINCRBY', ck, 'owed', ARGV[2])
return {'ok'}
