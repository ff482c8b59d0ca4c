-- A page of live conversations of a tenant, newest activity first, after a keyset cursor,
-- examining at most a budget of index entries per call (a filter that matches little resumes
-- in the next call instead of walking the whole tenant inside one script).
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] tenant; ARGV[3] now; ARGV[4] status (opt); ARGV[5] stage (opt);
-- ARGV[6] agent (opt); ARGV[7] contact (opt); ARGV[8] limit; ARGV[9] cursor activity (opt);
-- ARGV[10] cursor id (opt); ARGV[11] scan activity (opt); ARGV[12] scan id (opt): the last
-- entry the previous call examined; ARGV[13] most index entries to examine
-- returns {{row as field, value pairs...} (at most limit + 1), {} when done or
-- {activity, id} of the last entry examined when the budget ran out first}
-- Read-only (flags=no-writes): entries of reclaimed conversations are skipped here and removed
-- by create's lazy reaping and by sweep.
local tenant, now = ARGV[2], tonumber(ARGV[3])
local status, stage, agent, contact = opt(ARGV[4]), opt(ARGV[5]), opt(ARGV[6]), opt(ARGV[7])
local want = tonumber(ARGV[8]) + 1
local c_act, c_id = opt(ARGV[9]), opt(ARGV[10])
local s_act, s_id = opt(ARGV[11]), opt(ARGV[12])
local budget = tonumber(ARGV[13])
local key = kt(tenant)
if contact ~= nil then key = kct(tenant, contact) elseif status ~= nil then key = kts(status, tenant) end

-- where to start: just after the scan point (or the cursor), by rank when that entry still
-- holds that score (O(log n)), else by score, skipping the entries not after it
local p_act, p_id = s_act or c_act, s_id or c_id
local rank = nil
if p_act == nil then
  rank = 0
else
  local score = redis.call('ZSCORE', key, p_id)
  if score and tonumber(score) == tonumber(p_act) then rank = redis.call('ZREVRANK', key, p_id) + 1 end
end
local function after(score, id, act, at_id)
  return act == nil or tonumber(score) ~= tonumber(act) or id < at_id
end

local out, offset, examined, last = {}, 0, 0, nil
while #out < want and examined < budget do
  local n = math.min(200, budget - examined)
  local batch
  if rank ~= nil then
    batch = redis.call('ZREVRANGE', key, rank + offset, rank + offset + n - 1, 'WITHSCORES')
  else
    batch = redis.call('ZREVRANGEBYSCORE', key, p_act, '-inf', 'WITHSCORES', 'LIMIT', offset, n)
  end
  if #batch == 0 then last = nil break end
  offset = offset + #batch / 2
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    examined = examined + 1
    last = {score, id}
    if after(score, id, c_act, c_id) and after(score, id, p_act, p_id) then
      local row = hgetall(kc(id))
      if row ~= nil and alive(row.tn, row.exp, tenant, now)
          and (status == nil or row.st == status) and (stage == nil or row.sg == stage)
          and (agent == nil or row.ag == agent) and (contact == nil or row.ct == contact) then
        out[#out + 1] = flatten(row)
        if #out >= want then break end
      end
    end
  end
  if #batch < 2 * n then last = nil break end  -- the index ends here
end
if #out >= want or last == nil then return {out, {}} end
return {out, last}
