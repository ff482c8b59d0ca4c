-- Read messages of a live conversation.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] conversation id; ARGV[3] tenant (opt); ARGV[4] now;
-- ARGV[5] "window" | "last" | "after"; ARGV[6] how many (last); ARGV[7] after seq; ARGV[8] limit
-- returns {"ok", "seq body"...} oldest first, or {"not_found"}
local id = ARGV[2]
local row = live(id, opt(ARGV[3]), tonumber(ARGV[4]))
if row == nil then return {'not_found'} end
local mode, out = ARGV[5], nil
if mode == 'after' then
  local limit = tonumber(ARGV[8])
  if limit <= 0 then return {'ok'} end
  local first = tonumber(row.seq) - tonumber(row.cnt) + 1
  local start = math.max(0, tonumber(ARGV[7]) - first + 1)
  out = redis.call('LRANGE', km(id), start, start + limit - 1)
else
  local last = tonumber(ARGV[6])
  if mode == 'window' then last = tonumber(row.win) end
  if last == 0 then
    out = redis.call('LRANGE', km(id), 0, -1)
  else
    out = redis.call('LRANGE', km(id), -last, -1)
  end
end
table.insert(out, 1, 'ok')
return out
