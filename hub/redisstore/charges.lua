-- Record a batch of charges exactly once, raising the Owed of the channels
-- they are owed on within the credit limit, in one atomic script run (one
-- AOF write, fsynced with every other client's writes of the same event
-- loop turn under appendfsync always).
--
-- A charge document starts with its status byte ('o' owed, 'p' paid,
-- 'u' unpaid, 'h' held) and the 36-byte channel outpoint; the script only
-- ever rewrites those.
--
-- Amounts are Lua doubles; the Go side keeps them and the limit at most
-- MaxAmount (below 2^52), so Owed + amount is exact.
--
-- KEYS: 1 charges hash (provider 0 event id -> document), 2 funding index,
--       3 owed index (sorted set of owed charge ids, scored by a sequence
--       in KEYS[4], field n, so they list in recording order), 4 that sequence
-- ARGV: 1 key prefix, 2 credit limit, 3 number of charges, then for each
--       charge 8 values: id, document, funding outpoint ('' = none or not
--       owed), amount, provider, payer, index member (time key || id),
--       the payees of its shares, each ended by a zero byte ('' = none)
-- Reply: one string per charge: 'd' .. stored document for a duplicate,
--        'n' .. status byte for a new charge, followed by 'x' when the
--        channel was cleared because it does not exist

local chg, fund, owedIdx, owedSeq, prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local seq = false
local limit = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local noChannel = string.rep('\0', 36)
local chans = {}
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 8
  local id, doc, op = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local stored = redis.call('HGET', chg, id)
  if stored then
    out[#out + 1] = 'd' .. stored
  else
    local cleared = ''
    if string.sub(doc, 1, 1) == 'o' then
      local ch = false
      if op ~= '' then
        ch = chans[op]
        if ch == nil then
          ch = false
          local pid = redis.call('HGET', fund, op)
          if pid then
            local ck = prefix .. 'ch:' .. pid
            ch = {key = ck, owed = tonumber(redis.call('HGET', ck, 'owed')), dirty = false}
          end
          chans[op] = ch
        end
      end
      if not ch then
        doc = 'u' .. noChannel .. string.sub(doc, 38)
        cleared = 'x'
      else
        local amount = tonumber(ARGV[b + 3])
        if ch.owed + amount > limit then
          doc = 'u' .. string.sub(doc, 2)
        else
          ch.owed = ch.owed + amount
          ch.dirty = true
        end
      end
    end
    redis.call('HSET', chg, id, doc)
    if string.sub(doc, 1, 1) == 'o' then
      if not seq then
        seq = tonumber(redis.call('HGET', owedSeq, 'n') or '0')
      end
      seq = seq + 1
      redis.call('ZADD', owedIdx, seq, id)
    end
    -- Derived from the prefix: on a cluster its hash tag keeps these in
    -- the slot of KEYS.
    redis.call('ZADD', prefix .. 'chgp:' .. ARGV[b + 4], 0, ARGV[b + 6])
    redis.call('ZADD', prefix .. 'chgy:' .. ARGV[b + 5], 0, ARGV[b + 6])
    for payee in string.gmatch(ARGV[b + 7], '([^%z]+)%z') do
      redis.call('ZADD', prefix .. 'chgs:' .. payee, 0, ARGV[b + 6])
    end
    out[#out + 1] = 'n' .. string.sub(doc, 1, 1) .. cleared
  end
end
if seq then
  redis.call('HSET', owedSeq, 'n', string.format('%.0f', seq))
end
for _, ch in pairs(chans) do
  if ch and ch.dirty then
    redis.call('HSET', ch.key, 'owed', string.format('%.0f', ch.owed))
  end
end
return out
