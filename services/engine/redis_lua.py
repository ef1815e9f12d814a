"""The Redis engine's key layout (RoomKeys) and its server-side scripts: every
multi-key change is one Lua call.

A script runs atomically in Redis, so whatever processes call them concurrently,
each room keeps one total order with gapless offsets (INCR and XADD in one step),
a repeated ``request_id`` stores nothing new, and the epoch changes exactly once
when Redis is found to have lost the history (the stream, the offset counter or the epoch),
the new epoch announced on the room's channel (as is a room's creation, and its deletion).

Room keys (``R`` = ``<prefix>room:{<id>}:``): ``Rinfo`` (a hash), ``Repoch``,
``Roffset`` (the last offset handed out), ``Rstream`` (entry id ``<offset>-0``,
fields ``k`` kind p/e/d, ``e`` epoch, ``t`` time ns, ``i`` message id, ``m`` message
JSON, ``o`` the message's own offset), ``Rmessages`` (message id → ``"<offset>
<json>"``, current state), ``Rreq:<epoch>:<request_id>`` (idempotency, with a TTL),
``Rjoined`` (user → join time ns), ``Rinstances`` (zset instance → lease expiry ms),
``Rinst:<instance>`` (user → connection count on that instance). ``<prefix>rooms``
is the id index (a zset, all scores 0, read by lex range). Times come from the
caller as ARGV (the caller's clock; instances are expected to be NTP-synced).
"""

from __future__ import annotations

from dataclasses import dataclass

# KEYS[1..8] of every room script: info, epoch, offset, stream, messages, joined,
# instances, and the pub/sub channel (a channel, not a key; passed for clarity).
_PRELUDE = r"""
local info, epoch_key, offset_key, stream, messages = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel = KEYS[8]

local function field(entry, name)
  local f = entry[2]
  for j = 1, #f, 2 do
    if f[j] == name then return f[j + 1] end
  end
  return nil
end

local function entry_offset(entry)
  return tonumber(string.match(entry[1], '^(%d+)-'))
end

local function forget(entry)
  if field(entry, 'k') == 'p' then
    redis.call('HDEL', messages, field(entry, 'i'))
  end
end

-- The room's epoch and last offset (nil when the room does not exist). A fresh epoch, announced
-- on the channel, when Redis lost the history: the epoch or the offset counter is gone (a room
-- always has both), or the counter says events were stored but the stream is gone.
local function ensure(fresh)
  if redis.call('EXISTS', info) == 0 then return nil, 0 end
  local epoch = redis.call('GET', epoch_key)
  local counted = redis.call('GET', offset_key)
  local last = tonumber(counted or '0')
  if (not epoch) or (not counted) or (last > 0 and redis.call('EXISTS', stream) == 0) then
    redis.call('SET', epoch_key, fresh)
    redis.call('SET', offset_key, '0')
    redis.call('DEL', stream, messages)
    redis.call('PUBLISH', channel, '{"k":"epoch","e":"' .. fresh .. '"}')
    return fresh, 0
  end
  return epoch, last
end

-- Drop entries beyond max_events, then those older than horizon (ns).
local function trim(max_events, horizon)
  local excess = redis.call('XLEN', stream) - max_events
  if excess > 0 then
    local gone = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
    for _, entry in ipairs(gone) do forget(entry) end
    redis.call('XTRIM', stream, 'MINID', (entry_offset(gone[#gone]) + 1) .. '-0')
  end
  while true do
    local batch = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    local cut, young = nil, false
    for _, entry in ipairs(batch) do
      if tonumber(field(entry, 't')) >= horizon then young = true; break end
      forget(entry)
      cut = entry
    end
    if cut then redis.call('XTRIM', stream, 'MINID', (entry_offset(cut) + 1) .. '-0') end
    if young or #batch < 64 then return end
  end
end

local function first_offset()
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #head == 0 then return 0 end
  return entry_offset(head[1])
end

local function append(epoch, kind, time_ns, message_id, json, message_offset)
  local offset = redis.call('INCR', offset_key)
  local id = offset .. '-0'
  if json then
    redis.call('XADD', stream, id, 'k', kind, 'e', epoch, 't', time_ns, 'i', message_id,
      'm', json, 'o', message_offset or offset)
  else
    redis.call('XADD', stream, id, 'k', kind, 'e', epoch, 't', time_ns, 'i', message_id)
  end
  return offset
end
"""

STATE = (
    _PRELUDE
    + r"""
-- ARGV: fresh epoch, max events, horizon ns.
-- Returns {epoch, last, first, info fields...} or {} when the room does not exist.
local epoch, last = ensure(ARGV[1])
if not epoch then return {} end
trim(tonumber(ARGV[2]), tonumber(ARGV[3]))
return {epoch, last, first_offset(), redis.call('HGETALL', info)}
"""
)

PROBE = (
    _PRELUDE
    + r"""
-- What a room reader asks after a read that found nothing. ARGV: fresh epoch.
-- Returns the room's epoch (a fresh one if Redis lost the history), or '' when the room is gone.
return ensure(ARGV[1]) or ''
"""
)

POST = (
    _PRELUDE
    + r"""
-- ARGV: fresh epoch, max events, horizon ns, message id, message JSON, time ns,
-- request key prefix, request id ('' for none), window ms.
-- Returns {'missing'}, {'dup', stored} or {'ok', stored}; stored = '<offset> <epoch> <json>'.
local epoch = ensure(ARGV[1])
if not epoch then return {'missing'} end
local request_key = nil
if ARGV[8] ~= '' then
  request_key = ARGV[7] .. epoch .. ':' .. ARGV[8]
  local previous = redis.call('GET', request_key)
  if previous then return {'dup', previous} end
end
local offset = append(epoch, 'p', ARGV[6], ARGV[4], ARGV[5], nil)
redis.call('HSET', messages, ARGV[4], offset .. ' ' .. ARGV[5])
trim(tonumber(ARGV[2]), tonumber(ARGV[3]))
local stored = offset .. ' ' .. epoch .. ' ' .. ARGV[5]
if request_key then redis.call('SET', request_key, stored, 'PX', ARGV[9]) end
return {'ok', stored}
"""
)

CHANGE = (
    _PRELUDE
    + r"""
-- ARGV: fresh epoch, max events, horizon ns, message id, expected state, time ns,
-- new JSON ('' deletes). Returns {'missing'}, {'gone'}, {'retry'} or {'ok', epoch, offset}.
local epoch = ensure(ARGV[1])
if not epoch then return {'missing'} end
local current = redis.call('HGET', messages, ARGV[4])
if not current then return {'gone'} end
if current ~= ARGV[5] then return {'retry'} end
local offset
if ARGV[7] == '' then
  redis.call('HDEL', messages, ARGV[4])
  offset = append(epoch, 'd', ARGV[6], ARGV[4], nil, nil)
else
  local own = string.match(current, '^(%d+) ')
  offset = append(epoch, 'e', ARGV[6], ARGV[4], ARGV[7], own)
  redis.call('HSET', messages, ARGV[4], own .. ' ' .. ARGV[7])
end
trim(tonumber(ARGV[2]), tonumber(ARGV[3]))
return {'ok', epoch, offset}
"""
)

CREATE_ROOM = r"""
-- KEYS: info, epoch, offset, stream, messages, joined, instances, index, channel.
-- ARGV: room id, epoch, then info field/value pairs.
-- The new epoch is announced: a stream still following a room of that id that Redis lost
-- (FLUSHALL, eviction) learns it is over.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], '0')
redis.call('ZADD', KEYS[8], 0, ARGV[1])
redis.call('PUBLISH', KEYS[9], '{"k":"epoch","e":"' .. ARGV[2] .. '"}')
return 1
"""

UPDATE_ROOM = r"""
-- KEYS: info. ARGV: expected etag ('' for any), then field/value pairs.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'etag') ~= ARGV[1] then return 'etag' end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 'ok'
"""

DELETE_ROOM = r"""
-- KEYS: info, epoch, offset, stream, messages, joined, instances, channel, index.
-- ARGV: room id, expected etag, instance key prefix.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'etag') ~= ARGV[2] then return 'etag' end
local epoch = redis.call('GET', KEYS[2]) or ''
for _, instance in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
  redis.call('DEL', ARGV[3] .. instance)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[9], ARGV[1])
redis.call('PUBLISH', KEYS[8], '{"k":"deleted","e":"' .. epoch .. '"}')
return 'ok'
"""

_PRESENCE = r"""
-- KEYS: info, joined, instances, channel.
-- ARGV: instance key prefix, instance, now ms, lease expiry ms, now ns.
local info, joined, instances, channel = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, instance, now_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])

local function total(user)
  local sum = 0
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', instances, '(' .. ARGV[3], '+inf')) do
    sum = sum + tonumber(redis.call('HGET', prefix .. other, user) or '0')
  end
  return sum
end

local function left(user)
  if redis.call('HDEL', joined, user) == 1 then
    redis.call('PUBLISH', channel, '{"k":"member_left","u":' .. cjson.encode(user)
      .. ',"t":' .. ARGV[5] .. '}')
  end
end

-- Instances whose lease ran out: their connections are gone.
local function sweep()
  for _, dead in ipairs(redis.call('ZRANGEBYSCORE', instances, '-inf', ARGV[3])) do
    local users = redis.call('HKEYS', prefix .. dead)
    redis.call('DEL', prefix .. dead)
    redis.call('ZREM', instances, dead)
    for _, user in ipairs(users) do
      if total(user) == 0 then left(user) end
    end
  end
end

local function renew()
  redis.call('ZADD', instances, ARGV[4], instance)
  redis.call('PEXPIRE', prefix .. instance, (tonumber(ARGV[4]) - now_ms) * 10)
end
"""

JOIN = (
    _PRESENCE
    + r"""
-- ARGV[6]: user, ARGV[7]: +1 (join) or -1 (leave), ARGV[8]: the create_time_ns of the room
-- the connection is in ('' for any): a connection to a room Redis lost, or that was deleted,
-- counts nothing in a room created again with the same id.
if redis.call('EXISTS', info) == 0 then return 0 end
local born = ARGV[8] or ''
if born ~= '' and redis.call('HGET', info, 'create_time_ns') ~= born then return 0 end
sweep()
local user, delta = ARGV[6], tonumber(ARGV[7])
local mine = redis.call('HINCRBY', prefix .. instance, user, delta)
if mine <= 0 then redis.call('HDEL', prefix .. instance, user) end
renew()
local sum = total(user)
if delta > 0 and sum == 1 then
  redis.call('HSET', joined, user, ARGV[5])
  redis.call('PUBLISH', channel, '{"k":"member_joined","u":' .. cjson.encode(user)
    .. ',"t":' .. ARGV[5] .. '}')
elseif delta < 0 and sum == 0 then
  left(user)
end
return 1
"""
)

HEARTBEAT = (
    _PRESENCE
    + r"""
if redis.call('EXISTS', info) == 0 then return 0 end
renew()
sweep()
return 1
"""
)

MEMBERS = (
    _PRESENCE
    + r"""
-- Returns {user, connections, join time ns, ...} in no particular order; -1: no room.
if redis.call('EXISTS', info) == 0 then return -1 end
sweep()
local counts, order = {}, {}
for _, other in ipairs(redis.call('ZRANGEBYSCORE', instances, '(' .. ARGV[3], '+inf')) do
  local pairs_ = redis.call('HGETALL', prefix .. other)
  for j = 1, #pairs_, 2 do
    local user = pairs_[j]
    if not counts[user] then counts[user] = 0; table.insert(order, user) end
    counts[user] = counts[user] + tonumber(pairs_[j + 1])
  end
end
local out = {}
for _, user in ipairs(order) do
  if counts[user] > 0 then
    table.insert(out, user)
    table.insert(out, tostring(counts[user]))
    table.insert(out, redis.call('HGET', joined, user) or ARGV[5])
  end
end
return out
"""
)


@dataclass(frozen=True, slots=True)
class RoomKeys:
    """The Redis keys of one room (the hash tag keeps them in one Cluster slot)."""

    prefix: str
    room_id: str

    def key(self, name: str = "") -> str:
        return f"{self.prefix}room:{{{self.room_id}}}:{name}"

    @property
    def room(self) -> list[str]:
        """KEYS of the room scripts: info, epoch, offset, stream, messages, joined,
        instances, channel."""
        names = ("info", "epoch", "offset", "stream", "messages", "joined", "instances")
        return [*(self.key(n) for n in names), self.channel]

    @property
    def channel(self) -> str:
        return self.key("events")

    @property
    def presence(self) -> list[str]:
        return [self.key("info"), self.key("joined"), self.key("instances"), self.channel]
