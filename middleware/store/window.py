"""The duplicate window in Redis: the check-and-claim, the daily count and the indexes the
worker walks."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from middleware.store import keys
from middleware.store.client import StoreBase
from middleware.store.packed import with_layer

# The duplicate window's check-and-claim, one atomic step for all workers and instances.
# KEYS, per digest of the number (current HMAC key first, then those of older PII keys): its
# claim, its creations of the last 24 h, its pending set. Every digest is checked and
# claimed, and the daily count is the union over them, so instances on the old and on the
# new PII_KEYS list see the same window (SPEC §4 Lifecycle 7).
# ARGV: token, window end ms, claim ttl ms, forget-before ms, now ms, creations allowed a day.
# A claim already holding our own token means Redis applied an earlier try of this very
# command whose reply was lost: that is our claim, not somebody else's.
_CLAIM_WINDOW: Final = with_layer("""
local nd = #KEYS / 3
for i = 0, nd - 1 do
  local p = KEYS[3 + 3 * i]
  Z_trim(p, ARGV[4])
  local found = Z_upto(p, ARGV[2], 1)
  if #found > 0 then return {'DUPLICATE', found[1][1], _sf('%.0f', found[1][2])} end
end
local mine = false
for i = 0, nd - 1 do
  local held = redis.call('GET', KEYS[1 + 3 * i])
  if held == ARGV[1] then
    mine = true
  elseif held then
    return {'BUSY', '', tostring(redis.call('PTTL', KEYS[1 + 3 * i]))}
  end
end
if mine then return {'CLAIMED'} end
local seen, count = {}, 0
for i = 0, nd - 1 do
  local created = KEYS[2 + 3 * i]
  redis.call('ZREMRANGEBYSCORE', created, '-inf', tonumber(ARGV[5]) - 86400000)
  for _, token in ipairs(redis.call('ZRANGE', created, 0, -1)) do
    -- The claimant's own token is no second create: a dead letter replayed within a day
    -- of its acceptance holds its one slot already.
    if not seen[token] and token ~= ARGV[1] then seen[token] = true; count = count + 1 end
  end
end
if count >= tonumber(ARGV[6]) then return {'LIMIT'} end
for i = 0, nd - 1 do redis.call('SET', KEYS[1 + 3 * i], ARGV[1], 'PX', ARGV[3]) end
return {'CLAIMED'}
""")


# Keep a claim longer only while it is still the holder's. KEYS[1] the claim.
# ARGV: holder, ttl ms.
_EXTEND_CLAIM: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


# Drop a callback from a number's window (every digest) and the shard's walk.
# KEYS: the walk, then the number's pending set per digest. ARGV: the id.
_UNINDEX: Final = with_layer("""
W_rem(KEYS[1], ARGV[1])
for i = 2, #KEYS do Z_rem(KEYS[i], ARGV[1]) end
return 1
""")

# The walk's next page after the cursor (ms, id), ordered by time then id as text, whatever
# order the stored ids sort in: a page cut inside a millisecond resumes after its last id.
# KEYS[1] the walk. ARGV: cursor ms, cursor id, page size. Answers id, ms, id, ms, ...
_WALK_PAGE: Final = with_layer("""
local limit = tonumber(ARGV[3])
local function by_id(x, y) return x[1] < y[1] end
-- Redis orders a millisecond's ids by their stored bytes (binary before text, in the layout
-- before's entries): the page is put in (ms, text id) order before it is cut.
local function by_time(x, y)
  if x[2] ~= y[2] then return x[2] < y[2] end
  return x[1] < y[1]
end
local page = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])) do
  local id = _id_t(m)
  if id > ARGV[2] then page[#page + 1] = {id, tonumber(ARGV[1])} end
end
table.sort(page, by_id)
local rest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES',
  'LIMIT', 0, limit)
if #rest > 0 then
  local last = rest[#rest]
  for i = 1, #rest, 2 do
    if rest[i + 1] ~= last then page[#page + 1] = {_id_t(rest[i]), tonumber(rest[i + 1])} end
  end
  local group = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], last, last)) do
    group[#group + 1] = {_id_t(m), tonumber(last)}
  end
  for _, e in ipairs(group) do page[#page + 1] = e end
end
table.sort(page, by_time)
local o = {}
for i = 1, math.min(limit, #page) do
  o[#o + 1] = page[i][1]; o[#o + 1] = _sf('%.0f', page[i][2])
end
return o
""")

# Drop ids from the walk. KEYS[1] the walk. ARGV: the ids.
_WALK_FORGET: Final = with_layer("""
for _, id in ipairs(ARGV) do W_rem(KEYS[1], id) end
return #ARGV
""")

# Drop up to ARGV[2] walk entries before ARGV[1] ms. KEYS[1] the walk. Answers how many.
_WALK_TRIM: Final = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #stale > 0 then redis.call('ZREM', KEYS[1], unpack(stale)) end
return #stale
"""

# The sweep: the next slice of the shard's packed records and windows, each deleted once
# its own expiry has passed (Redis' clock, ``ahead`` ms on), with its owner's count and its
# walk entry; where each slice stopped is kept for the next round.
# KEYS: records, windows, owner counts, walk, cursors. ARGV: slice size, ahead ms.
# Answers how many went.
_SWEEP: Final = with_layer("""
local now = _now_ms() + tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[5], 'sweep-records', 'sweep-windows')
local gone = 0
local r = redis.call('HSCAN', KEYS[1], cur[1] or '0', 'COUNT', ARGV[1])
for i = 1, #r[2], 2 do
  if _expiry(r[2][i + 1]) <= now then
    redis.call('HDEL', KEYS[1], r[2][i])
    local a = _owner_of(_decode(r[2][i + 1]))
    if a and redis.call('HINCRBY', KEYS[3], a, -1) <= 0 then redis.call('HDEL', KEYS[3], a) end
    redis.call('ZREM', KEYS[4], r[2][i])
    -- and its entry as the layout before kept it, if no step has moved it since
    local id = _id_t(r[2][i])
    if id ~= r[2][i] then redis.call('ZREM', KEYS[4], id) end
    gone = gone + 1
  end
end
local w = redis.call('HSCAN', KEYS[2], cur[2] or '0', 'COUNT', ARGV[1])
for i = 1, #w[2], 2 do
  if _u6(w[2][i + 1], 1) <= now then redis.call('HDEL', KEYS[2], w[2][i]); gone = gone + 1 end
end
redis.call('HSET', KEYS[5], 'sweep-records', r[1], 'sweep-windows', w[1])
return gone
""")


class WindowStore(StoreBase):
    """The duplicate window: claims, daily counts, pending indexes and cursors."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_claim_window": _CLAIM_WINDOW,
        "_extend_claim": _EXTEND_CLAIM,
        "_unindex": _UNINDEX,
        "_walk_page": _WALK_PAGE,
        "_walk_forget": _WALK_FORGET,
        "_walk_trim": _WALK_TRIM,
        "_sweep": _SWEEP,
    }

    def claim_window(self, digests: tuple[str, ...], token: str, window_end_ms: int,
                     claim_ttl_ms: int, forget_before_ms: int, now_ms: int,
                     daily_limit: int) -> WindowClaim:
        """Atomically find a pending callback in the window or claim the number for us
        (``LIMIT`` when the number already had ``daily_limit`` callbacks in 24 hours).

        ``digests[0]`` is the number's current HMAC digest; the others are read too, so
        rotating ``PII_KEYS`` never hides a pending callback.
        """
        names = [name for d in digests
                 for name in (keys.claim(d), keys.created(d), keys.pending(d))]
        reply = self._call(lambda: self._script('_claim_window')(
            keys=names, args=[token, window_end_ms, claim_ttl_ms, forget_before_ms, now_ms,
                             daily_limit]))
        status = str(reply[0])
        if status == "DUPLICATE":
            return WindowClaim(status, str(reply[1]), int(float(reply[2])))
        if status == "BUSY":
            return WindowClaim(status, "", max(int(reply[2]), 0))
        return WindowClaim(status)

    def release_claim(self, digests: tuple[str, ...], token: str) -> None:
        """Give the number back after a refusal or failure, if the claim is still ours."""
        for digest in digests:
            self._release(keys.claim(digest), token)

    def extend_claim(self, digests: tuple[str, ...], token: str, ttl_ms: int) -> None:
        """Keep the number's claim ``ttl_ms`` more, where it is still ``token``'s."""
        script = self._script("_extend_claim")
        for digest in digests:
            self._call(functools.partial(script, keys=[keys.claim(digest)],
                                         args=[token, ttl_ms]))

    def uncount_creation(self, digests: tuple[str, ...], token: str) -> None:
        """A journaled create Genesys refused does not count towards the daily cap."""
        pipe = self._r.pipeline(transaction=True)
        for digest in digests:
            pipe.zrem(keys.created(digest), token)
        self._call(pipe.execute)

    def pending_in_window(self, digests: tuple[str, ...], window_end_ms: int
                          ) -> list[tuple[str, int]]:
        """``(callback id, scheduled ms)`` of a number's pending callbacks, earliest first."""
        row = cast(list[str], self._call(lambda: self._script("_window_pending")(
            keys=[keys.pending(d) for d in digests], args=[window_end_ms, 0])))
        return [(str(row[i]), int(row[i + 1])) for i in range(0, len(row), 2)]

    def unindex(self, callback_id: str, digests: tuple[str, ...]) -> None:
        """Drop a callback id from the window's indexes (its record is gone or terminal)."""
        self._call(lambda: self._script("_unindex")(
            keys=[keys.pending_all(keys.shard_of(digests[0])),
                  *(keys.pending(d) for d in digests)], args=[callback_id]))

    def pending_owned_counts(self, agent_ids: list[str], now_ms: int) -> dict[str, int]:
        """How many pending callbacks each agent owns here (the reassignment order), counted
        over every shard in one round trip (entries older than any pending callback can be
        are not counted: the trim duty drops them)."""
        if not agent_ids:
            return {}
        stale = now_ms - 8 * 86_400_000
        pipe = self._r.pipeline(transaction=False)
        for shard in keys.SHARDS:
            pipe.hmget(keys.owner_counts(shard), [a or "-" for a in agent_ids])
        # The sets of the layout before (``packed``) still count the callbacks no step has
        # rewritten since.
        for agent_id in agent_ids:
            for shard in keys.SHARDS:
                pipe.zcount(keys.owned(shard, agent_id), f"({stale}", "+inf")
        replies = cast(list[Any], self._call(pipe.execute))
        n = len(keys.SHARDS)
        counts = {a: sum(int(row[i] or 0) for row in replies[:n])
                  for i, a in enumerate(agent_ids)}
        old = replies[n:]
        return {a: counts[a] + sum(old[i * n:(i + 1) * n]) for i, a in enumerate(agent_ids)}

    def pending_page(self, shard: str, after: tuple[int, str], limit: int
                     ) -> list[tuple[str, int]]:
        """The shard's next pending callbacks after the cursor ``(scheduled ms, id)``, in
        order (for the worker); callbacks sharing a millisecond are ordered by id, none is
        skipped."""
        row = cast(list[str], self._call(lambda: self._script("_walk_page")(
            keys=[keys.pending_all(shard)], args=[after[0], after[1], limit])))
        return [(str(row[i]), int(row[i + 1])) for i in range(0, len(row), 2)]

    def forget_pending(self, shard: str, callback_ids: list[str]) -> None:
        """Drop ids from the shard's worker index whose ledger records have expired."""
        if callback_ids:
            self._call(lambda: self._script("_walk_forget")(
                keys=[keys.pending_all(shard)], args=callback_ids))

    def walk_cursor(self, shard: str, walk: str) -> tuple[int, str]:
        """Where a worker walk (``reconcile``, ``reassign``, ``trim``) of the shard's index
        last stopped: ``(scheduled ms, id)``; ``(-1, "")`` at the beginning."""
        raw = self._call(lambda: self._r.hget(keys.cursors(shard), walk))
        if not raw:
            return -1, ""
        ms, _, callback_id = cast(str, raw).partition(" ")
        return int(ms), callback_id

    def save_walk_cursor(self, shard: str, walk: str, after: tuple[int, str]) -> None:
        """Remember where the walk's next page of the shard starts (``(-1, "")``: the
        beginning)."""
        self._call(lambda: self._r.hset(keys.cursors(shard), walk, f"{after[0]} {after[1]}"))

    def reconcile_pass(self) -> dict[str, Any] | None:
        """The interval reconciliation's saved progress, or ``None`` before its first pass."""
        raw = self._call(lambda: self._r.get(keys.RECONCILE_PASS))
        return cast(dict[str, Any], json.loads(cast(str, raw))) if raw else None

    def save_reconcile_pass(self, progress: dict[str, Any]) -> None:
        """Keep the interval reconciliation's progress, so a restart resumes it."""
        self._call(lambda: self._r.set(keys.RECONCILE_PASS, json.dumps(progress)))

    def note_queues(self, queue_ids: list[str], now_ms: int) -> None:
        """Remember that pending callbacks were seen on these queues at ``now_ms``."""
        if queue_ids:
            self._call(lambda: self._r.zadd(keys.RECONCILE_QUEUES,
                                            {q: now_ms for q in set(queue_ids)}))

    def reconcile_queues(self, since_ms: int) -> list[str]:
        """The queues a pending callback was seen on since ``since_ms``, sorted; older ones
        are dropped (their callbacks have left the ledger)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.RECONCILE_QUEUES, "-inf", f"({since_ms}")
        pipe.zrange(keys.RECONCILE_QUEUES, 0, -1)
        return sorted(str(q) for q in self._call(pipe.execute)[1])

    def pending_facts(self, shard: str, callback_ids: list[str]
                      ) -> list[tuple[str, str, int] | None]:
        """``(queue id, state, created ms)`` of each record of the shard in one round trip
        (``None``: gone)."""
        found = {r["id"]: r for r in self._records(callback_ids, shard)}
        return [(r.get("q", ""), r.get("st", ""), int(r.get("c") or 0)) if r.get("st")
                else None for r in (found.get(cid, {}) for cid in callback_ids)]

    def doubt(self, shard: str, callback_ids: list[str], check_ms: int) -> None:
        """Read these callbacks of the shard one by one from ``check_ms`` on (their change is
        in doubt)."""
        if callback_ids:
            self._call(lambda: self._r.zadd(keys.in_doubt(shard),
                                            {c: check_ms for c in callback_ids}))

    def in_doubt_due(self, shard: str, now_ms: int, limit: int) -> list[str]:
        """The shard's in-doubt callbacks due for a read by ``now_ms``, oldest first."""
        return [str(c) for c in cast(list[str], self._call(lambda: self._r.zrangebyscore(
            keys.in_doubt(shard), "-inf", now_ms, start=0, num=limit)))]

    def settle_doubt(self, shard: str, callback_ids: list[str]) -> None:
        """These callbacks of the shard are no longer in doubt."""
        if callback_ids:
            self._call(lambda: self._r.zrem(keys.in_doubt(shard), *callback_ids))
    # -- the trim duty's steps: each bounded by ``limit``, each safe to repeat ------------

    def trim_stale_pending(self, shard: str, before_ms: int, limit: int) -> int:
        """Drop up to ``limit`` entries scheduled before ``before_ms`` from the shard's
        worker index (Genesys forgot them long ago); how many went."""
        return int(self._call(lambda: self._script("_walk_trim")(
            keys=[keys.pending_all(shard)], args=[before_ms, limit])))

    def missing_records(self, shard: str, callback_ids: list[str]) -> list[str]:
        """The ids among ``callback_ids`` whose ledger records in the shard are gone."""
        held = {r["id"] for r in self._records(callback_ids, shard)}
        return [cid for cid in callback_ids if cid not in held]

    def sweep(self, shard: str, limit: int, ahead_ms: int = 0) -> int:
        """Delete the next slice (about ``limit`` fields) of the shard's packed records and
        windows whose own expiry has passed on Redis' clock (``ahead_ms`` later: the
        memory report's view of every TTL passed); how many went."""
        return int(self._call(lambda: self._script("_sweep")(keys=[
            keys.records(shard), keys.windows(shard), keys.owner_counts(shard),
            keys.pending_all(shard), keys.cursors(shard)], args=[limit, ahead_ms])))

    def trim_owned(self, shard: str, agent_ids: list[str], before_ms: int) -> None:
        """Drop entries scheduled before ``before_ms`` from these agents' sets of the shard
        (the agents are those of a page of the shard's index: every owner with an entry
        left is met on some walk)."""
        if agent_ids:
            pipe = self._r.pipeline(transaction=False)
            for agent_id in agent_ids:
                pipe.zremrangebyscore(keys.owned(shard, agent_id), "-inf", f"({before_ms}")
            self._call(pipe.execute)

    def trim_ended_sets(self, shard: str, limit: int) -> int:
        """Drop from the shard's sets of callbacks awaiting a disconnect (replaced, revoked)
        up to ``limit`` each whose records are gone; how many went."""
        gone = 0
        for name in (keys.replacing(shard), keys.revoking(shard)):
            sample = [str(m) for m in cast(list[str], self._call(
                functools.partial(self._r.srandmember, name, limit)))]
            ended = self.missing_records(shard, sample) if sample else []
            if ended:
                self._call(functools.partial(self._r.srem, name, *ended))
            gone += len(ended)
        return gone


@dataclass(frozen=True)
class WindowClaim:
    """``CLAIMED`` (go ahead), ``DUPLICATE`` (``callback_id`` pending) or ``BUSY`` (in flight)."""

    status: str
    callback_id: str = ""
    value_ms: int = 0

