-- Append one message: next seq, status per on-message table, sliding expiry, events.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] caller idempotency key (opt); ARGV[6] internal retry key (opt); ARGV[7] fence (opt);
-- ARGV[8] events kept; ARGV[9] on-message table "from=to=event kind;..."; ARGV[10] message
-- body; ARGV[11] message.appended kind; ARGV[12] role; ARGV[13] caller keys kept;
-- ARGV[14] retry keys kept
-- returns {"ok" | "duplicate", "seq body"} or {"not_found" | "closed" | "fenced"}
-- the fields the verdict and save() read: the others (agent, metadata, ...) are left alone
local APPEND_FIELDS = {'tn', 'ct', 'st', 'sg', 'exp', 'seq', 'cnt', 'ttl', 'ia', 'max', 'lt', 'lu', 'ix'}
-- internal retry keys are forgotten this many at a time (see remember_key)
local RETRY_BATCH = 16
local id, now = ARGV[2], tonumber(ARGV[4])
local row = live_fields(id, opt(ARGV[3]), now, APPEND_FIELDS)
if row == nil then return {'not_found'} end
local ikey, rkey = opt(ARGV[5]), opt(ARGV[6])
if ikey ~= nil then
  local stored = redis.call('HGET', ki(id), ikey)
  if stored then return {'duplicate', stored} end
end
if rkey ~= nil then
  local stored = redis.call('HGET', ki(id), '\t' .. rkey)
  if stored then return {'ok', stored} end  -- our own retry of an append that went through
end
local to, to_kind
for from, target, kind in string.gmatch(ARGV[9], '([^=;]+)=([^=;]+)=([^=;]+)') do
  if from == row.st then to, to_kind = target, kind end
end
if to == nil then return {'closed'} end
local fence = opt(ARGV[7])
if fence ~= nil and (row.lt ~= fence or tonumber(row.lu or '0') <= now) then
  return {'fenced'}
end
local seq = tonumber(row.seq) + 1
local entry = fmt(seq) .. ' ' .. ARGV[10]
local count = redis.call('RPUSH', km(id), entry)
if row.max ~= nil and count > tonumber(row.max) then
  count = trim_whole(id, count, count - tonumber(row.max))
end
-- the keys this call may create: they get their native TTL even when the others keep theirs
local written = {ki(id)}
if count == 1 then written[#written + 1] = km(id) end
if ikey ~= nil and remember_key(id, ikey, entry, kiq(id), ARGV[13]) then
  written[#written + 1] = kiq(id)
end
if rkey ~= nil and remember_key(id, '\t' .. rkey, entry, krq(id), ARGV[14], RETRY_BATCH) then
  written[#written + 1] = krq(id)
end
local old = row.st
row.st, row.seq, row.cnt = to, fmt(seq), fmt(count)
touch(row, now)
-- written back: what changed (the stage and the state version do not; nor does a missing ttl's
-- expiry, which touch() leaves as it was)
local changed = {'act', 'idl', 'cnt', 'seq'}
if row.ttl ~= nil then changed[#changed + 1] = 'exp' end
if to ~= old then changed[#changed + 1] = 'st' end
save(row, changed, old, written)
emit(ARGV[11], row.tn, id, '{"seq":' .. fmt(seq) .. ',"role":' .. json_str(ARGV[12]) .. '}', row.act, ARGV[8])
if to ~= old then emit(to_kind, row.tn, id, status_data(old, to), row.act, ARGV[8]) end
return {'ok', entry}
