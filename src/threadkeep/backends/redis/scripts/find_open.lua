-- The contact's open, live conversation with the newest activity.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] tenant; ARGV[3] contact; ARGV[4] open statuses, comma-separated;
-- ARGV[5] now
-- returns the row as field, value pairs, or {} when there is none
local row = find_open(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
if row == nil then return {} end
return flatten(row)
