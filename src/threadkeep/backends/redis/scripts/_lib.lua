-- Shared helpers, prepended to every script of this directory when it is loaded.
--
-- KEYS[1]  the event stream of the key base below: it only routes the call to the right node.
-- ARGV[1]  the key base: "prefix{prefix}:" (every key of the store shares the hash tag {prefix}),
--          or in the sharded layout "prefix{prefix:tag}:" (every key of the tenants of one slot
--          tag has the hash tag {prefix:tag}, see _shards.py; the names below are then that
--          tag's: its indexes, its event log and counters). Either way every name built below
--          is in KEYS[1]'s slot.
-- Times are integer microseconds since the epoch, passed and stored as decimal strings.
-- Optional arguments are "" for nil and "+value" for a value (see _codec.opt).
-- The legend of the keys built below is the table in _keys.py (one Python method per builder,
-- checked against this file by a test); the legend of the conversation hash's fields is
-- _codec.FIELDS.

local B = ARGV[1]

local function kc(id) return B .. 'c:' .. id end    -- conversation hash
local function km(id) return B .. 'm:' .. id end    -- message list: "seq body"
local function ki(id) return B .. 'i:' .. id end    -- idempotency hash: key -> "seq body"
local function kiq(id) return B .. 'iq:' .. id end  -- caller idempotency keys, oldest first
local function krq(id) return B .. 'rq:' .. id end  -- internal retry keys, oldest first
local function ks(id) return B .. 's:' .. id end    -- state versions: version -> "saved value"
local function ke(id) return B .. 'e:' .. id end    -- ids of the conversation's retained events
local function kt(tenant) return B .. 't:' .. tenant end
local function kts(status, tenant) return B .. 'ts:' .. status .. ':' .. tenant end
local function kct(tenant, contact) return B .. 'k:' .. #tenant .. ':' .. tenant .. ':' .. contact end
local function kf(tenant, contact) return B .. 'f:' .. #tenant .. ':' .. tenant .. ':' .. contact end
-- counting indexes: conversations of a tenant by status / by stage, scored by expires_us ('+inf':
-- never), so counts() is a ZCOUNT of the unexpired ones; and the set of stages a tenant has used
local function kxs(status, tenant) return B .. 'xs:' .. status .. ':' .. tenant end
local function kxg(tenant, stage) return B .. 'xg:' .. #tenant .. ':' .. tenant .. ':' .. stage end
local function kgs(tenant) return B .. 'gs:' .. tenant end
local K_EXP = B .. 'exp'    -- zset "id\ntenant\ncontact" by expires_us (sweep)
local K_IDLE = B .. 'idle'  -- zset id by idle_us (sweep)
local K_FX = B .. 'fx'      -- zset "tenant-length:tenant:contact\nkey" by fact expires_us
local K_ORPH = B .. 'orph'  -- zset of reaped conversation ids whose events sweep() erases
local K_EV = B .. 'ev'      -- event stream, ids "n-0"
local K_EVN = B .. 'evn'    -- last event number
local K_EVT = B .. 'evt'    -- events numbered up to this fell out of the bounded log

local GRACE_MS = 3600000    -- native expiry runs this long after the logical one

local function fmt(n) return string.format('%d', n) end

local function opt(s)
  if s == nil or s == '' then return nil end
  return string.sub(s, 2)
end

local function csv_set(s)
  local set = {}
  for item in string.gmatch(s, '[^,]+') do set[item] = true end
  return set
end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local row = {}
  for i = 1, #flat, 2 do row[flat[i]] = flat[i + 1] end
  return row
end

local function flatten(row)
  local flat = {}
  for k, v in pairs(row) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  return flat
end

-- The liveness rule, its one copy (every script that checks a conversation calls it): the
-- record exists (its tenant `tn` is set), is `tenant`'s (nil: any tenant's) and its expiry `exp`
-- (none: never) is after `now`. The two fields come as the script read them, a row's nil or an
-- HMGET's false for a missing one, so each script reads them with the one command it needs.
local function alive(tn, exp, tenant, now)
  if not tn or (tenant ~= nil and tn ~= tenant) then return false end
  return not exp or tonumber(exp) > now
end

-- The conversation if it exists, is not expired and belongs to tenant (nil: any tenant).
local function live(id, tenant, now)
  local row = hgetall(kc(id))
  if row == nil or not alive(row.tn, row.exp, tenant, now) then return nil end
  return row
end

local function exp_member(row) return row.id .. '\n' .. row.tn .. '\n' .. row.ct end

-- When Redis may reclaim a conversation's keys (ms since the epoch; nil: never). It is for memory
-- only: never before the logical expiry nor before "real now + ttl", plus a grace period, as
-- logical expiry is enforced on every read with the store's clock. `real_ms`: the server's
-- clock when the caller knows it (see save), else it is read (TIME).
local function native_at(row, real_ms)
  if row.ttl == nil then return nil end
  if real_ms == nil then
    local t = redis.call('TIME')
    real_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return math.max(math.floor(tonumber(row.exp) / 1000), real_ms + math.floor(tonumber(row.ttl) / 1000)) + GRACE_MS
end

-- Native TTL on every key of the conversation, renewed on each activity.
local function native_expiry(row, at)
  local keys = {kc(row.id), km(row.id), ki(row.id), kiq(row.id), krq(row.id), ks(row.id), ke(row.id)}
  if at == nil then
    for _, key in ipairs(keys) do redis.call('PERSIST', key) end
    return
  end
  at = fmt(at)
  for _, key in ipairs(keys) do redis.call('PEXPIREAT', key, at) end
end

-- The renewal of an append or a state save, which create no key but those listed in `written`:
-- while the record's own native expiry is still at least `at` less half the grace period (so
-- Redis reclaims the keys between half the grace period and all of it after the logical expiry),
-- only `written` get one, the record's own: no key outlives the record, so a conversation made
-- again with the same id (an import) never starts on top of keys of the one Redis reclaimed.
-- Else every key is renewed (as after any other change, or when something shortened the
-- record's TTL).
local RENEW_MS = GRACE_MS / 2
local function native_expiry_of(row, at, written, fresh, current)
  -- `current`: the record's PEXPIRETIME when the caller read it (-1: no TTL)
  current = fresh and -3 or current or redis.call('PEXPIRETIME', kc(row.id))
  if fresh then  -- a new conversation: `written` are all the keys it has
    if at ~= nil then
      at = fmt(at)
      for _, key in ipairs(written) do redis.call('PEXPIREAT', key, at) end
    end
    return
  elseif at == nil then
    if current == -1 then return end  -- kept forever: so is every key, new ones included
  elseif current >= at - RENEW_MS then
    for _, key in ipairs(written) do redis.call('PEXPIREAT', key, current) end
    return
  end
  native_expiry(row, at)
end

-- Add a member to a per-tenant or per-contact index, whose own TTL always outlasts every member
-- conversation (a day of slack, renewed when less than half of it is left, so about twice a
-- day), or is none while it holds a conversation without ttl. A dead tenant's or contact's
-- indexes thus vanish by themselves. `current`: the key's PEXPIRETIME when the caller knows it
-- (-2: it saw the index empty, so there is no key), else it is read.
local INDEX_SLACK_MS = 86400000
local function index(key, score, member, at, current)
  current = current or redis.call('PEXPIRETIME', key)  -- -2: no key, -1: no TTL
  if score == nil then
    redis.call('SADD', key, member)  -- a set, not a sorted set
  else
    redis.call('ZADD', key, score, member)
  end
  if at == nil then
    if current >= 0 then redis.call('PERSIST', key) end
  elseif current == -2 or (current >= 0 and current < at + INDEX_SLACK_MS / 2) then
    redis.call('PEXPIREAT', key, fmt(at + INDEX_SLACK_MS))
  end
end

-- What the record's 'ix' field says after index() ran on all of its indexes: they last at least
-- until `at` plus half the slack ('none': they have no TTL), for its status and stage. Until
-- then, an append or a state save of the same status and stage only adds its index entries
-- (the conversation is a member of each of those indexes, so none of them was emptied and
-- made anew without TTL; index() only ever lengthens a TTL or removes it).
local function index_mark(row, at)
  local upto = at == nil and 'none' or fmt(at + INDEX_SLACK_MS / 2)
  return upto .. '\n' .. row.st .. '\n' .. (row.sg or '')
end

local function indexes_known(row, at)
  if row.ix == nil then return false end
  local upto, rest = string.match(row.ix, '^([^\n]*)\n(.*)$')
  if rest ~= row.st .. '\n' .. (row.sg or '') then return false end
  if at == nil then return upto == 'none' end
  return upto ~= 'none' and at <= tonumber(upto)
end

-- Activity: sliding expiry and idle time renewed (fields only; save with save_touch).
-- `now_text`: now as the caller was given it (its decimal text), which saves formatting it.
local function touch(row, now, now_text)
  row.act = now_text or fmt(now)
  if row.ttl ~= nil then row.exp = fmt(now + tonumber(row.ttl)) end
  row.idl = fmt(now + tonumber(row.ia))
end

-- Write the given fields of row, refresh its index entries and native TTLs. `written`: the
-- call is an append or a state save that may have created only these keys of the conversation
-- (see native_expiry_of and indexes_known); nil: any change. `fresh`: the conversation is new
-- and `written` are all its keys ('no contact': and its contact has no index yet, the caller
-- saw it empty). `args`: instead of `fields`, the field, value pairs to write as HSET takes
-- them, when the caller has them (none nil: nothing is deleted). Returns the keys' native
-- expiry (native_at).
local function save(row, fields, old_status, written, fresh, args)
  local at, current
  if written ~= nil and not fresh and row.ttl ~= nil then
    -- an append or a state save reads its record's native expiry anyway (native_expiry_of);
    -- with what is left of it (PTTL, an integer) that tells the server's clock, so the common
    -- path needs no TIME (an array of two decimals to parse)
    current = redis.call('PEXPIRETIME', kc(row.id))
    if current > 0 then at = native_at(row, current - redis.call('PTTL', kc(row.id))) end
  end
  if at == nil then at = native_at(row) end
  local known = written ~= nil and old_status == row.st and indexes_known(row, at)
  local add = known and function(key, score, member)
    if score == nil then redis.call('SADD', key, member) else redis.call('ZADD', key, score, member) end
  end or function(key, score, member) index(key, score, member, at) end
  if args == nil then
    args = {}
    for _, f in ipairs(fields) do
      if row[f] == nil then
        redis.call('HDEL', kc(row.id), f)
      else
        args[#args + 1] = f
        args[#args + 1] = row[f]
      end
    end
  end
  if not known then
    row.ix = index_mark(row, at)
    args[#args + 1] = 'ix'
    args[#args + 1] = row.ix
  end
  if #args > 0 then redis.call('HSET', kc(row.id), unpack(args)) end
  add(kt(row.tn), row.act, row.id)
  if old_status ~= nil and old_status ~= row.st then
    redis.call('ZREM', kts(old_status, row.tn), row.id)
  end
  add(kts(row.st, row.tn), row.act, row.id)
  if fresh == 'no contact' then
    index(kct(row.tn, row.ct), row.act, row.id, at, -2)
  else
    add(kct(row.tn, row.ct), row.act, row.id)
  end
  local until_us = row.exp or '+inf'
  if old_status ~= nil and old_status ~= row.st then
    redis.call('ZREM', kxs(old_status, row.tn), row.id)
  end
  add(kxs(row.st, row.tn), until_us, row.id)
  if row.sg ~= nil then
    add(kxg(row.tn, row.sg), until_us, row.id)
    add(kgs(row.tn), nil, row.sg)
  end
  if row.exp ~= nil then redis.call('ZADD', K_EXP, row.exp, exp_member(row)) end
  redis.call('ZADD', K_IDLE, row.idl, row.id)
  if written == nil then
    native_expiry(row, at)
  else
    native_expiry_of(row, at, written, fresh, current)
  end
  return at
end

local TOUCHED = {'st', 'sg', 'act', 'exp', 'idl', 'cnt', 'seq', 'sv'}

-- Append one event; the log keeps events numbered above (last - keep): XADD trims it in the same
-- command (MINID ~, i.e. whole stream nodes, like MAXLEN ~). Trimming by id rather than by
-- length keeps the floor exact although erasures XDEL events: a cursor below the floor is
-- CursorExpired, one above it is served in full. Unless untracked (the erasure events of a
-- deleted conversation), the event's id is also pushed on the conversation's own list, so
-- erasing it deletes its events without scanning the log; that list keeps at most `keep` ids
-- (older ones are below the floor anyway) and expires with the conversation. Once the log is
-- full the floor moves with every event: one SET ... GET moves it and says where it was (put
-- back in the rare case it was higher: a store with a smaller `keep` moved it; the floor never
-- goes down). `record_ms`: the record's native expiry when the caller just set it (-1: none),
-- which a new list copies; nil: it is read.
local function emit(kind, tenant, conv, data, at, keep, untracked, record_ms)
  local n = redis.call('INCR', K_EVN)
  local id = fmt(n) .. '-0'
  keep = tonumber(keep)
  local floor = n - keep
  local floor_text = floor > 0 and fmt(floor)
  local was = floor_text and tonumber(redis.call('SET', K_EVT, floor_text, 'GET') or '0')
  if was and was < floor then
    -- MINID drops the ids below "floor-1": the events numbered up to the floor (ids "n-0")
    redis.call('XADD', K_EV, 'MINID', '~', floor_text .. '-1', id,
      'k', kind, 't', tenant, 'c', conv, 'd', data, 'a', at)
  else
    if was and was > floor then redis.call('SET', K_EVT, fmt(was)) end
    redis.call('XADD', K_EV, id, 'k', kind, 't', tenant, 'c', conv, 'd', data, 'a', at)
  end
  if untracked then return end
  local length = redis.call('RPUSH', ke(conv), id)
  if length == 1 then  -- a new list: it expires with the conversation's record
    local at_ms = record_ms or redis.call('PEXPIRETIME', kc(conv))
    if at_ms > 0 then redis.call('PEXPIREAT', ke(conv), at_ms) end
  elseif length > keep then  -- from the start (keep 0 would be -0: not an integer to Redis)
    redis.call('LTRIM', ke(conv), length - keep, -1)
  end
end

-- A stored message entry is "seq role\ncreated[:link]\n[+key]\nmetadata[\n[+payload]]\ncontent"
-- (see _codec.encode_message); entries written before payloads carry no link (read as 0).
local function entry_link(entry)
  return tonumber(string.match(entry, '^%d+ [^\n]*\n%d+:(%d+)\n') or '0')
end

local function entry_key(entry)
  return string.match(entry, '^%d+ [^\n]*\n[^\n]*\n%+([^\n]*)\n')
end

local function entry_role(entry)
  return string.match(entry, '^%d+ ([^\n]*)\n')
end

-- max_messages trimming of a list of `count` entries to whole exchanges: keep from the first
-- entry at or after index `first` that answers no earlier call (link bit 1) and does not follow
-- one leaving a call open (bit 2), as _rules.history.trim_start; keep all when none may start.
-- Returns how many are kept.
local function trim_whole(id, count, first)
  local offset = first - 1
  local entries = redis.call('LRANGE', km(id), offset, -1)
  for i = first, count - 1 do
    local entry, prev = entries[i - offset + 1], entries[i - offset]
    if bit.band(entry_link(entry), 1) == 0 and bit.band(entry_link(prev), 2) == 0 then
      redis.call('LTRIM', km(id), i, -1)
      return count - i
    end
  end
  return count
end

-- Remember field -> value in the idempotency hash, bounded by a queue of its newest fields: at
-- most `kept`; with `batch`, past `kept` the oldest are forgotten `batch` at a time (two
-- commands every `batch` calls, not every call), so between kept - batch + 1 and kept are kept.
-- Returns whether the queue is new (the hash may be too). `value` nil: the caller already put the
-- field in the hash (append: HSETNX).
local function remember_key(id, field, value, queue, kept, batch)
  if value ~= nil then redis.call('HSET', ki(id), field, value) end
  local length = redis.call('RPUSH', queue, field)
  local over = length - tonumber(kept)
  if over > 0 then
    local n = math.max(over, math.min(batch or 1, length - 1))
    local gone = redis.call('LPOP', queue, n)
    redis.call('HDEL', ki(id), unpack(gone))
  end
  return length == 1
end

-- Forget the caller keys of removed entries (trimmed ones, still in the hash, keep replaying).
local function forget_keys(id, entries)
  for _, entry in ipairs(entries) do
    local key = entry_key(entry)
    if key ~= nil and redis.call('HGET', ki(id), key) == entry then
      redis.call('HDEL', ki(id), key)
    end
  end
end

local function json_str(s)
  if s == nil then return 'null' end
  return cjson.encode(s)
end

local function status_data(old, new)
  return '{"from":' .. json_str(old) .. ',"to":' .. json_str(new) .. '}'
end

-- Up to `limit` events numbered above `after` (nil: the oldest retained) and at most `upto`
-- (nil: no bound), of `tenant` (nil: any): {"ok", last event id, {id, kind, tenant,
-- conversation, data, at}...}, or {"expired"} when `after` fell out of the log.
local function events_after(after, tenant, limit, upto)
  local floor = tonumber(redis.call('GET', K_EVT) or '0')
  if after == nil then
    after = floor
  elseif tonumber(after) < floor then
    return {'expired'}
  else
    after = tonumber(after)
  end
  local last = tonumber(redis.call('GET', K_EVN) or '0')
  local out = {'ok', fmt(last) .. '-0'}
  local stop = '+'
  if upto ~= nil then
    if upto < last then last = upto end
    stop = fmt(last) .. '-0'
  end
  if after >= last then return out end  -- nothing after it yet (and no id past 2^63 to format)
  local start = fmt(after + 1) .. '-0'
  while #out - 2 < limit do
    local batch = redis.call('XRANGE', K_EV, start, stop, 'COUNT', math.max(limit, 100))
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      local f = {}
      for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
      if tenant == nil or f.t == tenant then
        out[#out + 1] = {entry[1], f.k, f.t, f.c, f.d, f.a}
        if #out - 2 >= limit then break end
      end
    end
    start = '(' .. batch[#batch][1]
  end
  return out
end

-- Remove the retained events of conversations whose id lists are gone with the rest of their
-- keys (Redis reclaimed them before sweep() came): ids is a set; this scans the log once.
local function erase_orphan_events(ids)
  local floor = tonumber(redis.call('GET', K_EVT) or '0')
  local start = fmt(floor + 1) .. '-0'
  while true do
    local batch = redis.call('XRANGE', K_EV, start, '+', 'COUNT', 1000)
    if #batch == 0 then return end
    local doomed = {}
    for _, entry in ipairs(batch) do
      local f = entry[2]
      for i = 1, #f, 2 do
        if f[i] == 'c' and ids[f[i + 1]] then doomed[#doomed + 1] = entry[1] end
      end
    end
    if #doomed > 0 then redis.call('XDEL', K_EV, unpack(doomed)) end
    if #batch < 1000 then return end
    start = '(' .. batch[#batch][1]
  end
end

-- Remove every key, index entry and retained event of a conversation.
local function erase(id, tenant, contact, status, statuses)
  local events = redis.call('LRANGE', ke(id), 0, -1)
  for i = 1, #events, 1000 do
    redis.call('XDEL', K_EV, unpack(events, i, math.min(i + 999, #events)))
  end
  -- UNLINK: gone from the keyspace now, a long history's memory freed off the script's time
  redis.call('UNLINK', kc(id), km(id), ki(id), kiq(id), krq(id), ks(id), ke(id))
  redis.call('ZREM', kt(tenant), id)
  if status ~= nil then
    redis.call('ZREM', kts(status, tenant), id)
    redis.call('ZREM', kxs(status, tenant), id)
  end
  if statuses ~= nil then
    for s in pairs(statuses) do
      redis.call('ZREM', kts(s, tenant), id)
      redis.call('ZREM', kxs(s, tenant), id)
    end
  end
  for _, stage in ipairs(redis.call('SMEMBERS', kgs(tenant))) do  -- a tenant uses few stages
    redis.call('ZREM', kxg(tenant, stage), id)
  end
  redis.call('ZREM', kct(tenant, contact), id)
  redis.call('ZREM', K_EXP, id .. '\n' .. tenant .. '\n' .. contact)
  redis.call('ZREM', K_IDLE, id)
end

-- The contact's open, live conversation with the newest activity, or nil; and how many
-- conversations its index held (0: there is no index key). `open`: the open statuses,
-- comma-separated (made a set only when the contact has a conversation).
local function find_open(tenant, contact, open, now)
  local key = kct(tenant, contact)
  local ids = redis.call('ZREVRANGE', key, 0, -1)
  if #ids > 0 then open = csv_set(open) end
  for _, id in ipairs(ids) do
    local row = hgetall(kc(id))  -- nil: reclaimed by Redis, skipped (reads write nothing)
    if row ~= nil and alive(row.tn, row.exp, nil, now) and open[row.st] then
      return row, #ids
    end
  end
  return nil, #ids
end

-- Lazy cleaning: drop the index entries of up to n conversations whose keys Redis already
-- reclaimed (expired longer than the grace period ago), so the store-wide indexes stay
-- proportional to live data even where sweep() never runs. Counts nothing: the conversations
-- were gone already. `statuses`: every status, comma-separated (made a set only when one is
-- due).
local function reap(now, n, statuses, kept)
  local due = redis.call('ZRANGEBYSCORE', K_EXP, '-inf', fmt(now - GRACE_MS * 1000), 'LIMIT', 0, n)
  if #due > 0 then statuses = csv_set(statuses) end
  for _, member in ipairs(due) do
    local id, tenant, contact = string.match(member, '^([^\n]*)\n([^\n]*)\n(.*)$')
    if redis.call('EXISTS', kc(id)) == 0 then
      erase(id, tenant, contact, nil, statuses)
      -- its events need a scan of the log: left to sweep(), which reads this set (the newest
      -- `kept` ids at most: older ones' events have been trimmed from the log by now)
      redis.call('ZADD', K_ORPH, now, id)
      redis.call('ZREMRANGEBYRANK', K_ORPH, 0, -tonumber(kept) - 1)
    end
  end
end
