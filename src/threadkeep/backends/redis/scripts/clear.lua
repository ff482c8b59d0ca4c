-- Remove every message; the conversation, its state, status and seq counter stay.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] call token (a resent clear answers as it did); ARGV[6] events kept;
-- ARGV[7] messages.cleared kind; ARGV[8] retry keys kept; ARGV[9] the closed status
-- returns {"ok", removed} or {"not_found" | "closed"}
local id, now = ARGV[2], tonumber(ARGV[4])
local row = live(id, opt(ARGV[3]), now)
if row == nil then return {'not_found'} end
local token = '\t' .. ARGV[5]
local done = redis.call('HGET', ki(id), token)
if done then return {'ok', tonumber(done)} end
if row.st == ARGV[9] then return {'closed'} end
local removed = tonumber(row.cnt)
if removed == 0 then return {'ok', 0} end
forget_keys(id, redis.call('LRANGE', km(id), 0, -1))
redis.call('DEL', km(id))
remember_key(id, token, fmt(removed), krq(id), ARGV[8])
row.cnt = '0'
touch(row, now)
save(row, TOUCHED)
emit(ARGV[7], row.tn, id, '{"removed":' .. fmt(removed) .. ',"last_seq":' .. row.seq .. '}',
  row.act, ARGV[6])
return {'ok', removed}
