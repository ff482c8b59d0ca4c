-- A page of live conversations of a tenant, newest activity first, after a keyset cursor.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] tenant; ARGV[3] now; ARGV[4] status (opt); ARGV[5] stage (opt);
-- ARGV[6] agent (opt); ARGV[7] contact (opt); ARGV[8] limit; ARGV[9] cursor activity (opt);
-- ARGV[10] cursor id (opt)
-- returns {row as field, value pairs...} (at most limit + 1)
-- Read-only (flags=no-writes): entries of reclaimed conversations are skipped here and removed
-- by create's lazy reaping and by sweep.
local tenant, now = ARGV[2], tonumber(ARGV[3])
local status, stage, agent, contact = opt(ARGV[4]), opt(ARGV[5]), opt(ARGV[6]), opt(ARGV[7])
local want = tonumber(ARGV[8]) + 1
local c_act, c_id = opt(ARGV[9]), opt(ARGV[10])
local key = kt(tenant)
if contact ~= nil then key = kct(tenant, contact) elseif status ~= nil then key = kts(status, tenant) end
local out, offset = {}, 0
local top = c_act or '+inf'
while #out < want do
  local batch = redis.call('ZREVRANGEBYSCORE', key, top, '-inf', 'WITHSCORES', 'LIMIT', offset, 200)
  if #batch == 0 then break end
  offset = offset + #batch / 2
  for i = 1, #batch, 2 do
    local id = batch[i]
    if c_act == nil or batch[i + 1] ~= c_act or id < c_id then
      local row = hgetall(kc(id))
      if row ~= nil and not is_expired(row, now) and row.tn == tenant
          and (status == nil or row.st == status) and (stage == nil or row.sg == stage)
          and (agent == nil or row.ag == agent) and (contact == nil or row.ct == contact) then
        out[#out + 1] = flatten(row)
        if #out >= want then break end
      end
    end
  end
end
return out
