-- Purge expired conversations and facts, mark idle ones, in bounded batches.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] now; ARGV[3] "1" for a dry run; ARGV[4] idle status;
-- ARGV[5] statuses that turn idle, comma-separated; ARGV[6] batch size; ARGV[7] events kept;
-- ARGV[8] event kind of the idle change; ARGV[9] every status, comma-separated;
-- ARGV[10] a dry run's rank to count from (the driver adds batch per call)
-- returns {idled, purged, facts purged, 1 if more work is left}
-- A dry run changes nothing, so it cannot resume where its removals left off: it counts the
-- due entries among ranks [ARGV[10], ARGV[10] + batch) of each index (O(log n + batch)).
local now, dry, batch = tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[6])
local idle_from, statuses = csv_set(ARGV[5]), csv_set(ARGV[9])
local more = 0
local function due(key)
  if dry then
    local from = tonumber(ARGV[10])
    local ranked = redis.call('ZRANGE', key, from, from + batch - 1, 'WITHSCORES')
    local members = {}
    for i = 1, #ranked, 2 do
      if tonumber(ranked[i + 1]) <= now then members[#members + 1] = ranked[i] end
    end
    if #members >= batch then more = 1 end
    return members
  end
  local members = redis.call('ZRANGEBYSCORE', key, '-inf', fmt(now), 'LIMIT', 0, batch)
  if #members >= batch then more = 1 end
  return members
end

-- expired conversations
local purged, orphans = 0, {}
for _, member in ipairs(due(K_EXP)) do
  local id, tenant, contact = string.match(member, '^([^\n]*)\n([^\n]*)\n(.*)$')
  local row = hgetall(kc(id))
  if row == nil or not alive(row.tn, row.exp, nil, now) then
    if row ~= nil then purged = purged + 1 end
    if not dry then
      if row == nil then orphans[id] = true end
      erase(id, tenant, contact, nil, statuses)
    end
  end
end
-- conversations Redis reclaimed before any sweep: found above, or reaped by create
if not dry then
  local reaped = redis.call('ZRANGE', K_ORPH, 0, batch - 1)
  if #reaped >= batch then more = 1 end
  for _, id in ipairs(reaped) do orphans[id] = true end
  if #reaped > 0 then redis.call('ZREM', K_ORPH, unpack(reaped)) end
end
if next(orphans) ~= nil then erase_orphan_events(orphans) end  -- rare: one scan of the log

-- idle conversations
local idle = {}
for _, id in ipairs(due(K_IDLE)) do
  local row = hgetall(kc(id))
  if row ~= nil and idle_from[row.st] and tonumber(row.idl) <= now and alive(row.tn, row.exp, nil, now) then
    idle[#idle + 1] = row
  elseif not dry and (row == nil or not idle_from[row.st] or not alive(row.tn, row.exp, nil, now)) then
    redis.call('ZREM', K_IDLE, id)  -- activity adds it back; expired ones never come back
  end
end
if not dry then
  table.sort(idle, function(a, b)
    if a.cr ~= b.cr then return tonumber(a.cr) < tonumber(b.cr) end
    return a.id < b.id
  end)
  for _, row in ipairs(idle) do
    local old = row.st
    row.st = ARGV[4]
    redis.call('HSET', kc(row.id), 'st', row.st)
    local at = native_at(row)
    redis.call('ZREM', kts(old, row.tn), row.id)
    index(kts(row.st, row.tn), row.act, row.id, at)
    redis.call('ZREM', kxs(old, row.tn), row.id)
    index(kxs(row.st, row.tn), row.exp or '+inf', row.id, at)
    redis.call('ZREM', K_IDLE, row.id)
    emit(ARGV[8], row.tn, row.id, status_data(old, row.st), ARGV[2], ARGV[7])
  end
end

-- when the newest value in a fact's history expires (0: none), from its "source\nhistory" field
local function history_until(meta)
  if not meta then return 0 end
  local _, history = string.match(meta, '^([^\n]*)\n(.*)$')
  local kept = 0
  for _, h in ipairs(cjson.decode(history or '[]')) do
    kept = math.max(kept, tonumber(h.expires_us))
  end
  return kept
end

-- expired facts
local facts = 0
for _, member in ipairs(due(K_FX)) do
  local suffix, key = string.match(member, '^(.*)\n([^\n]*)$')
  local hash = B .. 'f:' .. suffix
  local blob = redis.call('HGET', hash, key)
  local expires = blob and tonumber(string.match(blob, '^%d+ (%d+) '))
  if expires ~= nil and expires <= now then
    -- decide.fact_due: a superseded value's history stays for its own tier's time
    local kept = history_until(redis.call('HGET', hash, key .. '\n'))
    if kept > now then
      if not dry then redis.call('ZADD', K_FX, kept, member) end
      expires = nil
    end
  end
  if expires ~= nil and expires <= now then
    facts = facts + 1
    if not dry then redis.call('HDEL', hash, key, key .. '\n') end
  end
  if not dry and blob == nil then redis.call('ZREM', K_FX, member) end
  if not dry and expires ~= nil and expires <= now then redis.call('ZREM', K_FX, member) end
end
return {#idle, purged, facts, more}
