-- Give a live conversation another retention; its expiry and idle time follow from its last
-- activity (the change is not activity).
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] ttl µs (opt); ARGV[6] idle after µs; ARGV[7] window; ARGV[8] max messages (opt);
-- ARGV[9] events kept; ARGV[10] event kind
-- returns {outcome, row as field, value pairs} or {"not_found"}
local id, now = ARGV[2], ARGV[4]
local row = live(id, opt(ARGV[3]), tonumber(now))
if row == nil then return {'not_found'} end
local ttl, ia, win, mx = opt(ARGV[5]), ARGV[6], ARGV[7], opt(ARGV[8])
if row.ttl == ttl and row.ia == ia and row.win == win and row.max == mx then
  return {'unchanged', flatten(row)}
end
local act = tonumber(row.act)
if row.exp ~= nil and ttl == nil then redis.call('ZREM', K_EXP, exp_member(row)) end
row.ttl, row.ia, row.win, row.max = ttl, ia, win, mx
if ttl == nil then row.exp = nil else row.exp = fmt(act + tonumber(ttl)) end
row.idl = fmt(act + tonumber(ia))
save(row, {'ttl', 'ia', 'win', 'max', 'exp', 'idl'}, row.st)
emit(ARGV[10], row.tn, id, '{"expires_us":' .. (row.exp or 'null') .. '}', now, ARGV[9])
return {'ok', flatten(row)}
