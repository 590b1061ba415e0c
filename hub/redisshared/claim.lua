-- KEYS: due, outbox, claims. ARGV: now (ms), lease end (ms), token.
-- Claims the earliest entry due at now: its score moves to the lease end
-- and its claim token is recorded. Returns {id, entry JSON, stale} with
-- stale 1 when an earlier claim was never finished, or {false, next due
-- ms} (false when nothing is pending) when none is due.
while true do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 0 then
    return {false, false}
  end
  local id, score = first[1], tonumber(first[2])
  if score > tonumber(ARGV[1]) then
    return {false, first[2]}
  end
  local v = redis.call('HGET', KEYS[2], id)
  if not v then
    -- An index entry without its delivery (cannot happen: the scripts
    -- write both): drop it and look again.
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    local stale = redis.call('HGET', KEYS[3], id)
    redis.call('HSET', KEYS[3], id, ARGV[3])
    if stale then
      return {id, v, 1}
    end
    return {id, v, 0}
  end
end
