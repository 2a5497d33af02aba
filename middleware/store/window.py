"""The duplicate window in Redis: the check-and-claim, the daily count and the indexes the
worker walks."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from middleware.store import keys
from middleware.store.client import StoreBase

# The duplicate window's check-and-claim, one atomic step for all workers and instances.
# KEYS, per digest of the number (current HMAC key first, then those of older PII keys): its
# claim, its creations of the last 24 h, its pending set. Every digest is checked and
# claimed, and the daily count is the union over them, so instances on the old and on the
# new PII_KEYS list see the same window (SPEC §4 Lifecycle 7).
# ARGV: token, window end ms, claim ttl ms, forget-before ms, now ms, creations allowed a day.
# A claim already holding our own token means Redis applied an earlier try of this very
# command whose reply was lost: that is our claim, not somebody else's.
_CLAIM_WINDOW: Final = """
local nd = #KEYS / 3
for i = 0, nd - 1 do
  local p = KEYS[3 + 3 * i]
  redis.call('ZREMRANGEBYSCORE', p, '-inf', '(' .. ARGV[4])
  local found = redis.call('ZRANGEBYSCORE', p, '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, 1)
  if #found > 0 then return {'DUPLICATE', found[1], found[2]} end
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
    if not seen[token] then seen[token] = true; count = count + 1 end
  end
end
if count >= tonumber(ARGV[6]) then return {'LIMIT'} end
for i = 0, nd - 1 do redis.call('SET', KEYS[1 + 3 * i], ARGV[1], 'PX', ARGV[3]) end
return {'CLAIMED'}
"""


# Keep a claim longer only while it is still the holder's. KEYS[1] the claim.
# ARGV: holder, ttl ms.
_EXTEND_CLAIM: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class WindowStore(StoreBase):
    """The duplicate window: claims, daily counts, pending indexes and cursors."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_claim_window": _CLAIM_WINDOW,
        "_extend_claim": _EXTEND_CLAIM,
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
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.zrangebyscore(keys.pending(digest), "-inf", window_end_ms,
                               withscores=True)
        rows = cast(list[list[tuple[str, float]]], self._call(pipe.execute))
        # A callback is indexed under every digest of its number: once each.
        found = {str(cid): int(score) for row in rows for cid, score in row}
        return sorted(found.items(), key=lambda item: (item[1], item[0]))

    def unindex(self, callback_id: str, digests: tuple[str, ...]) -> None:
        """Drop a callback id from the window's indexes (its record is gone or terminal)."""
        pipe = self._r.pipeline(transaction=True)
        for digest in digests:
            pipe.zrem(keys.pending(digest), callback_id)
        pipe.zrem(keys.pending_all(keys.shard_of(digests[0])), callback_id)
        self._call(pipe.execute)

    def pending_owned_counts(self, agent_ids: list[str], now_ms: int) -> dict[str, int]:
        """How many pending callbacks each agent owns here (the reassignment order), counted
        over every shard in one round trip (entries older than any pending callback can be
        are not counted: the trim duty drops them)."""
        stale = now_ms - 8 * 86_400_000
        pipe = self._r.pipeline(transaction=False)
        for agent_id in agent_ids:
            for shard in keys.SHARDS:
                pipe.zcount(keys.owned(shard, agent_id), f"({stale}", "+inf")
        replies = cast(list[int], self._call(pipe.execute))
        n = len(keys.SHARDS)
        return {agent_id: sum(replies[i * n:(i + 1) * n]) for i, agent_id in enumerate(agent_ids)}

    def pending_page(self, shard: str, after: tuple[int, str], limit: int
                     ) -> list[tuple[str, int]]:
        """The shard's next pending callbacks after the cursor ``(scheduled ms, id)``, in
        order (for the worker); callbacks sharing a millisecond are ordered by id, none is
        skipped."""
        after_ms, after_id = after
        key = keys.pending_all(shard)
        pipe = self._r.pipeline(transaction=False)
        pipe.zrangebyscore(key, after_ms, after_ms)
        pipe.zrangebyscore(key, f"({after_ms}", "+inf", start=0, num=limit, withscores=True)
        ties, rest = cast(tuple[list[str], list[tuple[str, float]]], tuple(
            self._call(pipe.execute)))
        page = [(str(cid), after_ms) for cid in ties if str(cid) > after_id]
        page += [(str(cid), int(score)) for cid, score in rest]
        return page[:limit]

    def forget_pending(self, shard: str, callback_ids: list[str]) -> None:
        """Drop ids from the shard's worker index whose ledger records have expired."""
        self._call(lambda: self._r.zrem(keys.pending_all(shard), *callback_ids))

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
        pipe = self._r.pipeline(transaction=False)
        for callback_id in callback_ids:
            pipe.hmget(keys.record(shard, callback_id), "q", "st", "c")
        rows = cast(list[list[str | None]], self._call(pipe.execute))
        return [(row[0] or "", row[1] or "", int(row[2] or 0)) if row[1] else None
                for row in rows]

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
        key = keys.pending_all(shard)
        stale = cast(list[str], self._call(lambda: self._r.zrangebyscore(
            key, "-inf", f"({before_ms}", start=0, num=limit)))
        if stale:
            self._call(lambda: self._r.zrem(key, *stale))
        return len(stale)

    def missing_records(self, shard: str, callback_ids: list[str]) -> list[str]:
        """The ids among ``callback_ids`` whose ledger records in the shard are gone."""
        pipe = self._r.pipeline(transaction=False)
        for callback_id in callback_ids:
            pipe.exists(keys.record(shard, callback_id))
        found = cast(list[int], self._call(pipe.execute))
        return [cid for cid, there in zip(callback_ids, found, strict=True) if not there]

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

