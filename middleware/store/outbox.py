"""The durable outbox and its dead letters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from middleware.store import keys
from middleware.store.client import StoreBase

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



class OutboxStore(StoreBase):
    """Outbox entries: lease, retry, finish, dead-letter, revive."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_lease_outbox": _LEASE_OUTBOX,
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

    def dead_letter(self, entry: OutboxEntry, error: str, at_ms: int) -> None:
        """Move an entry that will not succeed by retrying to the dead letters (kept)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(keys.OUTBOX, entry.token)
        pipe.hset(keys.outbox_entry(entry.token), mapping={
            "attempts": entry.attempts + 1, "error": error})
        pipe.zadd(keys.DEAD, {entry.token: at_ms})
        self._call(pipe.execute)

    def dead_letters(self) -> list[OutboxEntry]:
        """Every dead letter, oldest first."""
        tokens = cast(list[str], self._call(lambda: self._r.zrange(keys.DEAD, 0, -1)))
        return [e for e in (self.outbox_entry(t) for t in tokens) if e is not None]

    def revive_dead_letter(self, token: str, now_ms: int) -> bool:
        """Put a dead letter back in the outbox with a fresh attempt count."""
        if not self._call(lambda: self._r.zscore(keys.DEAD, token)):
            return False
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(keys.DEAD, token)
        pipe.hset(keys.outbox_entry(token), "attempts", 0)
        pipe.zadd(keys.OUTBOX, {token: now_ms})
        self._call(pipe.execute)
        return True

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

