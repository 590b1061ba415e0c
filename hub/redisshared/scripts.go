package redisshared

// addCredSource: KEYS creds, credhash; ARGV id, hash, JSON. 0 when the id
// or the hash is taken, else 1.
const addCredSource = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1`

// casSource: KEYS hash; ARGV field, old value, new value. Sets the field
// when it still holds old: 1, else 0.
const casSource = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`

// putSource: KEYS outbox, due, sent; ARGV now ms, forget-before ms, id1,
// JSON1, due1, id2, ... Adds the entries neither pending nor delivered
// since forget-before (one delivery per event, also when two instances
// queue the same event one after the other's delivery), and forgets
// older deliveries.
const putSource = `
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
for i = 3, #ARGV, 3 do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i]) and redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i+1]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[i+2], ARGV[i])
  end
end
return 1`

// doneSource: KEYS outbox, due, claims, sent; ARGV id, now ms. The
// delivery was made (or its endpoint is gone): whoever claims it, it
// leaves, and is remembered as sent.
const doneSource = `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1`

// retrySource: KEYS outbox, due, claims; ARGV id, token, JSON, due ms.
// Only the current claim may reschedule: 1, else 0.
const retrySource = `
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1`

// burySource: KEYS outbox, due, claims, dead; ARGV id, token, JSON.
const burySource = `
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1`

// redeliverSource: KEYS dead, outbox, due, claims; ARGV id, old dead
// JSON, new JSON, due ms. Moves the dead entry back when it is unchanged:
// 1, else 0.
const redeliverSource = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
-- A claim mark: the next claim sends it as a redelivery.
redis.call('HSET', KEYS[4], ARGV[1], 'redelivered')
return 1`
