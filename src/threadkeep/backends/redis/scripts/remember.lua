-- Store a fact about a contact; a different value supersedes the live one, which joins the
-- fact's history (the rule of decide.supersede, kept here for atomicity).
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] tenant; ARGV[3] contact; ARGV[4] key; ARGV[5] fact blob
-- "updated expires tier value"; ARGV[6] expires (microseconds); ARGV[7] ttl (microseconds);
-- ARGV[8] source JSON; ARGV[9] how many superseded values are kept
-- The field ARGV[4] .. "\n" holds "source JSON\nhistory JSON" (no key has a newline).
-- returns the history JSON stored
local hash = kf(ARGV[2], ARGV[3])
local now = tonumber(ARGV[6]) - tonumber(ARGV[7])
local history = {}
local old = redis.call('HGET', hash, ARGV[4])
local meta = redis.call('HGET', hash, ARGV[4] .. '\n')
local old_source, old_history = 'null', '[]'
if meta then old_source, old_history = string.match(meta, '^([^\n]*)\n(.*)$') end
if old then
  for _, h in ipairs(cjson.decode(old_history)) do
    if tonumber(h.expires_us) > now then history[#history + 1] = h end
  end
  local updated, expires, tier, value = string.match(old, '^(%d+) (%d+) (%S+) (.*)$')
  local new_value = string.match(ARGV[5], '^%d+ %d+ %S+ (.*)$')
  if tonumber(expires) > now and value ~= new_value then
    table.insert(history, 1, {value = value, tier = tier, source = old_source,
      updated_us = updated, expires_us = expires})
  end
end
while #history > tonumber(ARGV[9]) do table.remove(history) end
local history_json = '[]'
if #history > 0 then history_json = cjson.encode(history) end
redis.call('HSET', hash, ARGV[4], ARGV[5], ARGV[4] .. '\n', ARGV[8] .. '\n' .. history_json)
redis.call('ZADD', K_FX, ARGV[6], string.sub(hash, #B + 3) .. '\n' .. ARGV[4])
local t = redis.call('TIME')
local real_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = math.max(math.floor(tonumber(ARGV[6]) / 1000), real_ms + math.floor(tonumber(ARGV[7]) / 1000)) + GRACE_MS
if redis.call('PEXPIRETIME', hash) < at then redis.call('PEXPIREAT', hash, fmt(at)) end
-- lazy cleaning: index entries of facts whose hash Redis already reclaimed
for _, member in ipairs(redis.call('ZRANGEBYSCORE', K_FX, '-inf', fmt(now - GRACE_MS * 1000), 'LIMIT', 0, 4)) do
  local suffix, field = string.match(member, '^(.*)\n([^\n]*)$')
  if redis.call('HEXISTS', B .. 'f:' .. suffix, field) == 0 then redis.call('ZREM', K_FX, member) end
end
return history_json
