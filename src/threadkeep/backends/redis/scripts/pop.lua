-- Remove the newest message; its seq becomes the last seq again (seqs stay gap-free).
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] call token (a resent pop answers as it did); ARGV[6] events kept;
-- ARGV[7] message.popped kind; ARGV[8] retry keys kept; ARGV[9] the closed status
-- returns {"ok", entry} or {"ok"} (nothing to pop), or {"not_found" | "closed"}
local id, now = ARGV[2], tonumber(ARGV[4])
local row = live(id, opt(ARGV[3]), now)
if row == nil then return {'not_found'} end
local token = '\t' .. ARGV[5]
local done = redis.call('HGET', ki(id), token)
if done then
  if done == '' then return {'ok'} end
  return {'ok', done}
end
if row.st == ARGV[9] then return {'closed'} end
if tonumber(row.cnt) == 0 then return {'ok'} end
local entry = redis.call('RPOP', km(id))
forget_keys(id, {entry})
remember_key(id, token, entry, krq(id), ARGV[8])
local seq = tonumber(string.match(entry, '^(%d+)'))
row.seq, row.cnt = fmt(seq - 1), fmt(tonumber(row.cnt) - 1)
touch(row, now)
save(row, TOUCHED)
emit(ARGV[7], row.tn, id, '{"seq":' .. fmt(seq) .. ',"role":' .. json_str(entry_role(entry)) .. '}',
  row.act, ARGV[6])
return {'ok', entry}
