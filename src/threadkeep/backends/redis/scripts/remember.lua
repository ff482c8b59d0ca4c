-- Store or replace a fact about a contact.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] tenant; ARGV[3] contact; ARGV[4] key; ARGV[5] fact blob
-- "updated expires tier value"; ARGV[6] expires (microseconds); ARGV[7] ttl (microseconds)
-- returns 1
local hash = kf(ARGV[2], ARGV[3])
redis.call('HSET', hash, ARGV[4], ARGV[5])
redis.call('ZADD', K_FX, ARGV[6], string.sub(hash, #B + 3) .. '\n' .. ARGV[4])
local t = redis.call('TIME')
local real_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = math.max(math.floor(tonumber(ARGV[6]) / 1000), real_ms + math.floor(tonumber(ARGV[7]) / 1000)) + GRACE_MS
if redis.call('PEXPIRETIME', hash) < at then redis.call('PEXPIREAT', hash, fmt(at)) end
-- lazy cleaning: index entries of facts whose hash Redis already reclaimed
local now = tonumber(ARGV[6]) - tonumber(ARGV[7])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', K_FX, '-inf', fmt(now - GRACE_MS * 1000), 'LIMIT', 0, 4)) do
  local suffix, field = string.match(member, '^(.*)\n([^\n]*)$')
  if redis.call('HEXISTS', B .. 'f:' .. suffix, field) == 0 then redis.call('ZREM', K_FX, member) end
end
return 1
