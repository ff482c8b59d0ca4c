-- Rewrite stored values in place (a key rotation), each only while it holds what was read:
-- no event, no activity, and no key's expiry changes.
-- KEYS[1] event stream (routing)
-- ARGV[1] key base; ARGV[2] "messages", "keys", "states" or "facts"; then
--   messages: ARGV[3] conversation id; triples (old "seq body", new "seq body", caller key or "")
--   keys: ARGV[3] conversation id; triples (caller key, old "seq body", new "seq body")
--   states: ARGV[3] conversation id; triples (version, old "saved value", new "saved value")
--   facts: ARGV[3] tenant; ARGV[4] contact; quintuples (key, old blob, new blob,
--     old "source\nhistory", new "source\nhistory")
-- returns how many values were rewritten
local what, done = ARGV[2], 0
if what == 'messages' then
  local id = ARGV[3]
  -- seqs in the list are gap-free, so an entry can only be at its seq less the first one's
  local first = redis.call('LINDEX', km(id), 0)
  local base = first and tonumber(string.match(first, '^(%d+) '))
  for i = 4, #ARGV, 3 do
    local old, new, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local at = base and tonumber(string.match(old, '^(%d+) ')) - base
    if at and (at < 0 or redis.call('LINDEX', km(id), at) ~= old) then at = nil end
    if at then
      redis.call('LSET', km(id), at, new)
      if key ~= '' and redis.call('HGET', ki(id), key) == old then
        redis.call('HSET', ki(id), key, new)
      end
      done = done + 1
    end
  end
elseif what == 'keys' or what == 'states' then
  local hash = what == 'keys' and ki(ARGV[3]) or ks(ARGV[3])
  for i = 4, #ARGV, 3 do
    if redis.call('HGET', hash, ARGV[i]) == ARGV[i + 1] then
      redis.call('HSET', hash, ARGV[i], ARGV[i + 2])
      done = done + 1
    end
  end
else
  local hash = kf(ARGV[3], ARGV[4])
  for i = 5, #ARGV, 5 do
    local key = ARGV[i]
    if redis.call('HGET', hash, key) == ARGV[i + 1]
        and (redis.call('HGET', hash, key .. '\n') or 'null\n[]') == ARGV[i + 3] then
      redis.call('HSET', hash, key, ARGV[i + 2], key .. '\n', ARGV[i + 4])
      done = done + 1
    end
  end
end
return done
