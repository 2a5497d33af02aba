"""Everything the service keeps in Redis: key names, TTLs, scripts and the policy on Redis errors.

Callers speak in domain words (``save_token``, ``record_callback``); no other module
knows a key name. Keys never contain a phone number, token or secret: numbers appear
only as HMAC digests (``numbers.NumberKeys``), OAuth clients as a hash of their id.

Every Redis failure (unreachable, timed out, refused) becomes ``StoreUnavailable``,
which the web layer answers with 503 and ``Retry-After``: the service never guesses
when it cannot read or write its own state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from middleware.errors import StoreUnavailable

T = TypeVar("T")

PREFIX: Final = "cbm:"

# Deleting a lock or claim only while it still holds our token keeps one request from
# freeing a claim that expired and was taken by another.
_RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The duplicate window's check-and-claim, one atomic step for all workers and instances.
# KEYS[1] the number's claim; KEYS[2] its creations of the last 24 h; KEYS[3..] its pending
# sets (current HMAC key first, then the ones of older PII keys).
# ARGV: token, window end ms, claim ttl ms, forget-before ms, now ms, creations allowed a day.
# A claim already holding our own token means Redis applied an earlier try of this very
# command whose reply was lost: that is our claim, not somebody else's.
_CLAIM_WINDOW: Final = """
for i = 3, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[4])
  local found = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, 1)
  if #found > 0 then return {'DUPLICATE', found[1], found[2]} end
end
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return {'CLAIMED'} end
if held then return {'BUSY', '', tostring(redis.call('PTTL', KEYS[1]))} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[5]) - 86400000)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return {'LIMIT'} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return {'CLAIMED'}
"""

# Record a created (or queued) callback in the ledger and its indexes, then drop our claim.
# KEYS: claim, number's pending set, record, global pending set, owner's pending set.
# ARGV: token, callback id, scheduled ms, ttl s, then the record's field/value pairs.
# Every write is idempotent, so a retried command after a lost reply changes nothing.
_COMMIT_CALLBACK: Final = """
redis.call('HSET', KEYS[3], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# Take a callback out of the window for good.
# KEYS: record, number's pending set, global set, owner's pending set.
_CLOSE_CALLBACK: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'st', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""

# A token bucket shared by every worker and instance. KEYS[1] the bucket.
# ARGV: capacity, refill per ms. Returns 0 when a token was taken, else ms to wait.
# Redis' own clock keeps every instance on one timeline.
_TAKE_RATE_SLOT: Final = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local tokens = tonumber(state[1]) or capacity
local last = tonumber(state[2]) or ms
tokens = math.min(capacity, tokens + math.max(0, ms - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', ms)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return wait
"""

# Idempotency keys (Stripe semantics). KEYS[1] the key's record.
# ARGV: fingerprint, owner token, in-flight lease ms.
_BEGIN_IDEMPOTENT: Final = """
local cur = redis.call('HMGET', KEYS[1], 'st', 'fp', 'o', 'b')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'st', 'inflight', 'fp', ARGV[1], 'o', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'NEW'}
end
if cur[2] ~= ARGV[1] then return {'MISMATCH'} end
if cur[1] == 'done' then return {'REPLAY', cur[4]} end
if cur[3] == ARGV[2] then return {'NEW'} end
return {'INFLIGHT', tostring(redis.call('PTTL', KEYS[1]))}
"""

# ARGV: owner token, answer JSON ('' = forget the key), ttl s.
_FINISH_IDEMPOTENT: Final = """
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'st', 'done', 'b', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

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

# The journaled create exists in Genesys: in one step, if the request was not cancelled
# meanwhile, the real record takes the journal entry's place in the window and indexes, the
# history records it, and the entry and its outbox item go. Returns 0 (outbox item dropped,
# nothing else) when the entry is no longer CREATING or QUEUED.
# KEYS: journaled record, real record, real number's pending set, global pending set,
#       owner's pending set, journaled number's pending set, history, outbox, outbox entry.
# ARGV: journaled id, real id, scheduled ms, ttl s, history ttl s, token, count of record
#       field/value items, those items, then the history event's field/value items.
_DELIVER: Final = """
local st = redis.call('HGET', KEYS[1], 'st')
redis.call('ZREM', KEYS[8], ARGV[6])
redis.call('DEL', KEYS[9])
if st ~= 'CREATING' and st ~= 'QUEUED' then return 0 end
local n = tonumber(ARGV[7])
redis.call('HSET', KEYS[2], unpack(ARGV, 8, 7 + n))
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
if redis.call('TTL', KEYS[3]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[7], '*', unpack(ARGV, 8 + n))
redis.call('EXPIRE', KEYS[7], ARGV[5])
return 1
"""

# Move a record from one of two states to a third, atomically; 0 when it was in neither
# (cancelled meanwhile). KEYS[1] the record. ARGV: from, other from, to.
_FLIP_STATE: Final = """
local st = redis.call('HGET', KEYS[1], 'st')
if st == ARGV[1] or st == ARGV[2] then redis.call('HSET', KEYS[1], 'st', ARGV[3]); return 1 end
return 0
"""

#: Ledger states: pending ones count in the duplicate window, the others never again.
#: CREATING: journaled before the Genesys create, so a crash mid-create can be resolved.
PENDING_STATES: Final = frozenset({"PENDING", "QUEUED", "CREATING"})
TERMINAL_STATES: Final = frozenset({"CANCELLED", "COMPLETED", "DISCONNECTED", "REASSIGNED",
                                    "DEAD_LETTER"})


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A client whose every command gives up after ``timeout_s``, retried once.

    redis-py's defaults wait up to 5 s a try and retry ten times; a data action
    cannot afford either.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        decode_responses=True,
    )


def client_key(client_id: str) -> str:
    """Stable, non-reversible name for an OAuth client in key names."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:16]


class Store:
    """The service's state in Redis, behind methods named for what they mean."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._release_lock = client.register_script(_RELEASE_LOCK)
        self._claim_window = client.register_script(_CLAIM_WINDOW)
        self._begin_idempotent = client.register_script(_BEGIN_IDEMPOTENT)
        self._finish_idempotent = client.register_script(_FINISH_IDEMPOTENT)
        self._take_token = client.register_script(_TAKE_RATE_SLOT)
        self._lease_outbox = client.register_script(_LEASE_OUTBOX)
        self._flip_state = client.register_script(_FLIP_STATE)
        self._deliver = client.register_script(_DELIVER)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc

    # -- health -------------------------------------------------------------------------

    def ping(self) -> bool:
        """Whether Redis answers."""
        return bool(self._call(self._r.ping))

    def durability(self) -> dict[str, str]:
        """The persistence settings an accepted request depends on (empty if CONFIG is off)."""
        settings: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy"):
            try:
                settings.update(cast(dict[str, str], self._r.config_get(name)))
            except redis.ResponseError:
                # Managed Redis often renames CONFIG; report what we could read.
                continue
            except redis.RedisError as exc:
                raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc
        return settings

    # -- OAuth token shared by every worker ----------------------------------------------

    def cached_token(self, client: str) -> tuple[str, float] | None:
        """The shared access token and its refresh-by epoch second, if one is cached."""
        raw = self._call(lambda: self._r.get(f"{PREFIX}token:{client}"))
        if not raw:
            return None
        data = json.loads(cast(str, raw))
        return str(data["token"]), float(data["refreshAt"])

    def save_token(self, client: str, token: str, refresh_at: float, ttl_s: int) -> None:
        """Share a fresh token with every worker until it should be refreshed."""
        value = json.dumps({"token": token, "refreshAt": refresh_at})
        self._call(lambda: self._r.set(f"{PREFIX}token:{client}", value, ex=max(ttl_s, 1)))

    def forget_token(self, client: str, token: str) -> None:
        """Drop the shared token if it is the one Genesys just refused."""
        key = f"{PREFIX}token:{client}"
        cached = self.cached_token(client)
        if cached and cached[0] == token:
            self._call(lambda: self._r.delete(key))

    def acquire_token_lock(self, client: str, holder: str, ttl_ms: int) -> bool:
        """Become the one worker fetching a token; the lock expires if that worker dies."""
        key = f"{PREFIX}token-lock:{client}"
        return bool(self._call(lambda: self._r.set(key, holder, nx=True, px=ttl_ms)))

    def release_token_lock(self, client: str, holder: str) -> None:
        """Release the fetch lock if we still hold it."""
        key = f"{PREFIX}token-lock:{client}"
        self._call(lambda: self._release_lock(keys=[key], args=[holder]))

    # -- the callback ledger and its duplicate window ------------------------------------

    @staticmethod
    def _number(digest: str) -> str:
        # One hash tag per number groups its keys; the scripts also touch global keys, so
        # the store needs a single Redis primary (see README), not Cluster.
        return f"{PREFIX}{{n:{digest}}}"

    def claim_window(self, digests: tuple[str, ...], token: str, window_end_ms: int,
                     claim_ttl_ms: int, forget_before_ms: int, now_ms: int,
                     daily_limit: int) -> WindowClaim:
        """Atomically find a pending callback in the window or claim the number for us
        (``LIMIT`` when the number already had ``daily_limit`` callbacks in 24 hours).

        ``digests[0]`` is the number's current HMAC digest; the others are read too, so
        rotating ``PII_KEYS`` never hides a pending callback.
        """
        keys = [f"{self._number(digests[0])}:claim", f"{self._number(digests[0])}:created"]
        keys += [f"{self._number(d)}:pending" for d in digests]
        reply = self._call(lambda: self._claim_window(
            keys=keys, args=[token, window_end_ms, claim_ttl_ms, forget_before_ms, now_ms,
                             daily_limit]))
        status = str(reply[0])
        if status == "DUPLICATE":
            return WindowClaim(status, str(reply[1]), int(float(reply[2])))
        if status == "BUSY":
            return WindowClaim(status, "", max(int(reply[2]), 0))
        return WindowClaim(status)

    def creations_today(self, digest: str, now_ms: int) -> int:
        """How many callbacks were accepted for the number in the 24 hours before ``now_ms``
        (a read only: the claim enforces the cap atomically)."""
        key = f"{self._number(digest)}:created"
        return int(self._call(
            lambda: self._r.zcount(key, f"({now_ms - 86_400_000}", "+inf")))

    def release_claim(self, digest: str, token: str) -> None:
        """Give the number back after a refusal or failure, if the claim is still ours."""
        key = f"{self._number(digest)}:claim"
        self._call(lambda: self._release_lock(keys=[key], args=[token]))

    def _commit_in(self, pipe: Any, digest: str, token: str, record: LedgerRecord,
                   ttl_s: int) -> None:
        """Queue the commit script (record, window, indexes, claim release) on ``pipe``."""
        fields: list[str | int] = []
        for name, value in record.to_fields().items():
            fields += [name, value]
        keys = [f"{self._number(digest)}:claim", f"{self._number(digest)}:pending",
                f"{PREFIX}cb:{record.callback_id}", f"{PREFIX}pending",
                self._owned(record.agent_id)]
        # EVAL, not a registered script: inside MULTI a missing script (after a Redis
        # restart) would fail alone while the rest applied, and redis-py's guard against that
        # costs a SCRIPT EXISTS round trip per transaction. Redis caches it by hash anyway.
        pipe.eval(_COMMIT_CALLBACK, len(keys), *keys, token, record.callback_id,
                  record.scheduled_ms, ttl_s, *fields)

    def commit_callback(self, digest: str, token: str, record: LedgerRecord, ttl_s: int,
                        event: dict[str, str], history_ttl_s: int) -> None:
        """Put a created or queued callback in the ledger, the window and the number's
        evidence history, in one transaction; release the claim."""
        pipe = self._r.pipeline(transaction=True)
        self._commit_in(pipe, digest, token, record, ttl_s)
        self._append_history(pipe, digest, event, history_ttl_s)
        self._call(pipe.execute)

    def deliver_journaled(self, journaled: LedgerRecord, real: LedgerRecord, ttl_s: int,
                          event: dict[str, str], history_ttl_s: int) -> bool:
        """The journaled create now exists in Genesys: one atomic step puts the real record in
        its place (false, and nothing recorded, if the request was cancelled meanwhile)."""
        fields = [item for pair in real.to_fields().items() for item in pair]
        history = [item for pair in event.items() for item in pair]
        keys = [f"{PREFIX}cb:{journaled.callback_id}", f"{PREFIX}cb:{real.callback_id}",
                f"{self._number(real.number_key)}:pending", f"{PREFIX}pending",
                self._owned(real.agent_id), f"{self._number(journaled.number_key)}:pending",
                f"{self._number(real.number_key)}:history", f"{PREFIX}outbox",
                f"{PREFIX}outbox:{journaled.request_token}"]
        return bool(self._call(lambda: self._deliver(keys=keys, args=[
            journaled.callback_id, real.callback_id, real.scheduled_ms, ttl_s, history_ttl_s,
            journaled.request_token, len(fields), *fields, *history])))

    def queue_callback(self, digest: str, token: str, record: LedgerRecord, ttl_s: int,
                       event: dict[str, str] | None, history_ttl_s: int,
                       payload: dict[str, Any], first_attempt_ms: int,
                       counts: bool = True) -> None:
        """Journal a callback before (or instead of) its Genesys create: the ledger record (in
        the window), its history event and the outbox entry, in one transaction."""
        pipe = self._r.pipeline(transaction=True)
        self._commit_in(pipe, digest, token, record, ttl_s)
        if event is not None:
            self._append_history(pipe, digest, event, history_ttl_s)
        if counts:
            # Counted once per accepted request, for the per-number daily cap.
            pipe.zadd(f"{self._number(digest)}:created", {token: record.created_ms})
            pipe.pexpire(f"{self._number(digest)}:created", 86_400_000 + 3_600_000)
        pipe.hset(f"{PREFIX}outbox:{token}", mapping={"payload": json.dumps(payload),
                                                       "attempts": 0, "error": ""})
        pipe.zadd(f"{PREFIX}outbox", {token: first_attempt_ms})
        self._call(pipe.execute)

    def lease_outbox(self, now_ms: int, lease_ms: int, limit: int) -> list[OutboxEntry]:
        """Due outbox entries, each leased to the caller for ``lease_ms``."""
        tokens = cast(list[str], self._call(lambda: self._lease_outbox(
            keys=[f"{PREFIX}outbox"], args=[now_ms, lease_ms, limit])))
        return [e for e in (self.outbox_entry(t) for t in tokens) if e is not None]

    def outbox_entry(self, token: str) -> OutboxEntry | None:
        """One outbox (or dead-letter) entry."""
        raw = cast(dict[str, str], self._call(
            lambda: self._r.hgetall(f"{PREFIX}outbox:{token}")))
        if not raw:
            return None
        return OutboxEntry(token, json.loads(raw["payload"]), int(raw.get("attempts", 0)),
                           raw.get("error", ""))

    def retry_outbox(self, entry: OutboxEntry, next_ms: int, error: str,
                     payload: dict[str, Any]) -> None:
        """Count a failed attempt and schedule the next one."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}outbox:{entry.token}", mapping={
            "attempts": entry.attempts + 1, "error": error, "payload": json.dumps(payload)})
        pipe.zadd(f"{PREFIX}outbox", {entry.token: next_ms})
        self._call(pipe.execute)

    def uncount_creation(self, digest: str, token: str) -> None:
        """A journaled create Genesys refused does not count towards the daily cap."""
        self._call(lambda: self._r.zrem(f"{self._number(digest)}:created", token))

    def finish_outbox(self, token: str) -> None:
        """The entry was delivered (or abandoned): forget it."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(f"{PREFIX}outbox", token)
        pipe.delete(f"{PREFIX}outbox:{token}")
        self._call(pipe.execute)

    def flip_state(self, record: LedgerRecord, from_states: tuple[str, str], to: str) -> bool:
        """Change a record's state only if it is still one of ``from_states``."""
        return bool(self._call(lambda: self._flip_state(
            keys=[f"{PREFIX}cb:{record.callback_id}"], args=[*from_states, to])))

    def save_outbox_payload(self, token: str, payload: dict[str, Any]) -> None:
        """Rewrite an outbox entry's payload (e.g. to note an attempt is about to be sent)."""
        self._call(lambda: self._r.hset(f"{PREFIX}outbox:{token}", "payload",
                                        json.dumps(payload)))

    def defer_journaled(self, record: LedgerRecord, payload: dict[str, Any],
                        next_ms: int, event: dict[str, str], history_ttl_s: int) -> None:
        """A journaled create Genesys could not take now: QUEUED (unless cancelled meanwhile,
        when the worker only cleans up), next attempt at ``next_ms``."""
        self.flip_state(record, ("CREATING", "QUEUED"), "QUEUED")
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}outbox:{record.request_token}", "payload", json.dumps(payload))
        pipe.zadd(f"{PREFIX}outbox", {record.request_token: next_ms})
        self._append_history(pipe, record.number_key, event, history_ttl_s)
        self._call(pipe.execute)

    def dead_letter(self, entry: OutboxEntry, error: str, at_ms: int) -> None:
        """Move an entry that will not succeed by retrying to the dead letters (kept)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(f"{PREFIX}outbox", entry.token)
        pipe.hset(f"{PREFIX}outbox:{entry.token}", mapping={
            "attempts": entry.attempts + 1, "error": error})
        pipe.zadd(f"{PREFIX}dead", {entry.token: at_ms})
        self._call(pipe.execute)

    def dead_letters(self) -> list[OutboxEntry]:
        """Every dead letter, oldest first."""
        tokens = cast(list[str], self._call(lambda: self._r.zrange(f"{PREFIX}dead", 0, -1)))
        return [e for e in (self.outbox_entry(t) for t in tokens) if e is not None]

    def revive_dead_letter(self, token: str, now_ms: int) -> bool:
        """Put a dead letter back in the outbox with a fresh attempt count."""
        if not self._call(lambda: self._r.zscore(f"{PREFIX}dead", token)):
            return False
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(f"{PREFIX}dead", token)
        pipe.hset(f"{PREFIX}outbox:{token}", "attempts", 0)
        pipe.zadd(f"{PREFIX}outbox", {token: now_ms})
        self._call(pipe.execute)
        return True

    def outbox_stats(self, now_ms: int) -> tuple[int, int, int]:
        """``(outbox depth, age in ms of its oldest due entry, dead letters)``."""
        pipe = self._r.pipeline(transaction=False)
        pipe.zcard(f"{PREFIX}outbox")
        pipe.zrange(f"{PREFIX}outbox", 0, 0, withscores=True)
        pipe.zcard(f"{PREFIX}dead")
        depth, oldest, dead = cast(tuple[int, list[tuple[str, float]], int],
                                   tuple(self._call(pipe.execute)))
        age = max(0, now_ms - int(oldest[0][1])) if oldest else 0
        return int(depth), age, int(dead)

    def _append_history(self, pipe: Any, digest: str, event: dict[str, str],
                        ttl_s: int) -> None:
        key = f"{self._number(digest)}:history"
        pipe.xadd(key, event)
        pipe.expire(key, ttl_s)

    def append_history(self, digest: str, event: dict[str, str], ttl_s: int) -> None:
        """Add one event to the number's evidence history (kept ``ttl_s`` after the last)."""
        pipe = self._r.pipeline(transaction=True)
        self._append_history(pipe, digest, event, ttl_s)
        self._call(pipe.execute)

    def history(self, digests: tuple[str, ...]) -> list[dict[str, str]]:
        """Every evidence event of a number (under any PII key), in the order written."""
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.xrange(f"{self._number(digest)}:history")
        rows = cast(list[list[tuple[str, dict[str, str]]]], self._call(pipe.execute))
        events = [(entry_id, event) for row in rows for entry_id, event in row]
        return [event for _, event in sorted(events, key=lambda e: _stream_order(e[0]))]

    # -- consent records ----------------------------------------------------------------

    def save_consent(self, digest: str, record: dict[str, str], captured_ms: int,
                     lifts: bool, retention_s: int) -> None:
        """Store a consent or revocation record, its history event and the number's state.

        Records are append-only: a revocation is a new record, never an edit. ``lifts``
        marks a consent that may end an earlier revocation (one from ``record-consent``).
        """
        state = f"{self._number(digest)}:consent"
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}consent:{record['consentId']}", mapping=cast(Any, record))
        pipe.expire(f"{PREFIX}consent:{record['consentId']}", retention_s)
        if record["kind"] == "REVOCATION":
            pipe.hset(state, "revokedMs", captured_ms)
        elif lifts:
            pipe.hset(state, "liftedMs", captured_ms)
        pipe.expire(state, retention_s)
        self._append_history(pipe, digest, {"event": record["kind"].lower(), **record},
                             retention_s)
        self._call(pipe.execute)

    def consent(self, consent_id: str) -> dict[str, str] | None:
        """A consent or revocation record, or ``None``."""
        raw = self._call(lambda: self._r.hgetall(f"{PREFIX}consent:{consent_id}"))
        return cast(dict[str, str], raw) if raw else None

    def consent_state(self, digests: tuple[str, ...]) -> tuple[int, int]:
        """``(latest revocation ms, latest lifting consent capture ms)``, 0 when none."""
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.hmget(f"{self._number(digest)}:consent", "revokedMs", "liftedMs")
        rows = cast(list[list[str | None]], self._call(pipe.execute))
        revoked = max((int(r[0]) for r in rows if r[0]), default=0)
        lifted = max((int(r[1]) for r in rows if r[1]), default=0)
        return revoked, lifted

    def move_callback(self, record: LedgerRecord, scheduled_ms: int, ttl_s: int,
                      event: dict[str, str], history_ttl_s: int) -> None:
        """A pending callback got a new time: update its record, indexes, lifetimes (a later
        time must not let the record or the number's window expire early) and history."""
        pending = f"{self._number(record.number_key)}:pending"
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}cb:{record.callback_id}", "s", scheduled_ms)
        pipe.expire(f"{PREFIX}cb:{record.callback_id}", ttl_s)
        pipe.expire(pending, ttl_s, gt=True)
        pipe.zadd(pending, {record.callback_id: scheduled_ms}, xx=True)
        pipe.zadd(f"{PREFIX}pending", {record.callback_id: scheduled_ms}, xx=True)
        pipe.zadd(self._owned(record.agent_id), {record.callback_id: scheduled_ms}, xx=True)
        self._append_history(pipe, record.number_key, event, history_ttl_s)
        self._call(pipe.execute)

    @staticmethod
    def _owned(agent_id: str) -> str:
        # Callbacks that went to the queue have no owner; they share one set.
        return f"{PREFIX}agent:{agent_id or '-'}:pending"

    def pending_owned_counts(self, agent_ids: list[str], now_ms: int) -> dict[str, int]:
        """How many pending callbacks each agent owns here (the reassignment order)."""
        stale = now_ms - 8 * 86_400_000
        pipe = self._r.pipeline(transaction=False)
        for agent_id in agent_ids:
            # Entries whose records expired unreconciled would skew the order forever.
            pipe.zremrangebyscore(self._owned(agent_id), "-inf", stale)
            pipe.zcard(self._owned(agent_id))
        replies = cast(list[int], self._call(pipe.execute))
        return dict(zip(agent_ids, replies[1::2], strict=True))

    def due_between(self, start_ms: int, end_ms: int, limit: int) -> list[tuple[str, int]]:
        """Pending callbacks scheduled in ``[start, end]``, earliest first."""
        rows = cast(list[tuple[str, float]], self._call(lambda: self._r.zrangebyscore(
            f"{PREFIX}pending", start_ms, end_ms, start=0, num=limit, withscores=True)))
        return [(str(cid), int(score)) for cid, score in rows]

    def mark_replaced(self, record: LedgerRecord, replacement_id: str) -> None:
        """Note on a callback that a replacement exists and it only awaits its disconnect
        (``""``: the replacement failed and the callback stays as it was)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}cb:{record.callback_id}", "r", replacement_id)
        if replacement_id:
            pipe.sadd(f"{PREFIX}replacing", record.callback_id)
        else:
            pipe.srem(f"{PREFIX}replacing", record.callback_id)
        self._call(pipe.execute)

    def replaced_awaiting_disconnect(self, limit: int) -> list[str]:
        """Callbacks with a replacement whose own disconnect has not succeeded yet."""
        return [str(m) for m in cast(list[str], self._call(
            lambda: self._r.srandmember(f"{PREFIX}replacing", limit)))]

    def forget_replacement(self, callback_id: str) -> None:
        """Stop retrying the disconnect of a replaced callback (it has ended)."""
        self._call(lambda: self._r.srem(f"{PREFIX}replacing", callback_id))

    def take_rate_token(self, client: str, capacity: int, per_ms: float) -> int:
        """Take one token from the shared Genesys call budget; 0, or ms until one is free."""
        return int(self._call(lambda: self._take_token(
            keys=[f"{PREFIX}rate:{client}"], args=[capacity, per_ms])))

    def unindex(self, callback_id: str, digests: tuple[str, ...]) -> None:
        """Drop a callback id from the window's indexes (its record is gone or terminal)."""
        pipe = self._r.pipeline(transaction=True)
        for digest in digests:
            pipe.zrem(f"{self._number(digest)}:pending", callback_id)
        pipe.zrem(f"{PREFIX}pending", callback_id)
        self._call(pipe.execute)

    def callback(self, callback_id: str) -> LedgerRecord | None:
        """A callback of the ledger, or ``None``."""
        raw = self._call(lambda: self._r.hgetall(f"{PREFIX}cb:{callback_id}"))
        return LedgerRecord.from_fields(cast(dict[str, str], raw)) if raw else None

    def callbacks(self, callback_ids: list[str]) -> list[LedgerRecord]:
        """Several ledger records in one round trip, skipping those that are gone."""
        pipe = self._r.pipeline(transaction=False)
        for callback_id in callback_ids:
            pipe.hgetall(f"{PREFIX}cb:{callback_id}")
        rows = cast(list[dict[str, str]], self._call(pipe.execute))
        return [LedgerRecord.from_fields(row) for row in rows if row]

    def close_callback(self, record: LedgerRecord, state: str, at: str,
                       history_ttl_s: int | None) -> None:
        """Mark a callback terminal, take it out of the window and note it in the history
        (``history_ttl_s`` None: a bookkeeping step with nothing to show as evidence)."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state} is not a terminal state")
        keys = [f"{PREFIX}cb:{record.callback_id}", f"{self._number(record.number_key)}:pending",
                f"{PREFIX}pending", self._owned(record.agent_id)]
        pipe = self._r.pipeline(transaction=True)
        pipe.eval(_CLOSE_CALLBACK, len(keys), *keys, state, record.callback_id)
        pipe.srem(f"{PREFIX}replacing", record.callback_id)
        if history_ttl_s is not None:
            self._append_history(pipe, record.number_key, {
                "event": "callback-closed", "callbackId": record.callback_id, "state": state,
                "at": at}, history_ttl_s)
        self._call(pipe.execute)

    def pending_in_window(self, digests: tuple[str, ...], window_end_ms: int
                          ) -> list[tuple[str, int]]:
        """``(callback id, scheduled ms)`` of a number's pending callbacks, earliest first."""
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.zrangebyscore(f"{self._number(digest)}:pending", "-inf", window_end_ms,
                               withscores=True)
        rows = cast(list[list[tuple[str, float]]], self._call(pipe.execute))
        found = [(str(cid), int(score)) for row in rows for cid, score in row]
        return sorted(found, key=lambda item: (item[1], item[0]))

    def pending_page(self, after: tuple[int, str], limit: int) -> list[tuple[str, int]]:
        """The next pending callbacks after the cursor ``(scheduled ms, id)``, in order (for
        the worker); callbacks sharing a millisecond are ordered by id, none is skipped."""
        after_ms, after_id = after
        key = f"{PREFIX}pending"
        pipe = self._r.pipeline(transaction=False)
        pipe.zrangebyscore(key, after_ms, after_ms)
        pipe.zrangebyscore(key, f"({after_ms}", "+inf", start=0, num=limit, withscores=True)
        ties, rest = cast(tuple[list[str], list[tuple[str, float]]], tuple(
            self._call(pipe.execute)))
        page = [(str(cid), after_ms) for cid in ties if str(cid) > after_id]
        page += [(str(cid), int(score)) for cid, score in rest]
        return page[:limit]

    def forget_pending(self, callback_ids: list[str]) -> None:
        """Drop ids from the worker's index whose ledger records have expired."""
        self._call(lambda: self._r.zrem(f"{PREFIX}pending", *callback_ids))

    def reconcile_cursor(self) -> tuple[int, str]:
        """Where the worker's last reconciliation page stopped: ``(scheduled ms, id)``."""
        raw = self._call(lambda: self._r.get(f"{PREFIX}reconcile-cursor"))
        if not raw:
            return -1, ""
        ms, _, callback_id = cast(str, raw).partition(" ")
        return int(ms), callback_id

    def save_reconcile_cursor(self, after: tuple[int, str]) -> None:
        """Remember where the next reconciliation page starts (``(-1, "")``: the beginning)."""
        self._call(lambda: self._r.set(f"{PREFIX}reconcile-cursor", f"{after[0]} {after[1]}"))

    # -- idempotency keys ---------------------------------------------------------------

    def begin_idempotent(self, scope: str, fingerprint: str, owner: str, lease_ms: int
                         ) -> tuple[str, str]:
        """``(NEW|REPLAY|MISMATCH|INFLIGHT, stored answer or ms left in flight)``."""
        reply = self._call(lambda: self._begin_idempotent(
            keys=[f"{PREFIX}idem:{scope}"], args=[fingerprint, owner, lease_ms]))
        return str(reply[0]), str(reply[1]) if len(reply) > 1 else ""

    def finish_idempotent(self, scope: str, owner: str, answer: str, ttl_s: int) -> None:
        """Store the answer for replays (``answer`` empty: forget the key altogether)."""
        self._call(lambda: self._finish_idempotent(
            keys=[f"{PREFIX}idem:{scope}"], args=[owner, answer, ttl_s]))


@dataclass(frozen=True)
class OutboxEntry:
    """A create accepted while Genesys was unreachable: what to send and what happened."""

    token: str
    payload: dict[str, Any]
    attempts: int
    error: str


def _stream_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class WindowClaim:
    """``CLAIMED`` (go ahead), ``DUPLICATE`` (``callback_id`` pending) or ``BUSY`` (in flight)."""

    status: str
    callback_id: str = ""
    value_ms: int = 0


@dataclass(frozen=True)
class LedgerRecord:
    """One callback created or queued here: all that duplicates, cancel and the worker need."""

    callback_id: str
    number_key: str
    scheduled_ms: int
    agent_id: str
    queue_id: str
    state: str
    acd_id: str
    request_token: str
    created_ms: int
    consent_id: str = ""
    e164: str = ""
    replaced_by: str = ""

    # Short field names: a pending callback must stay well under 512 bytes of Redis.
    _FIELDS: ClassVar[dict[str, str]] = {
        "callback_id": "id", "number_key": "n", "scheduled_ms": "s", "agent_id": "a",
        "queue_id": "q", "state": "st", "acd_id": "x", "request_token": "t",
        "created_ms": "c", "consent_id": "k", "e164": "e", "replaced_by": "r",
    }

    def to_fields(self) -> dict[str, str | int]:
        """The Redis hash of this record."""
        return {short: getattr(self, name) for name, short in self._FIELDS.items()}

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> LedgerRecord:
        """Read a record back from its Redis hash."""
        values: dict[str, Any] = {name: raw.get(short, "") for name, short in cls._FIELDS.items()}
        values["scheduled_ms"] = int(values["scheduled_ms"] or 0)
        values["created_ms"] = int(values["created_ms"] or 0)
        return cls(**values)

    @property
    def pending(self) -> bool:
        """Whether it still counts in the duplicate window."""
        return self.state in PENDING_STATES

    @property
    def in_genesys(self) -> bool:
        """Whether Genesys holds it (a queued or journaled one does not, yet)."""
        return self.state == "PENDING"
