"""Idempotency keys with Stripe's semantics for stored answers (CREATED, QUEUED, DUPLICATE).

Same key and same body replays the first answer (``replayed: true``, a fresh
``requestId``) without touching Genesys; a different body is 422; a request still in
flight is 409 with ``Retry-After``. A REJECTED answer is never stored, so a corrected
retry is served afresh. Keys are scoped to the calling credential and kept at least
``DUPLICATE_WINDOW_HOURS``.

Without an explicit key, a request that names its ``conversationId`` gets one derived
from conversation, agent, number and requested time: the retry Genesys makes after a
timeout then replays instead of creating again. A derived key's fingerprint is that same
material, so a retry that only changes, say, the notes replays the first answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Final

from middleware.errors import ContractViolation, IdempotencyInFlight, IdempotencyMismatch
from middleware.store import Store

STORED_OUTCOMES: Final = frozenset({"CREATED", "QUEUED", "DUPLICATE"})
_MAX_KEY: Final = 255


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class IdempotencyKey:
    """Where the answer is kept (scoped to the credential) and what the body must match."""

    scope: str
    fingerprint: str
    #: Derived from the conversation (the caller sent no key).
    derived: bool = False


def key_for(fields: dict[str, Any], header: str, credential: str, e164: str
            ) -> IdempotencyKey | None:
    """The request's key: the explicit one, else one derived from its conversation, or none."""
    given = str(fields.get("idempotencyKey") or "")
    if header and given and header != given:
        raise ContractViolation("Idempotency-Key header and idempotencyKey field differ.")
    explicit = header or given
    if len(explicit) > _MAX_KEY:
        raise ContractViolation(f"The idempotency key exceeds {_MAX_KEY} characters.")
    if explicit:
        body = {k: v for k, v in fields.items() if k != "idempotencyKey"}
        fingerprint = _sha(json.dumps(body, sort_keys=True, default=str))
        return IdempotencyKey(_sha(f"{credential}\0key\0{explicit}")[:32], fingerprint)
    if not fields.get("conversationId"):
        return None
    material = "\0".join(str(fields.get(k) or "") for k in (
        "conversationId", "agentId", "requestedTime", "requestedLocalTime", "timeZone"))
    material += "\0" + e164
    return IdempotencyKey(_sha(f"{credential}\0derived\0{material}")[:32], _sha(material),
                          derived=True)


@dataclass(frozen=True)
class Started:
    """``replay`` holds the stored answer when this request repeats a finished one."""

    replay: dict[str, Any] | None = None


class IdempotencyGate:
    """Begins and finishes idempotent requests in Redis."""

    def __init__(self, store: Store, lease_ms: int, keep_s: int) -> None:
        self._store = store
        self._lease_ms = lease_ms
        self._keep_s = keep_s

    def begin(self, key: IdempotencyKey, owner: str) -> Started:
        """Start the request, or return the answer to replay; 409/422 as the key demands."""
        status, value = self._store.begin_idempotent(key.scope, key.fingerprint, owner,
                                                     self._lease_ms)
        if status == "MISMATCH":
            raise IdempotencyMismatch("This idempotency key was used with a different body.")
        if status == "INFLIGHT":
            wait = max(1, -(-int(value or 0) // 1000)) if value else 1
            raise IdempotencyInFlight("A request with this idempotency key is in progress.",
                                      retry_after_s=min(wait, 5))
        if status == "REPLAY":
            return Started(replay=json.loads(value))
        return Started()

    def take_over(self, key: IdempotencyKey, owner: str, replay: dict[str, Any]) -> bool:
        """Serve a derived key afresh because the answer it would replay has ended: true when
        this request now holds the key (false: another request took it first)."""
        return self._store.take_over_idempotent(key.scope, json.dumps(replay), owner,
                                                self._lease_ms)

    def lease_left_s(self, since: float) -> int:
        """Whole seconds, rounded up, until an in-flight lease taken at ``since``
        (``time.monotonic()`` read after it was taken) ends on its own."""
        return max(0, math.ceil(self._lease_ms / 1000 - (time.monotonic() - since)))

    def finish(self, key: IdempotencyKey, owner: str, answer: dict[str, Any],
               taken_over: dict[str, Any] | None = None) -> None:
        """Keep a stored-outcome answer for replays; forget the key otherwise. A request
        that took the key over (``taken_over``: the answer it found) and has no answer to
        store puts that one back: a retry then asks again whether its callback ended,
        rather than running as a new request that the window alone would not stop."""
        if taken_over is not None and answer.get("outcome") not in STORED_OUTCOMES:
            answer = taken_over
        keep = answer.get("outcome") in STORED_OUTCOMES
        self._store.finish_idempotent(key.scope, owner, json.dumps(answer) if keep else "",
                                      self._keep_s)
