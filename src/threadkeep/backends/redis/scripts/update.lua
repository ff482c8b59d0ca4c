-- Set the status, the stage or the agent of a live conversation.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] "status" | "stage" | "agent_id"; ARGV[6] value (opt); ARGV[7] allowed-from statuses, comma-separated;
-- ARGV[8] events kept; ARGV[9] event kind
-- returns {outcome, status found, row as field, value pairs} or {"not_found"}
local id, now, value = ARGV[2], tonumber(ARGV[4]), opt(ARGV[6])
local row = live(id, opt(ARGV[3]), now)
if row == nil then return {'not_found'} end
local allowed = csv_set(ARGV[7])
local old = row.st
if ARGV[5] == 'status' then
  if row.st == value then return {'unchanged', old, flatten(row)} end
  if not allowed[row.st] then return {'illegal', old, flatten(row)} end
  row.st = value
  touch(row, now)
  save(row, TOUCHED, old)
  emit(ARGV[9], row.tn, id, status_data(old, value), row.act, ARGV[8])
  return {'ok', old, flatten(row)}
end
if not allowed[row.st] then return {'closed', old, flatten(row)} end
if ARGV[5] == 'agent_id' then
  if row.ag == value then return {'unchanged', old, flatten(row)} end
  local old_agent = row.ag
  row.ag = value
  touch(row, now)
  save(row, {'ag', 'act', 'exp', 'idl'}, old)
  emit(ARGV[9], row.tn, id, status_data(old_agent, value), row.act, ARGV[8])
  return {'ok', old, flatten(row)}
end
if row.sg == value then return {'unchanged', old, flatten(row)} end
local old_stage = row.sg
if old_stage ~= nil then redis.call('ZREM', kxg(row.tn, old_stage), id) end
row.sg = value
touch(row, now)
save(row, TOUCHED, old)
emit(ARGV[9], row.tn, id, status_data(old_stage, value), row.act, ARGV[8])
return {'ok', old, flatten(row)}
