-- Take or give back a conversation's turn lease (fencing token in the conversation hash).
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] "acquire" | "release"; ARGV[3] conversation id;
-- acquire: ARGV[4] tenant (opt); ARGV[5] now; ARGV[6] until; ARGV[7] call token (a resent
--          acquire whose first run went through gets its own lease back, not "busy")
-- release: ARGV[4] token
-- returns {"ok", token} | {"busy"} | {"not_found"}
local id = ARGV[3]
if ARGV[2] == 'release' then
  if redis.call('HGET', kc(id), 'lt') == ARGV[4] then redis.call('HSET', kc(id), 'lu', '0') end
  return {'ok', 0}
end
local now = tonumber(ARGV[5])
local row = live(id, opt(ARGV[4]), now)
if row == nil then return {'not_found'} end
if tonumber(row.lu or '0') > now then
  if row.lk == ARGV[7] then return {'ok', tonumber(row.lt)} end  -- our own retry
  return {'busy'}
end
local token = tonumber(row.lt or '0') + 1
redis.call('HSET', kc(id), 'lt', fmt(token), 'lu', ARGV[6], 'lk', ARGV[7])
return {'ok', token}
