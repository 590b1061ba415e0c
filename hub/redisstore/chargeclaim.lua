-- Claim or release charges for one owner, atomically for the batch.
-- KEYS: the charges' claim keys
-- ARGV: 1 owner, 2 ttl in ms ('' releases the owner's claims instead)
-- Reply: per key '1' when the owner holds the claim now, else '0' (for a
-- release, '1' when the owner's claim was dropped).
local out = {}
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if ARGV[2] == '' then
    if cur == ARGV[1] then
      redis.call('DEL', k)
      out[i] = '1'
    else
      out[i] = '0'
    end
  elseif not cur or cur == ARGV[1] then
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return out
