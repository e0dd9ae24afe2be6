"""The aggregator's Lua scripts: every write of derived state goes through them.

Each takes every key it touches in KEYS (one hash slot on a cluster) and checks the leader
lease first, so an aggregator that lost its lease (paused, partitioned) can never write.
Loops walk ARGV by counts; nothing `unpack`s an unbounded array.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "COMMIT", "RELEASE", "RENEW"]

#: KEYS: leader, epoch. ARGV: token, ttl_ms. Returns the new epoch, or 0 when held by another.
ACQUIRE: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""

#: KEYS: leader. ARGV: token, ttl_ms. Returns 1 when still ours.
RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

#: KEYS: leader. ARGV: token.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: leader, snapshot, state, transitions, updates, heartbeats, deadletters, then the
#: SLA rollup hashes the part writes (`Keys.rollup`).
#: ARGV (walked in order):
#:   token, expect_meta ("1" once this dataset has a commit of ours), meta_json,
#:   update_json ("" for none), transitions_maxlen, updates_maxlen, updates_minid,
#:   heartbeats_minid ("" for no trim), deadletters_maxlen,
#:   n_views, (name, view_json)*, n_removed, name*, n_state, (name, state_json)*,
#:   n_transitions, transition_json*, n_dead, (n_fields, (field, value)*)*,
#:   n_rollups, (key_index, field, delta_json, absolute_json, ttl_ms, cutoff_field)*
#: A rollup's delta members are added to the field's JSON object (created as needed, and
#: then fields older than the cutoff are deleted); its absolute members replace theirs.
#: Returns {"OK", update_id} | {"NOTLEADER"} | {"RESET"} (Redis lost our data).
COMMIT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {'NOTLEADER'}
end
if ARGV[2] == '1' and redis.call('HEXISTS', KEYS[2], '_meta') == 0 then
  return {'RESET'}
end
local meta, update = ARGV[3], ARGV[4]
local i = 10
local n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HDEL', KEYS[2], ARGV[i + j])
  redis.call('HDEL', KEYS[3], ARGV[i + j])
end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', KEYS[3], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[i + j])
end
i = i + n + 1
n = tonumber(ARGV[i])
i = i + 1
for j = 1, n do
  local fields = tonumber(ARGV[i])
  local entry = {}
  for k = 1, 2 * fields do
    entry[k] = ARGV[i + k]
  end
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[9], '*', unpack(entry))
  i = i + 2 * fields + 1
end
n = tonumber(ARGV[i])
i = i + 1
for j = 1, n do
  local key, field = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
  local raw = redis.call('HGET', key, field)
  local row = {}
  if raw then
    row = cjson.decode(raw)
  else
    local names = redis.call('HKEYS', key)
    for k = 1, #names do
      if names[k] < ARGV[i + 5] then
        redis.call('HDEL', key, names[k])
      end
    end
  end
  for member, value in pairs(cjson.decode(ARGV[i + 2])) do
    row[member] = (tonumber(row[member]) or 0) + value
  end
  for member, value in pairs(cjson.decode(ARGV[i + 3])) do
    row[member] = value
  end
  redis.call('HSET', key, field, cjson.encode(row))
  redis.call('PEXPIRE', key, ARGV[i + 4])
  i = i + 6
end
local update_id = false
if update ~= '' then
  update_id = redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'm', update)
  redis.call('XTRIM', KEYS[5], 'MINID', '~', ARGV[7])
  meta = string.gsub(meta, '"update_id":"[0-9-]*"', '"update_id":"' .. update_id .. '"', 1)
end
redis.call('HSET', KEYS[2], '_meta', meta)
if ARGV[8] ~= '' then
  redis.call('XTRIM', KEYS[6], 'MINID', '~', ARGV[8])
end
return {'OK', update_id}
"""
