-- Append one message: next seq, status per on-message table, sliding expiry, events.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] now; ARGV[4] events kept; ARGV[5]
-- on-message table "from=to=event kind;..."; ARGV[6] message body; ARGV[7] message.appended
-- kind; ARGV[8] role; ARGV[9] caller keys kept; ARGV[10] retry keys kept; ARGV[11] internal
-- retry key (opt); then the optional tail, each argument left out (with those after it) when
-- it and they are empty, as they are for most appends (each argument costs the client and
-- the server its packing, parsing and a Lua string): ARGV[12] tenant (opt); ARGV[13] caller
-- idempotency key (opt); ARGV[14] fence (opt); ARGV[15] (append_read only) present: the reply
-- ends with the record as this call left it (its HGETALL)
-- returns {"ok" | "duplicate", "seq body"[, record]} or {"not_found" | "closed" | "fenced"}; a
-- message stored by this call without ARGV[15] is answered {"ok", seq} (a number): the caller
-- sent its body, so it is not sent back
-- Every call runs this whole text on the server's one thread, so it is written for the common
-- path: no table of field names, no loop over the record, one command per key where one does.
-- internal retry keys are forgotten this many at a time (see remember_key)
local RETRY_BATCH = 16
local id, now, tenant = ARGV[2], tonumber(ARGV[3]), opt(ARGV[12])
-- the fields the verdict and save() read (the others: agent, metadata, the count it rewrites ...
-- are left alone) in one HMGET, the lease's two only with a fence: a field the record lacks is
-- its listpack's longest search. The row is made by one constructor.
local fence = opt(ARGV[14])
local v
if fence == nil then
  v = redis.call('HMGET', kc(id), 'tn', 'ct', 'st', 'sg', 'exp', 'seq', 'ttl', 'ia', 'max', 'ix')
else
  v = redis.call('HMGET', kc(id), 'tn', 'ct', 'st', 'sg', 'exp', 'seq', 'ttl', 'ia', 'max', 'ix',
    'lt', 'lu')
end
if not alive(v[1], v[5], tenant, now) then return {'not_found'} end
local row = {id = id, tn = v[1], ct = v[2] or nil, st = v[3] or nil, sg = v[4] or nil,
  exp = v[5] or nil, seq = v[6] or nil, ttl = v[7] or nil, ia = v[8] or nil, max = v[9] or nil,
  ix = v[10] or nil, lt = v[11] or nil, lu = v[12] or nil}
-- the verdict, taken before anything is written: the on-message table's entry of the status
local to, to_kind
local pos = string.find(';' .. ARGV[5], ';' .. row.st .. '=', 1, true)
if pos ~= nil then to, to_kind = string.match(ARGV[5], '^([^=;]+)=([^=;]+)', pos + #row.st + 1) end
local refused
if to == nil then
  refused = 'closed'
elseif fence ~= nil and (row.lt ~= fence or tonumber(row.lu or '0') <= now) then
  refused = 'fenced'
end
local seq_n = tonumber(row.seq) + 1
local seq = fmt(seq_n)
local entry = seq .. ' ' .. ARGV[6]
-- an idempotency key is checked and noted in one HSETNX (0: it was there, a replay, answered as
-- it was before the verdict), and taken back if the append is refused
local ikey, rkey = opt(ARGV[13]), opt(ARGV[11])
if ikey ~= nil and redis.call('HSETNX', ki(id), ikey, entry) == 0 then
  if ARGV[15] then return {'duplicate', redis.call('HGET', ki(id), ikey), redis.call('HGETALL', kc(id))} end
  return {'duplicate', redis.call('HGET', ki(id), ikey)}
end
local rfield = rkey ~= nil and '\t' .. rkey or nil
if rfield ~= nil and redis.call('HSETNX', ki(id), rfield, entry) == 0 then
  if ikey ~= nil then redis.call('HDEL', ki(id), ikey) end  -- (the flows never send both)
  -- our own retry of an append that went through
  if ARGV[15] then return {'ok', redis.call('HGET', ki(id), rfield), redis.call('HGETALL', kc(id))} end
  return {'ok', redis.call('HGET', ki(id), rfield)}
end
if refused ~= nil then
  if ikey ~= nil then redis.call('HDEL', ki(id), ikey) end
  if rfield ~= nil then redis.call('HDEL', ki(id), rfield) end
  return {refused}
end
local count = redis.call('RPUSH', km(id), entry)
if row.max ~= nil and count > tonumber(row.max) then
  count = trim_whole(id, count, count - tonumber(row.max))
end
-- the keys this call may create: they get their native TTL even when the others keep theirs.
-- The idempotency hash is new only with its queue of retry keys (each name in that queue is a
-- field of the hash: remember_key adds and removes both), but may be with a queue of caller
-- keys (clearing messages forgets their keys in the hash and leaves the queue).
local written = {}
if count == 1 then written[#written + 1] = km(id) end
if ikey ~= nil then
  written[#written + 1] = ki(id)
  if remember_key(id, ikey, nil, kiq(id), ARGV[9]) then written[#written + 1] = kiq(id) end
end
if rfield ~= nil and remember_key(id, rfield, nil, krq(id), ARGV[10], RETRY_BATCH) then
  if ikey == nil then written[#written + 1] = ki(id) end
  written[#written + 1] = krq(id)
end
local old = row.st
row.st, row.seq, row.cnt = to, seq, fmt(count)
touch(row, now, ARGV[3])
-- written back: what changed (the stage and the state version do not; nor does a missing ttl's
-- expiry, which touch() leaves as it was), as HSET's pairs made by one constructor
local args = {'act', row.act, 'idl', row.idl, 'cnt', row.cnt, 'seq', row.seq}
if row.ttl ~= nil then args[9], args[10] = 'exp', row.exp end
if to ~= old then args[#args + 1], args[#args + 2] = 'st', to end
save(row, nil, old, written, nil, args)
emit(ARGV[7], row.tn, id, '{"seq":' .. row.seq .. ',"role":' .. json_str(ARGV[8]) .. '}', row.act, ARGV[4])
if to ~= old then emit(to_kind, row.tn, id, status_data(old, to), row.act, ARGV[4]) end
if ARGV[15] then return {'ok', entry, redis.call('HGETALL', kc(id))} end
return {'ok', seq_n}
