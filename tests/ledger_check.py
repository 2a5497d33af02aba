"""The packed ledger's own consistency (``middleware.store.packed``), read straight from
Redis: every live record not past its expiry is in its shard's walk and in its number's
window under each of its digests, every walk entry has a live record (expired or not), and
each owner's count is the number of live records it owns. The soak checks it after every
seed; the layout's tests after each change they make."""

from __future__ import annotations

from typing import Any, cast

from middleware.store import keys
from middleware.store.packed import with_layer

# KEYS: one shard's records, owner counts and walk. Answers the problems found.
_CHECK = with_layer("""
local problems, counts = {}, {}
local stem = string.sub(KEYS[1], 1, #KEYS[1] - 3)
local recs = redis.call('HGETALL', KEYS[1])
for i = 1, #recs, 2 do
  local id = _id_t(recs[i])
  local t = _decode(recs[i + 1])
  local a = _owner_of(t)
  -- Past its expiry a record reads as gone but holds its owner's count until swept.
  if a then counts[a] = (counts[a] or 0) + 1 end
  if a and _expiry(recs[i + 1]) > _now_ms() then
    if not W_score(KEYS[3], id) then
      problems[#problems + 1] = 'live record ' .. id .. ' is not in the walk'
    end
    for d in string.gmatch(t.ns or '', '[^,]+') do
      if not Z_score(stem .. 'n:' .. d .. ':pending', id) then
        problems[#problems + 1] = 'live record ' .. id .. ' is not in the window of ' .. d
      end
    end
  end
end
local owners = redis.call('HGETALL', KEYS[2])
for i = 1, #owners, 2 do
  local want = counts[owners[i]] or 0
  if tonumber(owners[i + 1]) ~= want then
    problems[#problems + 1] = 'owner ' .. owners[i] .. ' counted ' .. owners[i + 1]
      .. ', owns ' .. want
  end
  counts[owners[i]] = nil
end
for a, n in pairs(counts) do
  problems[#problems + 1] = 'owner ' .. a .. ' owns ' .. n .. ' with no count'
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local id = _id_t(m)
  -- Read raw: a record past its expiry keeps its walk entry until both are swept.
  local raw = redis.call('HGET', KEYS[1], _id_b(id))
  local t = raw and _decode(raw) or _rload(stem .. 'cb:' .. id).t
  if not t or not _LIVE[t.st] then
    problems[#problems + 1] = 'walk entry ' .. id .. ' has no live record'
  end
end
return problems
""")


def ledger_problems(client: Any) -> list[str]:
    """What is inconsistent in the packed ledger, over every shard (empty: nothing)."""
    found: list[str] = []
    for shard in keys.SHARDS:
        found += [f"shard {shard}: {p}" for p in cast(list[str], client.eval(
            _CHECK, 3, keys.records(shard), keys.owner_counts(shard), keys.pending_all(shard)))]
    return found
