"""Consent you can prove: the consent ledger, the consent rule of create, revocation, evidence.

Every consent and every revocation is a record, kept ``CONSENT_RETENTION_DAYS``: the
number (keyed by HMAC; the number itself is kept inside the record, as evidence must
name it), name, source, capture time, wording, conversation and agent. Records are
append-only: a revocation is a new record, never an edit. Each number also has an
evidence history (consents, revocations, callbacks made and closed) in time order.

The rule of ``create-callback``, first failure wins (SPEC §3.8):
``CONSENT_MISSING`` (``consentGiven`` not true) > ``CONSENT_NOT_FOUND`` (unknown
``consentId`` or another number's) > ``CONSENT_REVOKED`` (revoked, and no consent
recorded with ``record-consent`` captured after the revocation; consent fields inside a
create never lift it) > ``CONSENT_STALE`` (captured more than 5 minutes in the future or
more than ``CONSENT_MAX_AGE_HOURS`` ago).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.errors import UpstreamError
from middleware.ledger.lifecycle import Lifecycle, epoch_ms
from middleware.ledger.records import LedgerRecord
from middleware.rules.number import CustomerNumber, NumberKeys, invalid_number_message, number_of
from middleware.rules.time import format_utc, parse_instant
from middleware.store import Store

log = logging.getLogger(__name__)

CLOCK_SKEW: Final = timedelta(minutes=5)
_ID_CHARS: Final = frozenset("0123456789abcdef-")


@dataclass(frozen=True)
class ConsentDecision:
    """``reason`` is ``OK`` when the create may proceed; ``consent_id`` names the record
    relied on (empty for consent given inside the create: recorded when it is used)."""

    reason: str
    message: str
    consent_id: str = ""
    captured: datetime | None = None
    #: The number's revocation epoch when checked: a revocation stored later changes it.
    epoch: int = 0


class ConsentLedger:
    """Consent records and the consent rule, over the store."""

    def __init__(self, store: Store, keys: NumberKeys, clock: Clock, max_age: timedelta,
                 retention: timedelta) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock
        self._max_age = max_age
        self._retention_s = int(retention.total_seconds())

    def check(self, fields: dict[str, Any], number: CustomerNumber) -> ConsentDecision:
        """Apply the consent rule for a create; nothing is written."""
        if fields.get("consentGiven") is not True:
            return ConsentDecision("CONSENT_MISSING", "The customer has not consented to a "
                                   "callback (consentGiven must be true); nothing was created.")
        now = self._clock.now()
        consent_id = str(fields.get("consentId") or "")
        captured: datetime | None
        if consent_id:
            record = self._record_for(consent_id, number)
            if record is None:
                return ConsentDecision("CONSENT_NOT_FOUND", "No consent with this consentId "
                                       "was recorded for this number.")
            captured = parse_instant(record["capturedAt"])
        else:
            text = str(fields.get("consentCapturedAt") or "")
            captured = parse_instant(text) if text else now
            if captured is None:
                return ConsentDecision("INVALID_TIME", "consentCapturedAt is not an ISO-8601 "
                                       "instant with offset, so the consent cannot be dated.")
        revoked, lifted = self._store.consent_state(self._keys.all(number.e164))
        if revoked > lifted:
            return ConsentDecision("CONSENT_REVOKED", "The customer withdrew consent for "
                                   "callbacks; record new consent with record-consent first.")
        if captured is None or captured > now + CLOCK_SKEW:
            return ConsentDecision("CONSENT_STALE", "The consent's capture time lies in the "
                                   "future.")
        if captured < now - self._max_age:
            hours = int(self._max_age.total_seconds() // 3600)
            return ConsentDecision("CONSENT_STALE", f"The consent was captured more than "
                                   f"{hours} hours ago; capture it again.")
        return ConsentDecision("OK", "", consent_id, captured, revoked)

    def _record_for(self, consent_id: str, number: CustomerNumber) -> dict[str, str] | None:
        if len(consent_id) > 64 or not set(consent_id.lower()) <= _ID_CHARS:
            return None
        record = self._store.consent(consent_id)
        if record is None or record.get("kind") != "CONSENT":
            return None
        if record.get("numberKey") not in self._keys.all(number.e164):
            return None
        return record

    def record(self, number: CustomerNumber, fields: dict[str, Any], captured: datetime,
               via: str, kind: str = "CONSENT") -> str:
        """Store a consent (or revocation) record; return its id."""
        consent_id = str(uuid.uuid4())
        digest = self._keys.current(number.e164)
        record = {
            "consentId": consent_id, "kind": kind, "numberKey": digest,
            "number": number.e164, "customerName": str(fields.get("customerName") or ""),
            "consentSource": str(fields.get("consentSource") or ""),
            "capturedAt": captured.isoformat(timespec="milliseconds"),
            "consentText": str(fields.get("consentText") or ""),
            "conversationId": str(fields.get("conversationId") or ""),
            "agentId": str(fields.get("agentId") or ""),
            "recordedAt": self._clock.now().isoformat(timespec="milliseconds"),
            "via": via,
        }
        # Only a consent stored on its own (record-consent) may end a revocation.
        self._store.save_consent(self._keys.all(number.e164), record, epoch_ms(captured),
                                 lifts=(via == "record-consent"), retention_s=self._retention_s)
        log.info("consent recorded", extra={"consentId": consent_id, "kind": kind, "via": via,
                                            "number": number.masked})
        return consent_id

    def evidence(self, number: CustomerNumber) -> list[dict[str, str]]:
        """Every consent, revocation and callback event of the number, in time order."""
        return self._store.history(self._keys.all(number.e164))


Canceller = Callable[[LedgerRecord, RequestContext], str]


class ConsentService:
    """The ``record-consent`` and ``revoke-consent`` actions."""

    def __init__(self, ledger: ConsentLedger, lifecycle: Lifecycle, cancel: Canceller,
                 contracts: dict[str, Contract], default_country: str, clock: Clock) -> None:
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._cancel = cancel
        self._record_out = contracts["record-consent"]
        self._revoke_out = contracts["revoke-consent"]
        self._country = default_country
        self._clock = clock

    def record_consent(self, fields: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """Store a consent captured now or earlier (never in the future)."""
        answer = self._record_out.answer
        number = number_of(fields, self._country)
        if number is None:
            return answer(outcome="REJECTED", reason="INVALID_NUMBER", requestId=ctx.request_id,
                          message=invalid_number_message(fields, self._country))
        now = self._clock.now()
        text = str(fields.get("consentCapturedAt") or "")
        captured = parse_instant(text) if text else now
        if captured is None:
            return answer(outcome="REJECTED", reason="INVALID_TIME", requestId=ctx.request_id,
                          message="consentCapturedAt must be an ISO-8601 instant with offset.")
        if captured > now + CLOCK_SKEW:
            return answer(outcome="REJECTED", reason="CONSENT_STALE", requestId=ctx.request_id,
                          message="consentCapturedAt lies in the future.")
        consent_id = self._ledger.record(number, fields, captured, via="record-consent")
        return answer(outcome="RECORDED", reason="OK", requestId=ctx.request_id,
                      consentId=consent_id, customerNumberE164=number.e164,
                      message=f"Consent recorded, captured {format_utc(captured)}.")

    def revoke_consent(self, fields: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """Record the withdrawal; with ``cancelPending`` disconnect the pending callbacks."""
        answer = self._revoke_out.answer
        number = number_of(fields, self._country)
        if number is None:
            return answer(outcome="REJECTED", reason="INVALID_NUMBER", requestId=ctx.request_id,
                          message=invalid_number_message(fields, self._country))
        consent_id = self._ledger.record(number, fields, self._clock.now(),
                                         via="revoke-consent", kind="REVOCATION")
        common = {"requestId": ctx.request_id, "consentId": consent_id,
                  "customerNumberE164": number.e164}
        if fields.get("cancelPending", True) is False:
            return answer(outcome="REVOKED", reason="OK", **common,
                          message="Consent withdrawn; pending callbacks were left as they are.")
        pending = self._lifecycle.pending(number, window_only=False)
        cancelled, failed = 0, 0
        for record in pending:
            try:
                self._cancel(record, ctx)
                cancelled += 1
            except UpstreamError as exc:
                failed += 1
                self._lifecycle.cancel_later(record)
                log.warning("revoke could not cancel a callback",
                            extra={"callbackId": record.callback_id, "error": exc.message})
        if failed:
            return answer(outcome="REVOKED", reason="UPSTREAM_UNAVAILABLE", **common,
                          cancelledCount=cancelled,
                          message=f"Consent withdrawn; {failed} of {len(pending)} pending "
                          "callback(s) could not be cancelled yet. Retry to cancel them.")
        return answer(outcome="REVOKED", reason="OK", **common, cancelledCount=cancelled,
                      message=f"Consent withdrawn; {cancelled} pending callback(s) cancelled.")
