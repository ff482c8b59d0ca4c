-- Read events after a cursor, optionally of one tenant.
-- KEYS[1] event stream
-- ARGV[1] key base; ARGV[2] after: event number (opt; nil: the oldest retained); ARGV[3] tenant (opt);
-- ARGV[4] limit
-- returns {"expired"} when the cursor fell out of the log, else
-- {"ok", last event id, {id, kind, tenant, conversation, data, at}...}
local after, tenant, limit = opt(ARGV[2]), opt(ARGV[3]), tonumber(ARGV[4])
local floor = tonumber(redis.call('GET', K_EVT) or '0')
if after == nil then
  after = floor
elseif tonumber(after) < floor then
  return {'expired'}
else
  after = tonumber(after)
end
local last = tonumber(redis.call('GET', K_EVN) or '0')
local out = {'ok', fmt(last) .. '-0'}
if after >= last then return out end  -- nothing after it yet (and no id past 2^63 to format)
local start = fmt(after + 1) .. '-0'
while #out - 2 < limit do
  local batch = redis.call('XRANGE', K_EV, start, '+', 'COUNT', math.max(limit, 100))
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local f = {}
    for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
    if tenant == nil or f.t == tenant then
      out[#out + 1] = {entry[1], f.k, f.t, f.c, f.d, f.a}
      if #out - 2 >= limit then break end
    end
  end
  start = '(' .. batch[#batch][1]
end
return out
