-- Count a tenant's live conversations by status and by stage.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] tenant; ARGV[3] now
-- returns {{status, count...}, {stage, count...}}
local tenant, now = ARGV[2], tonumber(ARGV[3])
local by_status, by_stage = {}, {}
local ids = redis.call('ZRANGE', kt(tenant), 0, -1)
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', kc(id), 'tn', 'st', 'sg', 'exp')
  if f[1] == tenant and (not f[4] or tonumber(f[4]) > now) then
    by_status[f[2]] = (by_status[f[2]] or 0) + 1
    if f[3] then by_stage[f[3]] = (by_stage[f[3]] or 0) + 1 end
  end
end
local function pairs_of(t)
  local flat = {}
  for k, v in pairs(t) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  return flat
end
return {pairs_of(by_status), pairs_of(by_stage)}
