"""Consent and revocation records, and each number's consent state."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from middleware.store import keys
from middleware.store.client import StoreBase


class ConsentStore(StoreBase):
    """Consent records and each number's revocation epoch."""

    SCRIPTS: ClassVar[dict[str, str]] = {
    }

    def save_consent(self, digest: str, record: dict[str, str], captured_ms: int,
                     lifts: bool, retention_s: int) -> None:
        """Store a consent or revocation record, its history event and the number's state.

        Records are append-only: a revocation is a new record, never an edit. ``lifts``
        marks a consent that may end an earlier revocation (one from ``record-consent``).
        """
        state = keys.consent_state(digest)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(keys.consent(record['consentId']), mapping=cast(Any, record))
        pipe.expire(keys.consent(record['consentId']), retention_s)
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
        raw = self._call(lambda: self._r.hgetall(keys.consent(consent_id)))
        return cast(dict[str, str], raw) if raw else None

    def consent_state(self, digests: tuple[str, ...]) -> tuple[int, int]:
        """``(latest revocation ms, latest lifting consent capture ms)``, 0 when none."""
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.hmget(keys.consent_state(digest), "revokedMs", "liftedMs")
        rows = cast(list[list[str | None]], self._call(pipe.execute))
        revoked = max((int(r[0]) for r in rows if r[0]), default=0)
        lifted = max((int(r[1]) for r in rows if r[1]), default=0)
        return revoked, lifted

