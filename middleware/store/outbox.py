"""The durable outbox and its dead letters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from middleware.store import keys
from middleware.store.client import StoreBase, event_json
from middleware.store.packed import with_layer

# Lease the outbox entries that are due: move each one's next attempt past the lease so no
# other worker takes it meanwhile; a worker killed mid-attempt frees it when the lease ends.
# KEYS[1] the schedule. ARGV: now ms, lease ms, limit.
_LEASE_OUTBOX: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, token in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), token)
end
return due
"""


# Replay a dead letter like a new request, in one guarded step: only while it is still a
# dead letter, no revocation was stored since the consent check that read ARGV[3], and the
# number's window claim is still the replay's (ARGV[1], the entry's token). Then it is back
# in the window and the indexes at the time it is now due (ARGV[5]: its own, or now when
# that has passed; the record keeps its own until the outbox moves it), back in the outbox,
# and the claim is released.
# KEYS: dead letters, outbox, outbox entry, record, global pending, (unused),
#       history, then per digest: claim, pending set, consent state, creations of the
#       last 24 h.
# ARGV: token, now ms, revocation epoch read, record id, due ms, ttl s, history ttl s,
#       then the history event (JSON).
_REPLAY: Final = with_layer("""
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'GONE' end
local nd = (#KEYS - 7) / 4
for i = 0, nd - 1 do
  local base = 8 + 4 * i
  local seq = tonumber(redis.call('HGET', KEYS[base + 2], 'revokedSeq') or '0')
  if seq > tonumber(ARGV[3]) then return 'REVOKED' end
  local held = redis.call('GET', KEYS[base])
  if held and held ~= ARGV[1] then return 'LOST' end
end
if R_exists(KEYS[4]) == 0 then return 'GONE' end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], 'attempts', 0, 'error', '')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
R_set(KEYS[4], 'st', 'QUEUED', 'ep', ARGV[3])
R_incr(KEYS[4], 'v', 1)
R_expire(KEYS[4], ARGV[6])
W_add(KEYS[5], ARGV[5], ARGV[4])
for i = 0, nd - 1 do
  local base = 8 + 4 * i
  Z_add(KEYS[base + 1], ARGV[5], ARGV[4])
  Z_keep(KEYS[base + 1], ARGV[6])
  -- Counted against the daily cap as the create it is again (the claim checked the cap).
  redis.call('ZADD', KEYS[base + 3], ARGV[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[base + 3], """ + str(keys.CREATED_KEEP_MS) + """)
  if redis.call('GET', KEYS[base]) == ARGV[1] then redis.call('DEL', KEYS[base]) end
end
_history(KEYS[7], ARGV[8], ARGV[7])
return 'OK'
""")


class OutboxStore(StoreBase):
    """Outbox entries: lease, retry, finish, dead-letter, revive."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_lease_outbox": _LEASE_OUTBOX,
        "_replay": _REPLAY,
    }

    def lease_outbox(self, shard: str, now_ms: int, lease_ms: int, limit: int
                     ) -> list[OutboxEntry]:
        """The shard's due outbox entries, each leased to the caller for ``lease_ms``."""
        tokens = cast(list[str], self._call(lambda: self._script('_lease_outbox')(
            keys=[keys.outbox(shard)], args=[now_ms, lease_ms, limit])))
        return self._entries(shard, tokens)

    def _entries(self, shard: str, tokens: list[str]) -> list[OutboxEntry]:
        pipe = self._r.pipeline(transaction=False)
        for token in tokens:
            pipe.hgetall(keys.outbox_entry(shard, token))
        rows = cast(list[dict[str, str]], self._call(pipe.execute)) if tokens else []
        return [OutboxEntry(token, json.loads(raw["payload"]), int(raw.get("attempts", 0)),
                            raw.get("error", ""), shard)
                for token, raw in zip(tokens, rows, strict=True) if raw]

    def outbox_entry(self, token: str, shard: str | None = None) -> OutboxEntry | None:
        """One outbox (or dead-letter) entry (``shard`` unknown: looked for in every shard,
        in one round trip)."""
        shards = (shard,) if shard is not None else keys.SHARDS
        pipe = self._r.pipeline(transaction=False)
        for each in shards:
            pipe.hgetall(keys.outbox_entry(each, token))
        rows = cast(list[dict[str, str]], self._call(pipe.execute))
        for each, raw in zip(shards, rows, strict=True):
            if raw:
                return OutboxEntry(token, json.loads(raw["payload"]),
                                   int(raw.get("attempts", 0)), raw.get("error", ""), each)
        return None

    def retry_outbox(self, entry: OutboxEntry, next_ms: int, error: str,
                     payload: dict[str, Any]) -> None:
        """Count a failed attempt and schedule the next one."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(keys.outbox_entry(entry.shard, entry.token), mapping={
            "attempts": entry.attempts + 1, "error": error, "payload": json.dumps(payload)})
        pipe.zadd(keys.outbox(entry.shard), {entry.token: next_ms})
        self._call(pipe.execute)

    def finish_outbox(self, shard: str, token: str) -> None:
        """The entry was delivered (or abandoned): forget it."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(keys.outbox(shard), token)
        pipe.delete(keys.outbox_entry(shard, token))
        self._call(pipe.execute)

    def save_outbox_payload(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        """Rewrite an outbox entry's payload (e.g. to note an attempt is about to be sent)."""
        self._call(lambda: self._r.hset(keys.outbox_entry(entry.shard, entry.token),
                                        "payload", json.dumps(payload)))

    def dead_letters(self) -> list[OutboxEntry]:
        """Every dead letter, oldest first."""
        pipe = self._r.pipeline(transaction=False)
        for shard in keys.SHARDS:
            pipe.zrange(keys.dead(shard), 0, -1, withscores=True)
        rows = cast(list[list[tuple[str, float]]], self._call(pipe.execute))
        died = {(shard, str(token)): score
                for shard, row in zip(keys.SHARDS, rows, strict=True) for token, score in row}
        entries: list[OutboxEntry] = []
        for shard in keys.SHARDS:
            entries += self._entries(shard, [t for s, t in died if s == shard])
        return sorted(entries, key=lambda e: (died[(e.shard, e.token)], e.token))

    def replay_dead_letter(self, token: str, digests: tuple[str, ...], record_id: str,
                           agent_id: str, due_ms: int, ttl_s: int, epoch: int,
                           now_ms: int, event: Mapping[str, str | int], history_ttl_s: int
                           ) -> str:
        """Put a dead letter back in the window and the outbox in one guarded step.

        ``OK``; ``REVOKED`` when a revocation was stored since the consent check that read
        ``epoch``; ``LOST`` when the number's claim is no longer ``token``'s; ``GONE`` when
        it is no longer a dead letter. Nothing is written unless ``OK``.
        """
        shard = keys.shard_of(digests[0])
        names = [keys.dead(shard), keys.outbox(shard), keys.outbox_entry(shard, token),
                 keys.record(shard, record_id), keys.pending_all(shard),
                 keys.owned(shard, agent_id), keys.events(digests[0])]
        for d in digests:
            names += [keys.claim(d), keys.pending(d), keys.consent_state(d), keys.created(d)]
        return str(self._call(lambda: self._script("_replay")(keys=names, args=[
            token, now_ms, epoch, record_id, due_ms, ttl_s, history_ttl_s,
            event_json(event)])))

    def refuse_replay(self, entry: OutboxEntry, reason: str) -> None:
        """A replay was refused: the entry stays a dead letter, with why in its error."""
        if self._call(lambda: self._r.zscore(keys.dead(entry.shard), entry.token)) is not None:
            self._call(lambda: self._r.hset(keys.outbox_entry(entry.shard, entry.token),
                                            "error", reason))

    def outbox_stats(self, now_ms: int) -> tuple[int, int, int]:
        """``(outbox depth, age in ms of its oldest due entry, dead letters)`` over every
        shard, in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for shard in keys.SHARDS:
            pipe.zcard(keys.outbox(shard))
            pipe.zrange(keys.outbox(shard), 0, 0, withscores=True)
            pipe.zcard(keys.dead(shard))
        rows: list[Any] = self._call(pipe.execute)
        depth = sum(int(n) for n in rows[0::3])
        oldest = [int(row[0][1]) for row in rows[1::3] if row]
        dead = sum(int(n) for n in rows[2::3])
        age = max(0, now_ms - min(oldest)) if oldest else 0
        return depth, age, dead


@dataclass(frozen=True)
class OutboxEntry:
    """A create accepted while Genesys was unreachable: what to send and what happened."""

    token: str
    payload: dict[str, Any]
    attempts: int
    error: str
    #: The store shard it lives in (its number's).
    shard: str = ""

