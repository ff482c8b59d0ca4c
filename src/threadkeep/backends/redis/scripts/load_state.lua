-- Load the current state version, or a given one.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now; ARGV[5] version (opt)
-- returns {"ok"} (nothing saved) | {"ok", version, "saved value"} | {"no_version"} | {"not_found"}
local id = ARGV[2]
local row = live(id, opt(ARGV[3]), tonumber(ARGV[4]))
if row == nil then return {'not_found'} end
local version = opt(ARGV[5])
if version == nil then
  if row.sv == '0' then return {'ok'} end
  version = row.sv
end
local blob = redis.call('HGET', ks(id), version)
if not blob then
  if opt(ARGV[5]) == nil then return {'ok'} end
  return {'no_version'}
end
return {'ok', tonumber(version), blob}
