-- Store a settlement run (fenced: see fence.lua).
-- KEYS: 1 runs (hash run key -> run JSON), 2 runidx, 3 lease
-- ARGV: 1 run key, 2 run JSON, 3 fencing token
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {'ok'}
