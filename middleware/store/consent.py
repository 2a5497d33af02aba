"""Consent and revocation records, and each number's consent state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, cast

from middleware.store import keys
from middleware.store.client import StoreBase, event_json
from middleware.store.packed import with_layer

#: A consent record's fields as Redis keeps them (SPEC names on the left, which ``consent``
#: answers with). The id is the key's, times are epoch ms, and empty fields are left out:
#: each record is kept CONSENT_RETENTION_DAYS.
_SHORT: Final = {
    "kind": "k", "numberKey": "n", "number": "e", "customerName": "nm",
    "consentSource": "src", "capturedAt": "c", "consentText": "tx", "conversationId": "cv",
    "agentId": "a", "recordedAt": "r", "via": "v"}
_LONG: Final = {short: name for name, short in _SHORT.items()}
_TIMES: Final = frozenset({"capturedAt", "recordedAt"})


def _stored(record: Mapping[str, str]) -> dict[str, str | int]:
    fields: dict[str, str | int] = {}
    for name, value in record.items():
        if name not in _SHORT or value == "":
            continue
        fields[_SHORT[name]] = int(datetime.fromisoformat(value).timestamp() * 1000) \
            if name in _TIMES else value
    return fields


def _read(consent_id: str, raw: dict[str, str]) -> dict[str, str]:
    if "kind" in raw:
        return raw  # written before the short names
    record = {"consentId": consent_id, **dict.fromkeys(_SHORT, "")}
    for short, value in raw.items():
        name = _LONG.get(short, short)
        record[name] = datetime.fromtimestamp(int(value) / 1000, UTC).isoformat(
            timespec="milliseconds") if name in _TIMES else value
    return record

# A revocation is ordered by when it was stored, never by the capture time it states: one
# counter per shard (a number's records are all in one, and only one number's are ever
# compared) numbers every revocation and lifting consent, and a number is
# revoked while its latest revocation outnumbers its latest lifting consent (and a consent
# lifts only when also captured after the revocation). The revocation
# number is also the epoch a create reads at its consent check and its journal compares.
# The record keeps its number too ('seq'), so evidence can show the order that counted.
# The record, its history event and the state are written in this one step, and only once:
# a record already there means Redis applied an earlier try whose reply was lost.
# KEYS[1] the counter, KEYS[2] the record, KEYS[3] the number's history, KEYS[4] the
# journal record a guarded consent waits for (unguarded: the record again), KEYS[5..] the
# number's state under each digest.
# ARGV: the guard's request token ('': unguarded), REVOCATION | LIFT | '' (a consent that
# lifts nothing), captured ms, ttl s, the history event (JSON), then the record's
# field/value pairs.
# A guarded consent (a create's own, sent after its journal in one transaction) is stored
# only if the journal took, so a create refused there leaves no consent behind.
_STORE_CONSENT_STATE: Final = with_layer("""
if ARGV[1] ~= '' and R_get(KEYS[4], 't') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return tonumber(redis.call('HGET', KEYS[2], 'seq')) end
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'seq', seq, unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[2], ARGV[4])
_history(KEYS[3], ARGV[5], ARGV[4])
-- The number's latest revocation under any digest: one stored by an instance on an older
-- PII_KEYS list is under fewer digests, and must still hold against a consent before it.
local revoked = 0
for i = 5, #KEYS do
  revoked = math.max(revoked, tonumber(redis.call('HGET', KEYS[i], 'revokedMs') or '0'))
end
for i = 5, #KEYS do
  if ARGV[2] == 'REVOCATION' then
    redis.call('HSET', KEYS[i], 'revokedMs', ARGV[3], 'revokedSeq', seq)
  elseif ARGV[2] == 'LIFT' and tonumber(ARGV[3]) > revoked then
    redis.call('HSET', KEYS[i], 'liftedMs', ARGV[3], 'liftedSeq', seq)
  end
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return seq
""")


class ConsentStore(StoreBase):
    """Consent records and each number's revocation epoch."""

    SCRIPTS: ClassVar[dict[str, str]] = {}

    def save_consent(self, digests: tuple[str, ...], record: dict[str, str], captured_ms: int,
                     lifts: bool, retention_s: int, event: Mapping[str, str | int]) -> None:
        """Store a consent or revocation record, its history ``event`` and the number's
        state.

        Records are append-only: a revocation is a new record, never an edit. ``lifts``
        marks a consent that may end an earlier revocation (one from ``record-consent``).
        The state is written under every digest of the number, so instances on an older or
        newer ``PII_KEYS`` list read the same one.
        """
        # One script by its hash (``_steps``), as the create's journal step runs it.
        self._steps("save-consent", [(_STORE_CONSENT_STATE, *self._consent_step(
            digests, record, captured_ms, lifts, retention_s, event))])

    @staticmethod
    def _consent_step(digests: tuple[str, ...], record: dict[str, str], captured_ms: int,
                      lifts: bool, retention_s: int, event: Mapping[str, str | int],
                      journaled: tuple[str, str] | None = None,
                      ) -> tuple[list[str], list[str | int]]:
        """The consent script's keys and arguments; with ``journaled`` (the journal record's
        key and request token, run before it in the same step) it acts only if that journal
        took."""
        kind = "REVOCATION" if record["kind"] == "REVOCATION" else "LIFT" if lifts else ""
        shard = keys.shard_of(digests[0])
        key = keys.consent(shard, record['consentId'])
        guard_key, guard_token = journaled if journaled is not None else (key, "")
        names = [keys.consent_seq(shard), key, keys.events(digests[0]), guard_key,
                 *(keys.consent_state(d) for d in digests)]
        fields = [item for pair in _stored(record).items() for item in pair]
        return names, [guard_token, kind, captured_ms, retention_s, event_json(event), *fields]

    def consent(self, shard: str, consent_id: str) -> dict[str, str] | None:
        """A consent or revocation record of a number of ``shard``, or ``None``."""
        raw = cast(dict[str, str], self._call(
            lambda: self._r.hgetall(keys.consent(shard, consent_id))))
        return _read(consent_id, raw) if raw else None

    def consents(self, shard: str, consent_ids: list[str]) -> dict[str, dict[str, str]]:
        """Several consent records by id in one round trip (those that are gone left out)."""
        pipe = self._r.pipeline(transaction=False)
        for consent_id in consent_ids:
            pipe.hgetall(keys.consent(shard, consent_id))
        rows = cast(list[dict[str, str]], self._call(pipe.execute))
        return {cid: _read(cid, raw) for cid, raw in zip(consent_ids, rows, strict=True)
                if raw}

    def number_facts(self, digests: tuple[str, ...], consent_id: str, now_ms: int,
                     window_end_ms: int) -> NumberFacts:
        """What a create checks first, in one round trip: the number's accepted creates of
        the last 24 hours, its revocation state, the consent record ``consent_id`` of its
        shard (``""``: none asked) and whether any callback is indexed pending in its window
        (a read only: the claim decides)."""
        shard = keys.shard_of(digests[0])

        def build(pipe: Any) -> None:
            for digest in digests:
                pipe.zrangebyscore(keys.created(digest), f"({now_ms - 86_400_000}", "+inf")
            for digest in digests:
                pipe.hmget(keys.consent_state(digest), "revokedSeq", "liftedSeq")
            self._queue_script(pipe, "_window_pending", [keys.pending(d) for d in digests],
                               [window_end_ms, 1])
            if consent_id:
                pipe.hgetall(keys.consent(shard, consent_id))

        rows = self._reads(["_window_pending"], build)
        n = len(digests)
        created = len({token for row in rows[:n] for token in row})
        states = cast(list[list[str | None]], rows[n:2 * n])
        revoked = max((int(r[0]) for r in states if r[0]), default=0)
        lifted = max((int(r[1]) for r in states if r[1]), default=0)
        indexed = bool(rows[2 * n])
        raw = cast(dict[str, str], rows[2 * n + 1]) if consent_id else {}
        return NumberFacts(created, revoked, lifted, _read(consent_id, raw) if raw else None,
                           indexed)

    def consent_state(self, digests: tuple[str, ...]) -> tuple[int, int]:
        """``(revocation epoch, lifting epoch)``: the store order of the latest revocation and
        of the latest lifting consent (0 when none). Revoked while the first is larger."""
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.hmget(keys.consent_state(digest), "revokedSeq", "liftedSeq")
        rows = cast(list[list[str | None]], self._call(pipe.execute))
        revoked = max((int(r[0]) for r in rows if r[0]), default=0)
        lifted = max((int(r[1]) for r in rows if r[1]), default=0)
        return revoked, lifted


@dataclass(frozen=True)
class NumberFacts:
    """A number's daily count, revocation state and one consent record, read together."""

    created_today: int
    revoked: int
    lifted: int
    consent: dict[str, str] | None
    #: A callback is indexed pending in the window (it may have ended since).
    pending_indexed: bool = False


@dataclass(frozen=True)
class ConsentWrite:
    """A consent to store (``ConsentStore.save_consent``'s arguments), for a step that
    stores it together with something else."""

    digests: tuple[str, ...]
    record: dict[str, str]
    captured_ms: int
    lifts: bool
    retention_s: int
    event: Mapping[str, str | int]
