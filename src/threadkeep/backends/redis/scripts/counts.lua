-- Count a tenant's live conversations by status and by stage: one ZCOUNT per status and per
-- stage the tenant has used, over indexes scored by expiry, so the cost does not grow with the
-- number of conversations. Read-only (flags=no-writes).
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] tenant; ARGV[3] now; ARGV[4] every status, comma-separated
-- returns {{status, count...}, {stage, count...}} (zero counts left out)
local tenant, live = ARGV[2], '(' .. ARGV[3]
local by_status, by_stage = {}, {}
for status in string.gmatch(ARGV[4], '[^,]+') do
  local n = redis.call('ZCOUNT', kxs(status, tenant), live, '+inf')
  if n > 0 then by_status[#by_status + 1] = status; by_status[#by_status + 1] = n end
end
for _, stage in ipairs(redis.call('SMEMBERS', kgs(tenant))) do
  local n = redis.call('ZCOUNT', kxg(tenant, stage), live, '+inf')
  if n > 0 then by_stage[#by_stage + 1] = stage; by_stage[#by_stage + 1] = n end
end
return {by_status, by_stage}
