-- Replace every message with new ones (seqs after the last), if the last seq is the expected one.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] call token (a resent replace answers as it did); ARGV[6] expected last seq (opt);
-- ARGV[7] events kept; ARGV[8] messages.replaced kind; ARGV[9] caller keys kept;
-- ARGV[10] retry keys kept; ARGV[11] the closed status; then two per item: key (opt), body
-- returns {"ok", {entry...}, last seq} (what is kept) or {"conflict", last seq} or
-- {"not_found" | "closed"}
local id, now = ARGV[2], tonumber(ARGV[4])
local row = live(id, opt(ARGV[3]), now)
if row == nil then return {'not_found'} end
local token = '\t' .. ARGV[5]
if redis.call('HGET', ki(id), token) then
  return {'ok', redis.call('LRANGE', km(id), 0, -1), row.seq}
end
if row.st == ARGV[11] then return {'closed'} end
local expected = opt(ARGV[6])
if expected ~= nil and expected ~= row.seq then return {'conflict', row.seq} end
local n = (#ARGV - 11) / 2
local removed = tonumber(row.cnt)
if n == 0 and removed == 0 then return {'ok', {}, row.seq} end
forget_keys(id, redis.call('LRANGE', km(id), 0, -1))
redis.call('DEL', km(id))
local first = tonumber(row.seq) + 1
local entries = {}
for i = 0, n - 1 do
  entries[i + 1] = fmt(first + i) .. ' ' .. ARGV[13 + 2 * i]
end
local count = n
if n > 0 then
  redis.call('RPUSH', km(id), unpack(entries))
  for i = 0, n - 1 do
    local key = opt(ARGV[12 + 2 * i])
    if key ~= nil then remember_key(id, key, entries[i + 1], kiq(id), ARGV[9]) end
  end
  if row.max ~= nil and count > tonumber(row.max) then
    count = trim_whole(id, count, count - tonumber(row.max))
  end
  row.seq = fmt(first + n - 1)
end
remember_key(id, token, '1', krq(id), ARGV[10])
row.cnt = fmt(count)
touch(row, now)
save(row, TOUCHED)
local data = '{"removed":' .. fmt(removed) .. ',"first_seq":' .. (n > 0 and fmt(first) or '0')
  .. ',"last_seq":' .. row.seq .. '}'
emit(ARGV[8], row.tn, id, data, row.act, ARGV[7])
return {'ok', redis.call('LRANGE', km(id), 0, -1), row.seq}
