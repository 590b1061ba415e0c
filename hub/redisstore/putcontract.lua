-- Store a record once (a contract; a CDR with other keys): a key already
-- there is left as it is, since a published contract or an issued CDR
-- never changes.
--
-- KEYS: 1 contracts hash (hash hex -> record JSON), 2 contracts by
--       publication (sorted set of hash hex scored by unix ms)
-- ARGV: 1 hash hex, 2 record JSON, 3 published unix ms
-- Reply: 1 when stored, 0 when it was there

if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
