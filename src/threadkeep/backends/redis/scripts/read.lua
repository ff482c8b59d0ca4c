-- standalone: the read of every bot turn runs without the shared helpers of _lib.lua (defining
-- them costs more server time than the read itself); the key names below mirror kc and km there.
-- Read messages of a live conversation.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] "window" | "last" | "after"; ARGV[6] how many (last); ARGV[7] after seq; ARGV[8] limit
-- returns {"ok", {"seq body"...}} oldest first, or {"not_found"}
local B, id = ARGV[1], ARGV[2]
local tenant, expires, seq, count, window =
  unpack(redis.call('HMGET', B .. 'c:' .. id, 'tn', 'exp', 'seq', 'cnt', 'win'))
if not tenant then return {'not_found'} end
if ARGV[3] ~= '' and tenant ~= string.sub(ARGV[3], 2) then return {'not_found'} end
if expires and tonumber(expires) <= tonumber(ARGV[4]) then return {'not_found'} end
local messages = B .. 'm:' .. id
local mode = ARGV[5]
if mode == 'after' then
  local limit, after = tonumber(ARGV[8]), tonumber(ARGV[7])
  -- past the last message: nothing (and no huge list index, which Redis would refuse)
  if limit <= 0 or after >= tonumber(seq) then return {'ok', {}} end
  local first = tonumber(seq) - tonumber(count) + 1
  local start = math.max(0, after - first + 1)
  return {'ok', redis.call('LRANGE', messages, start, start + limit - 1)}
end
local last = tonumber(ARGV[6])
if mode == 'window' then last = tonumber(window) end
if last == 0 then return {'ok', redis.call('LRANGE', messages, 0, -1)} end
return {'ok', redis.call('LRANGE', messages, -last, -1)}
