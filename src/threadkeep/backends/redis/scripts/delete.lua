-- Erase conversations: one by id, or all of a contact (with its facts); log one erasure event
-- for each. Expired conversations are erased too.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] "id" | "contact"; ARGV[3] id or contact; ARGV[4] tenant (opt);
-- ARGV[5] now; ARGV[6] events kept; ARGV[7] event kind; ARGV[8] event data;
-- ARGV[9] every status, comma-separated; ARGV[10] call token (a resent delete whose first run
-- went through gets that run's answer, kept for a minute)
-- returns {erased conversations that were live, messages, state versions, facts, events of the
-- log, then the erased ids oldest first}: what went, counted as it goes
local now, tenant = tonumber(ARGV[5]), opt(ARGV[4])
local done_key = B .. 'dt:' .. ARGV[10]
local done = redis.call('HGET', done_key, 'r')
if done then return cjson.decode(done) end  -- our own retry
local rows = {}
local facts_erased = 0
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
  for _, k in ipairs(redis.call('HKEYS', facts)) do
    redis.call('ZREM', K_FX, suffix .. '\n' .. k)
    if not string.find(k, '\n', 1, true) then facts_erased = facts_erased + 1 end  -- not a meta field
  end
  redis.call('DEL', facts)
end
table.sort(rows, function(a, b)
  if a.cr ~= b.cr then return tonumber(a.cr) < tonumber(b.cr) end
  return a.id < b.id
end)
local reply = {0, 0, 0, facts_erased, 0}
local floor = tonumber(redis.call('GET', K_EVT) or '0')
for _, row in ipairs(rows) do
  if alive(row.tn, row.exp, nil, now) then reply[1] = reply[1] + 1 end
  reply[2] = reply[2] + redis.call('LLEN', km(row.id))
  reply[3] = reply[3] + redis.call('HLEN', ks(row.id))
  for _, event in ipairs(redis.call('LRANGE', ke(row.id), 0, -1)) do  -- those still in the log
    if tonumber(string.match(event, '^%d+')) > floor then reply[5] = reply[5] + 1 end
  end
  erase(row.id, row.tn, row.ct, row.st, nil)
end
for _, row in ipairs(rows) do
  emit(ARGV[7], row.tn, row.id, ARGV[8], ARGV[5], ARGV[6], true)
  reply[#reply + 1] = row.id
end
redis.call('HSET', done_key, 'r', cjson.encode(reply))
redis.call('PEXPIRE', done_key, 60000)
return reply
