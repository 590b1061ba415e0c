-- Record one payment request for owed charges (hub.ChargeStore.AskCharges):
-- if every charge's claim is the owner's and names no paid request, make
-- each name the request's token (keeping its expiry) and record the ids;
-- otherwise write nothing.
-- KEYS: 1 the request record (any key when there is none), 2.. the
--       charges' claim keys
-- ARGV: 1 owner, 2 token, 3 the record (JSON ids; '' records nothing),
--       4 the record's ttl in ms
-- Reply: per claim 'a' (asked), 'l' (lost) or 'p' (paid)
local out = {}
local ok = true
for i = 2, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if not cur or string.match(cur, '^[^|]*') ~= ARGV[1] then
    out[i - 1] = 'l'
    ok = false
  elseif string.sub(cur, -2) == '|p' then
    out[i - 1] = 'p'
    ok = false
  else
    out[i - 1] = 'a'
  end
end
if not ok then
  return out
end
local named = ARGV[1] .. '|' .. ARGV[2]
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], named, 'KEEPTTL')
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return out
