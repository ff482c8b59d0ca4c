-- A sharded store's read of every tenant's events, for one slot tag: first no later event of
-- the tag may take a number up to ARGV[3] (the highest any tag had given when the read began),
-- then the tag's events after the cursor and up to that number. Every tag thus numbers what it
-- writes after the read above anything the read returned, so a reader going on from the last
-- number it received misses no tag's event (each tag numbers its own log).
-- KEYS[1] event stream
-- ARGV[1] key base; ARGV[2] after: event number (opt; nil: the oldest retained);
-- ARGV[3] up to this number; ARGV[4] limit
-- returns what events.lua returns
local upto = tonumber(ARGV[3])
if tonumber(redis.call('GET', K_EVN) or '0') < upto then redis.call('SET', K_EVN, fmt(upto)) end
return events_after(opt(ARGV[2]), nil, tonumber(ARGV[4]), upto)
