-- Fencing check, prepended to every settlement write script: the last KEY
-- is the settlement lease ('<token>|<instance>', expiring), the last ARGV
-- the writer's fencing token ('' = unfenced). A fenced write runs only
-- while the lease is live and holds that token; otherwise nothing is
-- written and the reply is {'fenced', live token or 'none'}.
local fence_token = ARGV[#ARGV]
if fence_token ~= '' then
  local fence_cur = redis.call('GET', KEYS[#KEYS])
  local fence_tok = fence_cur and string.match(fence_cur, '^(%d+)|')
  if fence_tok ~= fence_token then
    return {'fenced', fence_tok or 'none'}
  end
end
