-- Save a new state version, compare-and-set; keep the newest versions.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] value JSON; ARGV[6] expected version (opt); ARGV[7] rollback-to version (opt);
-- ARGV[8] versions kept; ARGV[9] events kept; ARGV[10] event kind; ARGV[11] call token
-- returns {"ok", version} | {"conflict" | "no_version", current} | {"not_found"}
-- the fields the verdict and save() read (the others: agent, metadata, ... are left alone) in
-- one HMGET, made a row by one constructor (as append.lua)
local id, now = ARGV[2], tonumber(ARGV[4])
local v = redis.call('HMGET', kc(id), 'tn', 'ct', 'st', 'sg', 'exp', 'sv', 'stk', 'ttl', 'ia', 'ix')
if not alive(v[1], v[5], opt(ARGV[3]), now) then return {'not_found'} end
local row = {id = id, tn = v[1], ct = v[2] or nil, st = v[3] or nil, sg = v[4] or nil,
  exp = v[5] or nil, sv = v[6] or nil, stk = v[7] or nil, ttl = v[8] or nil, ia = v[9] or nil,
  ix = v[10] or nil}
if row.stk == ARGV[11] then return {'ok', tonumber(row.sv)} end  -- our own retry
local current = tonumber(row.sv)
local expected = opt(ARGV[6])
if expected ~= nil and tonumber(expected) ~= current then return {'conflict', current} end
local value = ARGV[5]
local rollback = opt(ARGV[7])
if rollback ~= nil then
  local old = redis.call('HGET', ks(id), rollback)
  if not old then return {'no_version', current} end
  value = string.sub(old, string.find(old, ' ', 1, true) + 1)
end
local version = current + 1
local version_text = fmt(version)  -- formatted once (each number formatted costs a sprintf)
redis.call('HSET', ks(id), version_text, ARGV[4] .. ' ' .. value)
-- versions up to version - kept go, two per HDEL from the newest of them down until one was
-- missing: each save leaves none of them, so a save deletes one in one command (more only
-- after a store that kept more versions)
local gone = version - tonumber(ARGV[8])
while gone > 0 and redis.call('HDEL', ks(id), fmt(gone), fmt(gone - 1)) == 2 do gone = gone - 2 end
row.sv = version_text
row.stk = ARGV[11]
touch(row, now, ARGV[4])
-- written back: what changed (a missing ttl's expiry is left as it was, as touch() leaves it),
-- as HSET's pairs made by one constructor (a table grown item by item is rehashed at every
-- power of two)
local args
if row.ttl ~= nil then
  args = {'stk', row.stk, 'sv', row.sv, 'act', row.act, 'idl', row.idl, 'exp', row.exp}
else
  args = {'stk', row.stk, 'sv', row.sv, 'act', row.act, 'idl', row.idl}
end
-- the versions: the one key it may create, only with its first version (a kept version stays:
-- Limits keeps at least one, so the hash is never emptied and made again)
save(row, nil, row.st, current == 0 and {ks(id)} or {}, nil, args)
emit(ARGV[10], row.tn, id, '{"version":' .. version_text .. '}', row.act, ARGV[9])
return {'ok', version}
