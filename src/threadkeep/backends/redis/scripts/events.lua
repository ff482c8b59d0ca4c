-- Read events after a cursor, optionally of one tenant.
-- KEYS[1] event stream
-- ARGV[1] key base; ARGV[2] after: event number (opt; nil: the oldest retained); ARGV[3] tenant (opt);
-- ARGV[4] limit
-- returns {"expired"} when the cursor fell out of the log, else
-- {"ok", last event id, {id, kind, tenant, conversation, data, at}...}
return events_after(opt(ARGV[2]), opt(ARGV[3]), tonumber(ARGV[4]), nil)
