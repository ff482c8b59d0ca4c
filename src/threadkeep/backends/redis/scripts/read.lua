-- The read of every bot turn carries one shared helper of _lib.lua, the liveness rule (each
-- definition carried costs server time on every call); the key names below mirror kc and km
-- there.
-- Read messages of a live conversation.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] "window" | "last" | "after" | "before" | "key"; ARGV[6] how many (last), or the extra
-- messages before the window (window); ARGV[7] after seq, before seq, or idempotency key;
-- ARGV[8] limit
-- returns {"ok", {"seq body"...}} oldest first ({"ok", {...}, window size} for "window"), or
-- {"not_found"}
local id = ARGV[2]
local tenant, expires, seq, count, window =
  unpack(redis.call('HMGET', B .. 'c:' .. id, 'tn', 'exp', 'seq', 'cnt', 'win'))
if not alive(tenant, expires, ARGV[3] ~= '' and string.sub(ARGV[3], 2) or nil, tonumber(ARGV[4])) then
  return {'not_found'}
end
local messages = B .. 'm:' .. id
local mode = ARGV[5]
local first = tonumber(seq) - tonumber(count) + 1
if mode == 'after' then
  local limit, after = tonumber(ARGV[8]), tonumber(ARGV[7])
  -- past the last message: nothing (and no huge list index, which Redis would refuse)
  if limit <= 0 or after >= tonumber(seq) then return {'ok', {}} end
  local start = math.max(0, after - first + 1)
  return {'ok', redis.call('LRANGE', messages, start, start + limit - 1)}
end
if mode == 'before' then
  local limit = tonumber(ARGV[8])
  local stop = math.min(tonumber(ARGV[7]), tonumber(seq) + 1) - first - 1
  if limit <= 0 or stop < 0 then return {'ok', {}} end
  return {'ok', redis.call('LRANGE', messages, math.max(0, stop - limit + 1), stop)}
end
if mode == 'key' then  -- a kept message by its idempotency key (the hash remembers the newest)
  local entry = redis.call('HGET', B .. 'i:' .. id, ARGV[7])
  if not entry or tonumber(string.match(entry, '^(%d+)')) < first then return {'ok', {}} end
  return {'ok', {entry}}
end
-- a tail of `last` (0 or more than are kept: all of them; no huge list index either)
local function tail(last)
  if last == 0 or last >= tonumber(count) then return redis.call('LRANGE', messages, 0, -1) end
  return redis.call('LRANGE', messages, -last, -1)
end
if mode == 'window' then
  return {'ok', tail(tonumber(window) + tonumber(ARGV[6])), window}
end
return {'ok', tail(tonumber(ARGV[6]))}
