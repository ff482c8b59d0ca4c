-- Erase conversations: one by id, or all of a contact (with its facts); log one erasure event
-- for each. Expired conversations are erased too.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] "id" | "contact"; ARGV[3] id or contact; ARGV[4] tenant (opt);
-- ARGV[5] now; ARGV[6] events kept; ARGV[7] event kind; ARGV[8] event data;
-- ARGV[9] every status, comma-separated; ARGV[10] call token (a resent delete whose first run
-- went through gets that run's answer, kept for a minute)
-- returns {erased conversations that were live, erased conversations}
local now, tenant = tonumber(ARGV[5]), opt(ARGV[4])
local done_key = B .. 'dt:' .. ARGV[10]
local done = redis.call('HMGET', done_key, 'live', 'all')
if done[1] then return {tonumber(done[1]), tonumber(done[2])} end  -- our own retry
local rows = {}
if ARGV[2] == 'id' then
  local row = hgetall(kc(ARGV[3]))
  if row ~= nil and (tenant == nil or row.tn == tenant) then rows[1] = row end
else
  local key = kct(tenant, ARGV[3])
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local row = hgetall(kc(id))
    if row ~= nil and row.tn == tenant and row.ct == ARGV[3] then rows[#rows + 1] = row end
  end
  redis.call('DEL', key)
  local facts = kf(tenant, ARGV[3])
  local suffix = string.sub(facts, #B + 3)
  for _, k in ipairs(redis.call('HKEYS', facts)) do redis.call('ZREM', K_FX, suffix .. '\n' .. k) end
  redis.call('DEL', facts)
end
table.sort(rows, function(a, b)
  if a.cr ~= b.cr then return tonumber(a.cr) < tonumber(b.cr) end
  return a.id < b.id
end)
local live_count = 0
for _, row in ipairs(rows) do
  if not is_expired(row, now) then live_count = live_count + 1 end
  erase(row.id, row.tn, row.ct, row.st, nil)
end
for _, row in ipairs(rows) do emit(ARGV[7], row.tn, row.id, ARGV[8], ARGV[5], ARGV[6], true) end
redis.call('HSET', done_key, 'live', live_count, 'all', #rows)
redis.call('PEXPIRE', done_key, 60000)
return {live_count, #rows}
