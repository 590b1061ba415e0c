-- Apply one payment update atomically: the seq check, the hold check and
-- capture, the new state and the receipt. The payment lowers the stored
-- owed by its amount (to no less than 0) here, so credit charged by another
-- hubd since the caller read the channel is kept. Every check runs before the first
-- write, because Redis does not roll a script back.
--
-- Numbers are compared as Lua doubles; the Go side keeps every amount and
-- seq below 2^52 so they are exact.
--
-- A payment answering a charge request is fenced: it is applied only
-- while every charge's claim names the request ('owner|token', see
-- chargeask.lua), and marks them paid ('|p' appended).
--
-- KEYS: 1 funding index, 2 the channel's receipts (sorted set by seq),
--       3 the hold hash (any key when there is no hold), 4.. the fenced
--       charges' claim keys
-- ARGV: 1 outpoint, 2 seq, 3 paid, 4 updated (unix ns, '' = zero),
--       5 device signature, 6 receipt member (8-byte seq || receipt),
--       7 amount, 8 '1' when a hold is captured, 9 key prefix,
--       10 the claims' value the fence expects ('owner|token')
-- Reply: {'ok', new owed} | {'notfound'} | {'seq', stored seq} | {'nohold'} |
--        {'hold', why} | {'superseded'}

local pid = redis.call('HGET', KEYS[1], ARGV[1])
if not pid then
  return {'notfound'}
end
-- Derived from the prefix: the index says which record funds this output.
local ck = ARGV[9] .. 'ch:' .. pid
local stored = redis.call('HGET', ck, 'seq')
if tonumber(stored) + 1 ~= tonumber(ARGV[2]) then
  return {'seq', stored}
end
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[10] then
    return {'superseded'}
  end
end
local amount = tonumber(ARGV[7])
if ARGV[8] == '1' then
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
  redis.call('HINCRBY', KEYS[3], 'captured', ARGV[7])
end
-- Amounts stay strings on the write side: a Lua number would be formatted
-- with 14 significant digits.
local owed = redis.call('HGET', ck, 'owed')
if tonumber(owed) <= amount then
  owed = '0'
elseif amount > 0 then -- Redis refuses the increment '-0'
  redis.call('HINCRBY', ck, 'owed', '-' .. ARGV[7])
  owed = redis.call('HGET', ck, 'owed')
end
redis.call('HSET', ck, 'seq', ARGV[2], 'paid', ARGV[3], 'owed', owed, 'upd', ARGV[4], 'sig', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
local paid = ARGV[10] .. '|p'
for i = 4, #KEYS do
  redis.call('SET', KEYS[i], paid, 'KEEPTTL')
end
return {'ok', owed}
