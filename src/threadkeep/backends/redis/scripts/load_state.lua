-- A load carries one shared helper of _lib.lua, the liveness rule (each definition carried
-- costs server time on every call); the key names below mirror kc and ks there.
-- Load the current state version, or a given one.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now; ARGV[5] version (opt)
-- returns {"ok"} (nothing saved) | {"ok", version, "saved value"} | {"no_version"} | {"not_found"}
local id = ARGV[2]
local tenant, expires, current = unpack(redis.call('HMGET', B .. 'c:' .. id, 'tn', 'exp', 'sv'))
if not alive(tenant, expires, ARGV[3] ~= '' and string.sub(ARGV[3], 2) or nil, tonumber(ARGV[4])) then
  return {'not_found'}
end
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
