-- Create a conversation, or with resume return the contact's open one.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] "1" to resume; ARGV[3] open statuses, comma-separated;
-- ARGV[4] events kept; ARGV[5] event kind; ARGV[6] event data (JSON);
-- ARGV[7] every status, comma-separated; ARGV[8] "1" to look for the row of a retried call
-- ("0": a first attempt with an id made for it, which no row has yet); ARGV[9..] the new row
-- as field, value pairs
-- returns {"created"} (made now: the row is the one given), or {"created" (a retried call) |
-- "existing", row as field, value pairs}
local row = {}
for i = 9, #ARGV, 2 do row[ARGV[i]] = ARGV[i + 1] end
reap(tonumber(row.cr), 4, ARGV[7], ARGV[4])
local fresh = true
if ARGV[2] == '1' then
  local found, seen = find_open(row.tn, row.ct, ARGV[3], tonumber(row.cr))
  if found ~= nil then return {'existing', flatten(found)} end
  if seen == 0 then fresh = 'no contact' end  -- the contact's index is empty: no key yet
end
if ARGV[8] == '1' then
  local stored = hgetall(kc(row.id))
  if stored ~= nil then return {'created', flatten(stored)} end  -- a retried call
end
-- its only key so far; emit's new list copies its TTL, known here. The record is written from
-- the pairs as given (one copy of them, no loop over the row).
local at = save(row, nil, nil, {kc(row.id)}, fresh, {unpack(ARGV, 9)})
emit(ARGV[5], row.tn, row.id, ARGV[6], row.act, ARGV[4], nil, at or -1)
return {'created'}
