"""Consent you can prove: the consent ledger, record-consent and revoke-consent.

Every consent and every revocation is a record, kept ``CONSENT_RETENTION_DAYS``: the
number (keyed by HMAC; the number itself is kept inside the record, as evidence must
name it), name, source, capture time, wording, conversation and agent. Records are
append-only: a revocation is a new record, never an edit. Each number also has an
evidence history (consents, revocations, callbacks made and closed) in time order.

The consent rule of a create is ``rules/consent.py``; this module reads what it needs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from middleware.actions.answers import Superseded
from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.errors import UpstreamError
from middleware.evidence import expand_events
from middleware.ledger.lifecycle import Lifecycle, epoch_ms
from middleware.ledger.records import LedgerRecord, history_event
from middleware.rules.consent import (
    ConsentDecision,
    decide,
    in_future,
)
from middleware.rules.number import CustomerNumber, NumberKeys, invalid_number_message, number_of
from middleware.rules.time import format_utc, parse_instant
from middleware.store import ConsentWrite, NumberFacts, Store

log = logging.getLogger(__name__)

class _ReadConsents:
    """The consent rule's view of one number, from facts read beforehand in one round trip
    (``Lifecycle.facts``): the record asked for, and the revocation state."""

    def __init__(self, facts: NumberFacts, consent_id: str, number_keys: tuple[str, ...]
                 ) -> None:
        self._facts = facts
        self._consent_id = consent_id
        self._number_keys = number_keys

    def consent(self, consent_id: str) -> Mapping[str, str] | None:
        """The record read, if it is the one asked for."""
        return self._facts.consent if consent_id == self._consent_id else None

    def number_keys(self) -> tuple[str, ...]:
        """Every key the number's records may carry."""
        return self._number_keys

    def revocation(self) -> tuple[int, int]:
        """The epochs of the number's latest revocation and latest lifting consent."""
        return self._facts.revoked, self._facts.lifted


class ConsentLedger:
    """Consent records and the consent rule, over the store."""

    def __init__(self, store: Store, keys: NumberKeys, clock: Clock, max_age: timedelta,
                 retention: timedelta) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock
        self._max_age = max_age
        self._retention_s = int(retention.total_seconds())

    def check(self, fields: dict[str, Any], number: CustomerNumber, facts: NumberFacts
              ) -> ConsentDecision:
        """Apply the consent rule for a create on ``facts`` (``Lifecycle.facts``, read in
        the create's first round trip); nothing is written."""
        view = _ReadConsents(facts, str(fields.get("consentId") or ""),
                             self._keys.all(number.e164))
        return decide(fields, view, self._clock.now(), self._max_age)

    def record(self, number: CustomerNumber, fields: dict[str, Any], captured: datetime,
               via: str, kind: str = "CONSENT") -> str:
        """Store a consent (or revocation) record; return its id."""
        write = self.prepare(number, fields, captured, via, kind)
        self._store.save_consent(write.digests, write.record, write.captured_ms,
                                 lifts=write.lifts, retention_s=write.retention_s,
                                 event=write.event)
        self.stored(write, number)
        return write.record["consentId"]

    def stored(self, write: ConsentWrite, number: CustomerNumber) -> None:
        """Log a consent stored (by ``record``, or by a create's journal)."""
        log.info("consent recorded", extra={
            "consentId": write.record["consentId"], "kind": write.record["kind"],
            "via": write.record["via"], "number": number.masked})

    def prepare(self, number: CustomerNumber, fields: dict[str, Any], captured: datetime,
                via: str, kind: str = "CONSENT") -> ConsentWrite:
        """A consent (or revocation) record with a new id, ready to store (``record``, or a
        create's journal step)."""
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
        # The event names the record only: the record itself is kept as long as it.
        event = history_event("revocation" if kind == "REVOCATION" else "consent",
                              epoch_ms(self._clock.now()), consentId=consent_id)
        # Only a consent stored on its own (record-consent) may end a revocation.
        return ConsentWrite(self._keys.all(number.e164), record, epoch_ms(captured),
                            lifts=(via == "record-consent"), retention_s=self._retention_s,
                            event=event)

    def evidence(self, number: CustomerNumber) -> list[dict[str, str]]:
        """Every consent, revocation and callback event of the number, in time order, with
        the SPEC's field names (however each was stored)."""
        events = self._store.history(self._keys.all(number.e164))
        referred = [str(e["k"]) for e in events if e.get("e") in ("co", "rv") and "k" in e]
        return expand_events(events, self._store.consents(
            NumberKeys.shard(number.e164), referred) if referred else {})


Canceller = Callable[[LedgerRecord, RequestContext], str]


Disconnector = Callable[[LedgerRecord, RequestContext], bool]


class ConsentService:
    """The ``record-consent`` and ``revoke-consent`` actions."""

    def __init__(self, ledger: ConsentLedger, lifecycle: Lifecycle, cancel: Canceller,
                 disconnect: Disconnector, contracts: dict[str, Contract],
                 default_country: str, clock: Clock) -> None:
        self._ledger = ledger
        self._lifecycle = lifecycle
        self._cancel = cancel
        self._disconnect = disconnect
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
        if in_future(captured, now):
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
        cancelled, failed = 0, 0
        # A callback that changed while read (an owner move) is read again: its replacement
        # is then pending too, and goes the same way.
        for _ in range(3):
            changed = False
            for record in self._lifecycle.pending(number, window_only=False):
                try:
                    self._cancel(record, ctx)
                    cancelled += 1
                except Superseded:
                    changed = True
                except UpstreamError as exc:
                    failed += 1
                    self._lifecycle.cancel_later(record)
                    log.warning("revoke could not cancel a callback",
                                extra={"callbackId": record.callback_id, "error": exc.message})
            if not changed:
                break
        # Cancelled earlier but still held by Genesys: this revoke tries their disconnect too.
        for record in self._lifecycle.disconnecting(number):
            if not self._disconnect(record, ctx):
                failed += 1
        if failed:
            return answer(outcome="REVOKED", reason="UPSTREAM_UNAVAILABLE", **common,
                          cancelledCount=cancelled,
                          message=f"Consent withdrawn; {failed} callback(s) are cancelled "
                          "here but Genesys Cloud has not taken the disconnect yet: it is "
                          "retried until it does. Retrying this request tries again now.")
        return answer(outcome="REVOKED", reason="OK", **common, cancelledCount=cancelled,
                      message=f"Consent withdrawn; {cancelled} pending callback(s) cancelled.")
