-- standalone: a load runs without the shared helpers of _lib.lua (defining them costs more
-- server time than the load itself); the key names below mirror kc and ks there.
-- Load the current state version, or a given one.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now; ARGV[5] version (opt)
-- returns {"ok"} (nothing saved) | {"ok", version, "saved value"} | {"no_version"} | {"not_found"}
local B, id = ARGV[1], ARGV[2]
local tenant, expires, current = unpack(redis.call('HMGET', B .. 'c:' .. id, 'tn', 'exp', 'sv'))
if not tenant then return {'not_found'} end
if ARGV[3] ~= '' and tenant ~= string.sub(ARGV[3], 2) then return {'not_found'} end
if expires and tonumber(expires) <= tonumber(ARGV[4]) then return {'not_found'} end
local version = current
if ARGV[5] ~= '' then
  version = string.sub(ARGV[5], 2)
elseif current == '0' then
  return {'ok'}
end
local blob = redis.call('HGET', B .. 's:' .. id, version)
if not blob then
  if ARGV[5] == '' then return {'ok'} end
  return {'no_version'}
end
return {'ok', tonumber(version), blob}
