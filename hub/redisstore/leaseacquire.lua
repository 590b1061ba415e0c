-- Take the settlement lease for an instance, with a new fencing token,
-- unless another instance holds it live.
-- KEYS: 1 lease ('<token>|<instance>', expiring), 2 token counter
-- ARGV: 1 instance, 2 ttl in ms
-- Reply: {'ok', token, ttl ms} | {'held', token, instance, pttl ms}
local cur = redis.call('GET', KEYS[1])
if cur then
  local tok, inst = string.match(cur, '^(%d+)|(.*)$')
  if inst ~= ARGV[1] then
    return {'held', tok, inst, tostring(redis.call('PTTL', KEYS[1]))}
  end
end
local tok = tostring(redis.call('INCR', KEYS[2]))
redis.call('SET', KEYS[1], tok .. '|' .. ARGV[1], 'PX', ARGV[2])
return {'ok', tok, ARGV[2]}
