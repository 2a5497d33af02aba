"""The ledger's records: a callback's state (an enum), its record and the outbox payload.

Pure data, no Redis: the store reads and writes these shapes, the lifecycle decides when.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final


class State(StrEnum):
    """Where a callback is in its life. Pending states count in the duplicate window."""

    #: Journaled before the Genesys create, so a crash mid-create can be resolved.
    CREATING = "CREATING"
    #: Accepted, waiting in the outbox for Genesys.
    QUEUED = "QUEUED"
    #: Live in Genesys.
    PENDING = "PENDING"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    DISCONNECTED = "DISCONNECTED"
    #: Replaced by a callback for a new owner (``replaced_by``), then disconnected.
    REASSIGNED = "REASSIGNED"
    DEAD_LETTER = "DEAD_LETTER"


#: Record fields left out of the stored hash: the id is the key's, ``n`` is ``ns``' first.
_IMPLIED: Final = frozenset({"id", "n"})

PENDING_STATES: Final = frozenset({State.PENDING, State.QUEUED, State.CREATING})
TERMINAL_STATES: Final = frozenset(set(State) - PENDING_STATES)


@dataclass(frozen=True)
class LedgerRecord:
    """One callback created or queued here: all that duplicates, cancel and the worker need.

    ``version`` counts the record's changes: a transition that read version ``v`` commits
    only while it is still ``v``. ``number_keys`` are every digest the number's window is
    kept under (see ``numbers.NumberKeys``); ``number_key`` is the first.
    """

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
    replaces: str = ""
    version: int = 0
    number_keys: tuple[str, ...] = field(default=())
    #: A cancel was sent for it: if it ends in Genesys unanswered, it ended cancelled.
    cancel_asked: bool = False
    #: Cancelled here (by a revocation, or a cancel that met its create) while Genesys did
    #: not take the disconnect yet: the worker retries it, and until then the number's
    #: window stays blocked, so no second callback can be live beside it.
    disconnecting: bool = False
    #: When a reschedule's PATCH was sent unconfirmed (ms; 0: none in doubt).
    reschedule_asked_ms: int = 0

    # Short field names, and no field that is empty or repeats the key (the id) or ``ns``
    # (the first digest): every pending callback pays for each byte.
    _FIELDS: ClassVar[dict[str, str]] = {
        "callback_id": "id", "number_key": "n", "scheduled_ms": "s", "agent_id": "a",
        "queue_id": "q", "state": "st", "acd_id": "x", "request_token": "t",
        "created_ms": "c", "consent_id": "k", "e164": "e", "replaced_by": "r",
        "replaces": "rf",
    }

    def to_fields(self) -> dict[str, str | int]:
        """The Redis hash of this record (``v``, ``cx`` and ``rx`` are kept by the store's
        steps alone)."""
        fields: dict[str, str | int] = {
            short: str(getattr(self, name)) if name == "state" else getattr(self, name)
            for name, short in self._FIELDS.items()
            if short not in _IMPLIED and getattr(self, name) != ""}
        fields["ns"] = ",".join(self.digests)
        return fields

    @classmethod
    def from_fields(cls, raw: dict[str, str], callback_id: str = "") -> LedgerRecord:
        """Read a record back from its Redis hash (``callback_id``: its key's id, for
        records that do not repeat it)."""
        values: dict[str, Any] = {name: raw.get(short, "") for name, short in cls._FIELDS.items()}
        values["callback_id"] = values["callback_id"] or callback_id
        values["number_key"] = values["number_key"] or raw.get("ns", "").split(",")[0]
        values["scheduled_ms"] = int(values["scheduled_ms"] or 0)
        values["created_ms"] = int(values["created_ms"] or 0)
        values["state"] = State(values["state"]) if values["state"] in State.__members__ \
            else values["state"]
        values["version"] = int(raw.get("v") or 0)
        values["cancel_asked"] = bool(raw.get("cx"))
        values["disconnecting"] = bool(raw.get("dx"))
        values["reschedule_asked_ms"] = int(raw.get("rx") or 0)
        values["number_keys"] = tuple(d for d in raw.get("ns", "").split(",") if d)
        return cls(**values)

    @property
    def digests(self) -> tuple[str, ...]:
        """Every digest the number's window entries of this record are written under."""
        return self.number_keys or ((self.number_key,) if self.number_key else ())

    @property
    def shard(self) -> str:
        """The store shard of its number (``NumberKeys``: a digest's first character)."""
        return self.number_key[:1]

    @property
    def pending(self) -> bool:
        """Whether it still counts in the duplicate window."""
        return self.state in PENDING_STATES

    @property
    def in_genesys(self) -> bool:
        """Whether Genesys holds it (a queued or journaled one does not, yet)."""
        return self.state == State.PENDING


#: Evidence history events as Redis keeps them: a short code per kind and a short name per
#: field (``evidence.expand_events`` gives people the names on the left back).
EVENT_KINDS: Final = {
    "callback": "cb", "callback-queued": "cq", "callback-rescheduled": "cr",
    "callback-reassigned": "ca", "callback-closed": "cc", "consent": "co", "revocation": "rv"}
EVENT_FIELDS: Final = {
    "event": "e", "at": "t", "callbackId": "i", "state": "st", "consentId": "k",
    "agentId": "a", "queueId": "q", "scheduledMs": "s", "replaces": "rf"}
#: The state a callback event's kind implies, so the stored event leaves it out.
IMPLIED_STATES: Final = {"cb": "PENDING", "cq": "QUEUED"}


def history_event(kind: str, at_ms: int, **fields: str | int) -> dict[str, str | int]:
    """One evidence event as kept: short names, epoch ms, no empty field and no state its
    kind implies (``fields`` use the SPEC names of ``EVENT_FIELDS``)."""
    code = EVENT_KINDS[kind]
    event: dict[str, str | int] = {"e": code, "t": at_ms}
    for name, value in fields.items():
        if value == "" or (name == "state" and IMPLIED_STATES.get(code) == str(value)):
            continue
        event[EVENT_FIELDS[name]] = str(value) if name == "state" else value
    return event


@dataclass(frozen=True)
class OutboxPayload:
    """What the outbox keeps for one accepted create: the exact command and its story.

    ``may_have_run``: an attempt may have reached Genesys, so the next one looks for the
    token before creating. ``revocation_epoch``: the number's epoch at the consent check
    (``-1``: not checked yet, e.g. a replayed dead letter checks again).
    """

    command: dict[str, Any]
    ledger_id: str
    e164: str
    may_have_run: bool
    accepted_ms: int
    revocation_epoch: int = -1
    replaces: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object kept in Redis."""
        return {"command": self.command, "ledgerId": self.ledger_id, "e164": self.e164,
                "mayHaveRun": self.may_have_run, "acceptedMs": self.accepted_ms,
                "revocationEpoch": self.revocation_epoch, "replaces": self.replaces}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OutboxPayload:
        """Read a payload back (entries written before a field existed get its default)."""
        return cls(dict(raw["command"]), str(raw["ledgerId"]), str(raw["e164"]),
                   bool(raw.get("mayHaveRun")), int(raw.get("acceptedMs") or 0),
                   int(raw.get("revocationEpoch", -1)), str(raw.get("replaces") or ""))
