"""The durable outbox and its dead letters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from middleware.store import keys
from middleware.store.client import StoreBase, event_json

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
# in the window, the indexes and the outbox, and the claim is released.
# KEYS: dead letters, outbox, outbox entry, record, global pending, owner's pending,
#       history, then per digest: claim, pending set, consent state.
# ARGV: token, now ms, revocation epoch read, record id, scheduled ms, ttl s, history ttl s,
#       then the history event (JSON).
_REPLAY: Final = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'GONE' end
local nd = (#KEYS - 7) / 3
for i = 0, nd - 1 do
  local base = 8 + 3 * i
  local seq = tonumber(redis.call('HGET', KEYS[base + 2], 'revokedSeq') or '0')
  if seq > tonumber(ARGV[3]) then return 'REVOKED' end
  local held = redis.call('GET', KEYS[base])
  if held and held ~= ARGV[1] then return 'LOST' end
end
if redis.call('EXISTS', KEYS[4]) == 0 then return 'GONE' end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], 'attempts', 0, 'error', '')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], 'st', 'QUEUED', 'ep', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'v', 1)
redis.call('EXPIRE', KEYS[4], ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[4])
if redis.call('TTL', KEYS[6]) < tonumber(ARGV[6]) then redis.call('EXPIRE', KEYS[6], ARGV[6]) end
for i = 0, nd - 1 do
  local base = 8 + 3 * i
  redis.call('ZADD', KEYS[base + 1], ARGV[5], ARGV[4])
  if redis.call('TTL', KEYS[base + 1]) < tonumber(ARGV[6]) then
    redis.call('EXPIRE', KEYS[base + 1], ARGV[6])
  end
  if redis.call('GET', KEYS[base]) == ARGV[1] then redis.call('DEL', KEYS[base]) end
end
if #ARGV > 7 then
  redis.call('RPUSH', KEYS[7], ARGV[8])
  redis.call('EXPIRE', KEYS[7], ARGV[7])
end
return 'OK'
"""


class OutboxStore(StoreBase):
    """Outbox entries: lease, retry, finish, dead-letter, revive."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_lease_outbox": _LEASE_OUTBOX,
        "_replay": _REPLAY,
    }

    def lease_outbox(self, now_ms: int, lease_ms: int, limit: int) -> list[OutboxEntry]:
        """Due outbox entries, each leased to the caller for ``lease_ms``."""
        tokens = cast(list[str], self._call(lambda: self._script('_lease_outbox')(
            keys=[keys.OUTBOX], args=[now_ms, lease_ms, limit])))
        return [e for e in (self.outbox_entry(t) for t in tokens) if e is not None]

    def outbox_entry(self, token: str) -> OutboxEntry | None:
        """One outbox (or dead-letter) entry."""
        raw = cast(dict[str, str], self._call(
            lambda: self._r.hgetall(keys.outbox_entry(token))))
        if not raw:
            return None
        return OutboxEntry(token, json.loads(raw["payload"]), int(raw.get("attempts", 0)),
                           raw.get("error", ""))

    def retry_outbox(self, entry: OutboxEntry, next_ms: int, error: str,
                     payload: dict[str, Any]) -> None:
        """Count a failed attempt and schedule the next one."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(keys.outbox_entry(entry.token), mapping={
            "attempts": entry.attempts + 1, "error": error, "payload": json.dumps(payload)})
        pipe.zadd(keys.OUTBOX, {entry.token: next_ms})
        self._call(pipe.execute)

    def finish_outbox(self, token: str) -> None:
        """The entry was delivered (or abandoned): forget it."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(keys.OUTBOX, token)
        pipe.delete(keys.outbox_entry(token))
        self._call(pipe.execute)

    def save_outbox_payload(self, token: str, payload: dict[str, Any]) -> None:
        """Rewrite an outbox entry's payload (e.g. to note an attempt is about to be sent)."""
        self._call(lambda: self._r.hset(keys.outbox_entry(token), "payload",
                                        json.dumps(payload)))

    def dead_letters(self) -> list[OutboxEntry]:
        """Every dead letter, oldest first."""
        tokens = cast(list[str], self._call(lambda: self._r.zrange(keys.DEAD, 0, -1)))
        return [e for e in (self.outbox_entry(t) for t in tokens) if e is not None]

    def replay_dead_letter(self, token: str, digests: tuple[str, ...], record_id: str,
                           agent_id: str, scheduled_ms: int, ttl_s: int, epoch: int,
                           now_ms: int, event: Mapping[str, str | int], history_ttl_s: int
                           ) -> str:
        """Put a dead letter back in the window and the outbox in one guarded step.

        ``OK``; ``REVOKED`` when a revocation was stored since the consent check that read
        ``epoch``; ``LOST`` when the number's claim is no longer ``token``'s; ``GONE`` when
        it is no longer a dead letter. Nothing is written unless ``OK``.
        """
        names = [keys.DEAD, keys.OUTBOX, keys.outbox_entry(token), keys.record(record_id),
                 keys.PENDING, keys.owned(agent_id), keys.events(digests[0])]
        for d in digests:
            names += [keys.claim(d), keys.pending(d), keys.consent_state(d)]
        return str(self._call(lambda: self._script("_replay")(keys=names, args=[
            token, now_ms, epoch, record_id, scheduled_ms, ttl_s, history_ttl_s,
            event_json(event)])))

    def refuse_replay(self, token: str, reason: str) -> None:
        """A replay was refused: the entry stays a dead letter, with why in its error."""
        if self._call(lambda: self._r.zscore(keys.DEAD, token)) is not None:
            self._call(lambda: self._r.hset(keys.outbox_entry(token), "error", reason))

    def outbox_stats(self, now_ms: int) -> tuple[int, int, int]:
        """``(outbox depth, age in ms of its oldest due entry, dead letters)``."""
        pipe = self._r.pipeline(transaction=False)
        pipe.zcard(keys.OUTBOX)
        pipe.zrange(keys.OUTBOX, 0, 0, withscores=True)
        pipe.zcard(keys.DEAD)
        depth, oldest, dead = cast(tuple[int, list[tuple[str, float]], int],
                                   tuple(self._call(pipe.execute)))
        age = max(0, now_ms - int(oldest[0][1])) if oldest else 0
        return int(depth), age, int(dead)


@dataclass(frozen=True)
class OutboxEntry:
    """A create accepted while Genesys was unreachable: what to send and what happened."""

    token: str
    payload: dict[str, Any]
    attempts: int
    error: str

