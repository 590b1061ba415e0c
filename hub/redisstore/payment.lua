-- Apply one payment update atomically: the seq check, the hold check and
-- capture, the new state and the receipt. Every check runs before the first
-- write, because Redis does not roll a script back.
--
-- Numbers are compared as Lua doubles; the Go side keeps every amount and
-- seq below 2^52 so they are exact.
--
-- KEYS: 1 funding index, 2 the channel's receipts (sorted set by seq),
--       3 the hold hash (any key when there is no hold)
-- ARGV: 1 outpoint, 2 seq, 3 paid, 4 owed, 5 updated (unix ns, '' = zero),
--       6 device signature, 7 receipt member (8-byte seq || receipt),
--       8 amount, 9 '1' when a hold is captured, 10 key prefix
-- Reply: {'ok'} | {'notfound'} | {'seq', stored seq} | {'nohold'} |
--        {'hold', why}

local pid = redis.call('HGET', KEYS[1], ARGV[1])
if not pid then
  return {'notfound'}
end
-- Derived from the prefix: the index says which record funds this output.
local ck = ARGV[10] .. 'ch:' .. pid
local stored = redis.call('HGET', ck, 'seq')
if tonumber(stored) + 1 ~= tonumber(ARGV[2]) then
  return {'seq', stored}
end
local amount = tonumber(ARGV[8])
if ARGV[9] == '1' then
  local h = redis.call('HMGET', KEYS[3], 'active', 'max', 'captured', 'chan')
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
  redis.call('HINCRBY', KEYS[3], 'captured', ARGV[8])
end
redis.call('HSET', ck, 'seq', ARGV[2], 'paid', ARGV[3], 'owed', ARGV[4], 'upd', ARGV[5], 'sig', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[7])
return {'ok'}
