-- Append a batch: one seq range, a replay for each item whose key is stored (or came earlier in
-- the batch), status per on-message table, sliding expiry, one event per new message.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] call token (a resent batch answers as it did); ARGV[6] fence (opt); ARGV[7] events
-- kept; ARGV[8] on-message table "from=to=event kind;..."; ARGV[9] message.appended kind;
-- ARGV[10] caller keys kept; ARGV[11] retry keys kept; then three per item: key (opt), message
-- body, role
-- returns {"ok", {entry, "1" (replayed) | "0", ...}} or {"not_found" | "closed" | "fenced"}
local id, now = ARGV[2], tonumber(ARGV[4])
local row = live(id, opt(ARGV[3]), now)
if row == nil then return {'not_found'} end
local n = (#ARGV - 11) / 3
local token = '\t' .. ARGV[5]
local function item(i) return opt(ARGV[12 + 3 * i]), ARGV[13 + 3 * i], ARGV[14 + 3 * i] end

local done = redis.call('HGET', ki(id), token)
if done then  -- our own resend of a batch that went through: the same answers
  local first = tonumber(row.seq) - tonumber(row.cnt) + 1
  local answers, i = {}, 0
  for part in string.gmatch(done, '[^,]+') do
    local key = item(i)
    local entry
    if part ~= 'r' and tonumber(part) >= first then
      entry = redis.call('LINDEX', km(id), tonumber(part) - first)
    end
    if not entry and key ~= nil then entry = redis.call('HGET', ki(id), key) end
    answers[#answers + 1] = entry or ''
    answers[#answers + 1] = part == 'r' and '1' or '0'
    i = i + 1
  end
  return {'ok', answers}
end

local seq = tonumber(row.seq)
local answers, entries, roles, plan, seen = {}, {}, {}, {}, {}
for i = 0, n - 1 do
  local key, body, role = item(i)
  local stored = nil
  if key ~= nil then stored = seen[key] or redis.call('HGET', ki(id), key) end
  if stored then
    answers[#answers + 1] = stored
    answers[#answers + 1] = '1'
    plan[#plan + 1] = 'r'
  else
    seq = seq + 1
    local entry = fmt(seq) .. ' ' .. body
    entries[#entries + 1] = entry
    roles[#roles + 1] = role
    answers[#answers + 1] = entry
    answers[#answers + 1] = '0'
    plan[#plan + 1] = fmt(seq)
    if key ~= nil then seen[key] = entry end
  end
end
if #entries == 0 then return {'ok', answers} end
local to, to_kind
for from, target, kind in string.gmatch(ARGV[8], '([^=;]+)=([^=;]+)=([^=;]+)') do
  if from == row.st then to, to_kind = target, kind end
end
if to == nil then return {'closed'} end
local fence = opt(ARGV[6])
if fence ~= nil and (row.lt ~= fence or tonumber(row.lu or '0') <= now) then
  return {'fenced'}
end
local count = redis.call('RPUSH', km(id), unpack(entries))
if row.max ~= nil and count > tonumber(row.max) then
  count = trim_whole(id, count, count - tonumber(row.max))
end
for i = 0, n - 1 do
  local key = item(i)
  if key ~= nil and seen[key] ~= nil then
    remember_key(id, key, seen[key], kiq(id), ARGV[10])
    seen[key] = nil
  end
end
remember_key(id, token, table.concat(plan, ','), krq(id), ARGV[11])
local old = row.st
row.st, row.seq, row.cnt = to, fmt(seq), fmt(count)
touch(row, now)
save(row, TOUCHED, old)
for i, entry in ipairs(entries) do
  local data = '{"seq":' .. string.match(entry, '^(%d+)') .. ',"role":' .. json_str(roles[i]) .. '}'
  emit(ARGV[9], row.tn, id, data, row.act, ARGV[7])
end
if to ~= old then emit(to_kind, row.tn, id, status_data(old, to), row.act, ARGV[7]) end
return {'ok', answers}
