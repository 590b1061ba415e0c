-- Claim or release charges for one owner, atomically for the batch. A
-- claim's value is its owner, then, once a request names it, '|' and the
-- request's token, then '|p' once a payment of that request was applied
-- (chargeask.lua, payment.lua); a renewal keeps the value.
-- KEYS: the charges' claim keys
-- ARGV: 1 owner, 2 ttl in ms ('' releases the owner's claims instead)
-- Reply: per key '1' when the owner holds the claim now, else '0' (for a
-- release, '1' when the owner's claim was dropped).
local out = {}
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  local mine = cur and string.match(cur, '^[^|]*') == ARGV[1]
  if ARGV[2] == '' then
    if mine then
      redis.call('DEL', k)
      out[i] = '1'
    else
      out[i] = '0'
    end
  elseif not cur then
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
    out[i] = '1'
  elseif mine then
    redis.call('PEXPIRE', k, ARGV[2])
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return out
