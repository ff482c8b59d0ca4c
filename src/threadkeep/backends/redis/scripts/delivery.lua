-- Read one kept message, or replace it if it is still as read (set_delivery: the flow decides
-- the change with _rules.decide.delivery between the two calls; this applies it atomically).
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now; ARGV[5] seq;
-- ARGV[6] the entry read before ("" to only read); ARGV[7] the new entry; ARGV[8] event kind;
-- ARGV[9] event data; ARGV[10] events kept
-- returns {"not_found"} (conversation gone) | {"ok", entry or ""} (read: "" when no such seq
-- is kept) | {"ok", new entry} (replaced) | {"conflict"} (it changed since it was read)
local id, now = ARGV[2], tonumber(ARGV[4])
local row = live(id, opt(ARGV[3]), now)
if row == nil then return {'not_found'} end
local seq = tonumber(ARGV[5])
local index, entry = nil, nil
local first = redis.call('LINDEX', km(id), 0)
if first then
  -- Kept seqs are consecutive, so the index follows from the first one; check it anyway.
  local at = seq - tonumber(string.match(first, '^(%d+) '))
  local found = at >= 0 and redis.call('LINDEX', km(id), at)
  if found and tonumber(string.match(found, '^(%d+) ')) == seq then index, entry = at, found end
end
if ARGV[6] == '' then return {'ok', entry or ''} end
if entry ~= ARGV[6] then return {'conflict'} end
redis.call('LSET', km(id), index, ARGV[7])
local key = entry_key(entry)
if key ~= nil and redis.call('HGET', ki(id), key) == entry then
  redis.call('HSET', ki(id), key, ARGV[7])  -- the copy that replays of its key return
end
emit(ARGV[8], row.tn, id, ARGV[9], now, ARGV[10])
return {'ok', ARGV[7]}
