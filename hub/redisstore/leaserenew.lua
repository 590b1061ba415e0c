-- Renew (ARGV[2] = ttl in ms) or release (ARGV[2] = '') the settlement
-- lease if it still holds ARGV[1] ('<token>|<instance>').
-- KEYS: 1 lease
-- Reply: {'ok'} | {'lost', current value or ''}
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  return {'lost', cur or ''}
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {'ok'}
