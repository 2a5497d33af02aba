"""find-pending-callbacks, reschedule-callback and cancel-callback, and the owner move the
worker and a reschedule share.

Every change goes through a transition of ``ledger.lifecycle`` that re-checks, at commit,
the record's version: a reschedule or cancel that lost a race with an owner move reads the
record again and acts on what now stands for the callback (SPEC §4 Lifecycle 3 and 4).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from middleware.actions.answers import (
    Answer,
    Revoked,
    Superseded,
    create_command,
    from_ms,
    time_fields,
    upstream_failure,
)
from middleware.actions.checks import OwnerRule, TimeService
from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from middleware.genesys.client import GenesysClient, callback_end_state
from middleware.ledger.lifecycle import Change, Lifecycle, epoch_ms
from middleware.ledger.records import LedgerRecord
from middleware.rules import time as timing
from middleware.rules.number import CustomerNumber, invalid_number_message, normalise, number_of
from middleware.rules.owner import OwnerDecision

log = logging.getLogger(__name__)

_CALLBACK_ID: Final = re.compile(r"^[0-9A-Za-z-]{8,64}$")

#: Disconnects a callback created after its request was cancelled (``CreateCallback.undo``).
Undo = Callable[[CustomerNumber, LedgerRecord, str, str, Deadline], None]


def _cancel_unavailable(exc: UpstreamUnavailable) -> str:
    """What a cancel Genesys did not confirm tells the caller: unchanged only when no
    disconnect can have reached Genesys."""
    if exc.may_have_run:
        return ("Genesys Cloud did not confirm the cancel in time: the callback may already be "
                "cancelled. Retry the same request to find out.")
    return ("Genesys Cloud could not be reached; the callback is unchanged. Retry the same "
            "request.")


class ManageCallbacks:
    """Finds, reschedules and cancels callbacks created here, and moves them to new owners."""

    def __init__(self, default_country: str, contracts: dict[str, Contract],
                 genesys: GenesysClient, lifecycle: Lifecycle, times: TimeService,
                 owner: OwnerRule, clock: Clock, undo: Undo,
                 journal_lease_ms: int = 10_000, settle_s: float = 6.0) -> None:
        self._country = default_country
        self._find_out = contracts["find-pending-callbacks"]
        self._cancel_out = contracts["cancel-callback"]
        self._reschedule_out = contracts["reschedule-callback"]
        self._genesys = genesys
        self._lifecycle = lifecycle
        self._times = times
        self._owner = owner
        self._clock = clock
        self._undo = undo
        self._journal_lease_ms = journal_lease_ms
        self._settle_s = settle_s

    def _held(self, callback_id: str) -> LedgerRecord | None:
        """The record of an id a caller holds (``None`` for one no callback here could have)."""
        return self._lifecycle.record(callback_id) if _CALLBACK_ID.fullmatch(callback_id) \
            else None

    # -- find-pending-callbacks ---------------------------------------------------------

    def find_pending(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        """The number's pending callbacks in the window; the earliest one in detail."""
        answer = self._find_out.answer
        common = {"requestId": ctx.request_id, "windowHours": self._lifecycle.window_hours}
        number = number_of(fields, self._country)
        if number is None:
            return answer(outcome="REJECTED", reason="INVALID_NUMBER",
                          message=invalid_number_message(fields, self._country), **common)
        pending = self._lifecycle.pending(number)
        if not pending:
            return answer(outcome="NONE", reason="OK", customerNumberE164=number.e164,
                          message=f"No callback is pending within {common['windowHours']} "
                          "hours.", **common)
        first = pending[0]
        when = timing.format_utc(from_ms(first.scheduled_ms))
        return answer(outcome="FOUND", reason="OK", customerNumberE164=number.e164,
                      hasPending=True, pendingCount=len(pending),
                      callbackId=first.callback_id if first.in_genesys else "",
                      scheduledTimeUtc=when, agentId=first.agent_id, queueId=first.queue_id,
                      message=f"{len(pending)} callback(s) pending; the next at {when}.",
                      **common)

    # -- reschedule-callback ------------------------------------------------------------

    def reschedule(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        """Move a pending callback created here to a new time, re-running the time rules.

        The new time is committed only while the record is the version read (SPEC §4
        Lifecycle): a reschedule that lost a race with an owner move or a cancel reads the
        record again and acts on what now stands for the callback.
        """
        callback_id = str(fields["callbackId"])
        common: dict[str, Any] = {"requestId": ctx.request_id, "callbackId": callback_id}
        while True:
            answer = self._reschedule_once(fields, ctx, callback_id, common)
            if answer is not None:
                return answer
            if ctx.deadline.remaining() < 1.5:
                return self._reschedule_out.answer(
                    outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", retryable=True,
                    **common, message="The callback changed while this request was being "
                    "made (a move to a new owner, or a cancel): it did not confirm the new "
                    "time. Retry the same request to find out.")
            time.sleep(0.2)

    def _reschedule_target(self, callback_id: str) -> tuple[LedgerRecord | None, bool]:
        """What a reschedule of this id acts on: the live end of its replacement chain
        (SPEC §4 Lifecycle 4), ``None`` when nothing is pending; and whether to wait, a
        replacement being still in creation."""
        record = self._held(callback_id)
        if record is None:
            return None, False
        chain = self._lifecycle.chain(record)
        pending = [r for r in chain if r.pending]
        if not pending:
            return None, False
        if not pending[-1].in_genesys:
            return None, len(chain) > 1
        return pending[-1], False

    def _reschedule_once(self, fields: dict[str, Any], ctx: RequestContext, asked_id: str,
                         common: dict[str, Any]) -> Answer | None:
        """One attempt at a reschedule; ``None`` when it lost a race and must read again."""
        out = self._reschedule_out
        record, wait = self._reschedule_target(asked_id)
        if wait:
            return None
        if record is None:
            return out.answer(outcome="REJECTED", reason="NOT_FOUND", **common,
                              message="No pending callback with this id was created here.")
        callback_id = record.callback_id
        common["callbackId"] = callback_id
        number = normalise(record.e164, self._country) if record.e164 else None
        common.update(ownerAgentId=record.agent_id, assignedAgentId=record.agent_id,
                      consentId=record.consent_id,
                      customerNumberE164=number.e164 if number else "")
        now = self._clock.now()
        try:
            profile = self._times.profile(record.agent_id, now, ctx.deadline)
            queue = self._genesys.queue(record.queue_id, ctx.deadline)
        except (UpstreamUnavailable, UpstreamRejected) as exc:
            return upstream_failure(out, exc, common, reading=True)
        when = self._times.check(self._times.parse(fields, profile),
                                 self._times.context(now, profile, number, queue))
        if not when.ok or when.instant is None:
            return out.answer(outcome="REJECTED", reason=when.reason, message=when.message,
                              agentTimeZone=profile.zone,
                              suggestedTimeUtc=timing.format_utc(when.suggested)
                              if when.suggested else "", **common)
        common.update(time_fields(when.instant, profile.zone, number),
                      warnings=",".join(when.warnings))
        return self._reschedule_commit(record, when.instant, number, ctx, common)

    def _patch_until_sure(self, record: LedgerRecord, scheduled: datetime,
                          deadline: Deadline) -> bool:
        """PATCH the new time, again while in doubt (it is idempotent) within the deadline:
        a PATCH that landed unanswered must not be answered as unchanged while Genesys holds
        the new time. False when the record changed meanwhile (read it again)."""
        while True:
            try:
                self._genesys.patch_callback(record.callback_id, record.agent_id,
                                             timing.format_utc(scheduled), deadline)
                return True
            except UpstreamUnavailable:
                if deadline.remaining() < 2.0:
                    raise
                time.sleep(0.2)
                if self._changed(record):
                    return False

    def _changed(self, record: LedgerRecord) -> bool:
        """Whether the record is no longer the version read (a move or cancel won a race)."""
        now = self._lifecycle.record(record.callback_id, record.shard)
        return now is None or now.version != record.version or bool(now.replaced_by)

    def _reschedule_commit(self, record: LedgerRecord, scheduled: datetime,
                           number: CustomerNumber | None, ctx: RequestContext,
                           common: dict[str, Any]) -> Answer | None:
        """Under the callback's change lock, give it its new time in Genesys (a new owner if
        needed), then commit it at the version read; ``None`` when the record changed
        meanwhile."""
        with self._lifecycle.changing(record, ctx.deadline, self._settle_s) as change:
            if change is None:
                return self._reschedule_out.answer(
                    outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", retryable=True,
                    **common, message="Another change to this callback is being made right "
                    "now; nothing was changed. Retry the same request.")
            if self._changed(record):
                return None
            if number is None or not self._lifecycle.enters_window(record, epoch_ms(scheduled)):
                return self._reschedule_locked(record, scheduled, number, ctx, common, change)
            # Into the window from beyond it: the number's claim is held until the new time
            # is committed, so no create slips in beside it, and another callback pending
            # in the window refuses it (SPEC §4 Lifecycle 1).
            token = uuid.uuid4().hex
            claim = self._lifecycle.claim(number, token, ctx.deadline, capped=False)
            if claim.existing is not None:
                when = timing.format_utc(from_ms(claim.existing.scheduled_ms))
                shown = claim.existing.callback_id if claim.existing.in_genesys else ""
                return self._reschedule_out.answer(
                    outcome="REJECTED", reason="DUPLICATE_PENDING", **common,
                    existingCallbackId=shown, existingScheduledTimeUtc=when,
                    existingAgentId=claim.existing.agent_id,
                    message=f"Another callback for this number is already scheduled for "
                    f"{when}, within the duplicate window; this one was left unchanged.")
            if not claim.claimed:
                return self._reschedule_out.answer(
                    outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", retryable=True,
                    **common, message="Another request for this number is being made right "
                    "now; nothing was changed. Retry the same request.")
            with self._lifecycle.claimed(number, token) as hold:
                answer = self._reschedule_locked(record, scheduled, number, ctx, common,
                                                 change, token)
                if change.in_doubt:
                    # The PATCH may have landed: the window stays claimed until the worker
                    # has read the callback back (as the change lock stays held).
                    self._lifecycle.keep_claim(number, token, hold)
                return answer

    def _reschedule_locked(self, record: LedgerRecord, scheduled: datetime,
                           number: CustomerNumber | None, ctx: RequestContext,
                           common: dict[str, Any], change: Change, claim_token: str = ""
                           ) -> Answer | None:
        out = self._reschedule_out
        callback_id = record.callback_id
        try:
            # A queue callback has no agent to PATCH with (the API requires one): it is
            # re-created at the new time, still without an owner.
            decision = self._owner.resolve(record.agent_id, record.queue_id, scheduled,
                                           ctx.deadline) if record.agent_id \
                else OwnerDecision("QUEUE", "")
            if decision.outcome in ("NONE", "UNKNOWN_AGENT"):
                return out.answer(outcome="REJECTED", reason="NO_AVAILABLE_OWNER", **common,
                                  reassignReason=decision.reassign_reason,
                                  message="Nobody can own the callback at the new time; "
                                  "it was left unchanged.")
            if decision.reassigned:
                new_id = self.replace_owner(record, decision.assigned, scheduled,
                                            ctx.deadline, decision.reassign_reason,
                                            token=claim_token)
                zone = decision.profile.zone if decision.profile is not None else ""
                common.update(time_fields(scheduled, zone, number))
                return out.answer(outcome="RESCHEDULED", reason="OK", **{
                    **common, "callbackId": new_id, "previousCallbackId": callback_id,
                    "assignedAgentId": decision.assigned, "reassigned": True,
                    "reassignReason": decision.reassign_reason,
                    "message": f"Callback moved to {timing.format_utc(scheduled)} with a new "
                               f"owner ({decision.reassign_reason})" + (
                                   "." if new_id else "; Genesys is unreachable, so the new "
                                   "callback is queued and its id follows.")})
            # If the PATCH lands unanswered and this request gives up, the worker reads the
            # callback back and takes the time Genesys holds (the commit clears the flag).
            self._lifecycle.ask_reschedule(record)
            if not self._patch_until_sure(record, scheduled, ctx.deadline):
                return None
        except Superseded:
            return None
        except Revoked:
            return out.answer(outcome="REJECTED", reason="CONSENT_REVOKED", **common,
                              message="The customer withdrew consent: the new time needs a new "
                              "owner, and so a new callback, which is not created; the callback "
                              "was left unchanged.")
        except UpstreamRejected as exc:
            if self._changed(record):
                return None
            if exc.status == 404:
                self._lifecycle.close(record, "DISCONNECTED")
                return out.answer(outcome="REJECTED", reason="NOT_FOUND", **common,
                                  message="Genesys Cloud no longer holds this callback.")
            return upstream_failure(out, exc, common)
        except UpstreamUnavailable as exc:
            change.in_doubt = exc.may_have_run
            return upstream_failure(out, exc, common)
        if not self._lifecycle.reschedule(record, epoch_ms(scheduled)):
            # Genesys took the new time, yet the record changed under the lock (a cancel or
            # a revocation ended it): the next read tells what stands.
            return None
        log.info("callback rescheduled", extra={"callbackId": callback_id})
        return out.answer(outcome="RESCHEDULED", reason="OK", **common,
                          message=f"Callback moved to {timing.format_utc(scheduled)}.")

    # -- moving ownership: disconnect plus a new agent-owned create ---------------------

    def replace_owner(self, record: LedgerRecord, new_agent: str, scheduled: datetime,
                      deadline: Deadline, reason: str, token: str = "") -> str:
        """Give a pending callback a new owner (``""``: the queue); return the new callback's
        id, or ``""`` when Genesys could not take it now and it is queued.

        The Genesys PATCH cannot move ownership, so the new callback is journaled and
        created first, and the old one disconnected after: the step that delivers the new
        one marks the old one replaced (its disconnect retried by the worker), so the number
        is never left with none. While the new one is only queued, the old one stays live
        and only links to it (no second move starts); if it fails or dead-letters, the link
        is dropped and the old one stays as it was.
        """
        number = normalise(record.e164, self._country) if record.e164 else None
        if number is None:
            raise ValueError(f"callback {record.callback_id} has no number in the ledger")
        old = self._genesys.get_callback(record.callback_id, deadline)
        ended = callback_end_state(old)
        if ended is not None:
            # Disconnected or completed in Genesys meanwhile: nothing to move.
            self._lifecycle.close(record, ended)
            return ""
        customer: dict[str, Any] = next((p for p in (old or {}).get("participants", [])
                                         if p.get("purpose") == "customer"), {})
        attributes = dict(customer.get("attributes") or {})
        # The token of the number's claim when the caller holds it (its journal then takes
        # the claim's place), else a new one.
        token = token or uuid.uuid4().hex
        now = self._clock.now()
        fields = {"queueId": record.queue_id, "customerName": customer.get("callbackUserName"),
                  "reference": attributes.get("reference"), "notes": attributes.get("notes")}
        command = create_command(fields, number, new_agent, timing.format_utc(scheduled), token,
                                record.consent_id)
        payload = {"command": command, "ledgerId": f"queued-{token}", "e164": number.e164,
                   "mayHaveRun": True, "acceptedMs": epoch_ms(now)}
        # A move is guarded like a create: a revocation stored since this read stops its
        # journal, and its delivery.
        epoch = self._lifecycle.revocation_epoch(number)
        if epoch is None:
            raise Revoked(record.callback_id)
        journaled = self._lifecycle.journal(number, token, LedgerRecord(
            callback_id=f"queued-{token}", number_key="", scheduled_ms=epoch_ms(scheduled),
            agent_id=new_agent, queue_id=record.queue_id, state="CREATING", acd_id="",
            request_token=token, created_ms=epoch_ms(now), consent_id=record.consent_id,
            e164=record.e164, replaces=record.callback_id), payload,
            epoch_ms(now) + self._journal_lease_ms, counts=False, epoch=epoch)
        if journaled is None:
            # A revocation stored since, or the number claimed by another request: nothing
            # was moved or queued, so the caller reads again (never answers "queued").
            raise Superseded(record.callback_id)
        if not self._lifecycle.move(record, journaled):
            # A reschedule (or another move, or a cancel) committed since the record was
            # read: a replacement made from it would bring back what it changed.
            self._lifecycle.abandon(journaled)
            raise Superseded(record.callback_id)
        try:
            created = self._genesys.create_callback(command, deadline)
        except UpstreamUnavailable as exc:
            self._lifecycle.defer(journaled, {**payload, "mayHaveRun": exc.may_have_run},
                               epoch_ms(now) + int(1000 * self._settle_s))
            log.warning("replacement callback queued", extra={
                "callbackId": record.callback_id, "toAgentId": new_agent or "queue"})
            return ""
        except UpstreamRejected:
            self._lifecycle.abandon(journaled)
            self._lifecycle.unlink(journaled, record.callback_id)
            raise
        acd = next((i["id"] for i in created.identifiers if i["type"] == "ACD"), "")
        if self._lifecycle.deliver(number, journaled, created.conversation_id, acd,
                                epoch_ms(scheduled)) is None:
            self._undo(number, journaled, created.conversation_id, acd, deadline)
            self._lifecycle.unlink(journaled, record.callback_id)
            return ""
        log.info("callback reassigned", extra={
            "callbackId": record.callback_id, "newCallbackId": created.conversation_id,
            "fromAgentId": record.agent_id, "toAgentId": new_agent or "queue",
            "reason": reason})
        self.finish_replacement(record, deadline)
        return created.conversation_id

    def finish_replacement(self, record: LedgerRecord, deadline: Deadline) -> bool:
        """Disconnect a replaced callback; false (retried later) if Genesys cannot now."""
        try:
            self._genesys.disconnect_callback(record.callback_id, record.acd_id, deadline)
        except UpstreamRejected as exc:
            if exc.status != 404:
                log.warning("replaced callback not disconnected yet",
                            extra={"callbackId": record.callback_id, "status": exc.status})
                return False
        except UpstreamUnavailable:
            log.warning("replaced callback not disconnected yet",
                        extra={"callbackId": record.callback_id})
            return False
        self._lifecycle.close(record, "REASSIGNED")
        return True

    # -- cancel-callback ----------------------------------------------------------------

    def cancel(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        """Disconnect a callback created here and take it out of the window; one that
        changed while it was read (an owner move) is read again."""
        while True:
            try:
                return self._cancel_once(fields, ctx)
            except Superseded:
                if ctx.deadline.remaining() < 1.0:
                    return self._cancel_out.answer(
                        outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE",
                        requestId=ctx.request_id, callbackId=str(fields["callbackId"]),
                        message="The callback was being moved to a new owner; nothing was "
                        "sent. Retry the same request.")

    def _cancel_once(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        answer = self._cancel_out.answer
        callback_id = str(fields["callbackId"])
        common = {"requestId": ctx.request_id, "callbackId": callback_id}
        record = self._held(callback_id)
        if record is None:
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message="No callback with this id was created through this service.")
        chain = self._lifecycle.chain(record)
        # The caller may hold an id the service has since replaced: every pending link of
        # the chain goes (an old one still live while its replacement is queued, too).
        live = [r for r in chain if r.pending]
        if len(chain) > 1 and live:
            ends = self._cancel_all(live, ctx, common)
            if isinstance(ends, dict):
                return ends
            if "CANCELLED" in ends:
                return answer(outcome="CANCELLED", reason="OK", **common,
                              message="The callback (moved to a new owner by the service) "
                              "was disconnected in Genesys Cloud.")
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message="Genesys Cloud no longer holds this callback; it was "
                          "removed from the window.")
        record = chain[-1]
        if record.disconnecting:
            done = self.finish_disconnect(record, ctx)
            return answer(outcome="CANCELLED", reason="OK", **common, message=(
                "The callback was already cancelled; Genesys Cloud has now disconnected it."
                if done else "The callback was already cancelled; Genesys Cloud has not "
                "taken its disconnect yet, which is retried until it does."))
        if record.state == "CANCELLED":
            return answer(outcome="CANCELLED", reason="OK", **common,
                          message="The callback was already cancelled.")
        if not record.pending:
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message=f"The callback is no longer pending ({record.state.lower()}).")
        ends = self._cancel_all([record], ctx, common)
        if isinstance(ends, dict):
            return ends
        if ends == ["DISCONNECTED"]:
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message="Genesys Cloud no longer holds this callback; it was "
                          "removed from the window.")
        return answer(outcome="CANCELLED", reason="OK", **common,
                      message="The callback was disconnected in Genesys Cloud.")

    def _cancel_all(self, records: list[LedgerRecord], ctx: RequestContext,
                    common: dict[str, Any]) -> list[str] | Answer:
        """Cancel each record (their ends), or the REJECTED answer of the first that failed."""
        answer = self._cancel_out.answer
        try:
            return [self.cancel_record(r, ctx) for r in records]
        except UpstreamUnavailable as exc:
            return answer(outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **common,
                          message=_cancel_unavailable(exc))
        except UpstreamRejected as exc:
            return answer(outcome="REJECTED", reason="UPSTREAM_REJECTED", **common,
                          message=f"Genesys Cloud refused the cancel: {exc.message}")

    def _cancel_unsent(self, record: LedgerRecord) -> str:
        """``CANCELLED`` for a callback not in Genesys yet (closing it here makes the worker
        drop its outbox entry), else ``""``."""
        if record.state not in ("QUEUED", "CREATING"):
            return ""
        self._lifecycle.close(record, "CANCELLED")
        return "CANCELLED"

    def revoke_record(self, record: LedgerRecord, ctx: RequestContext) -> str:
        """Cancel a callback for a revocation: like ``cancel_record`` but waiting for no
        change lock. An owner move meanwhile cannot outlive it: the revocation is stored
        first, and a move's journal and delivery both re-check it."""
        return self._cancel_unsent(record) or self._disconnect_and_close(record, ctx)

    def cancel_record(self, record: LedgerRecord, ctx: RequestContext) -> str:
        """Disconnect a pending callback in Genesys and close it in the ledger.

        Returns ``CANCELLED``, or ``DISCONNECTED`` when Genesys no longer knew it; raises
        ``UpstreamUnavailable``/``UpstreamRejected`` with the ledger unchanged.
        """
        unsent = self._cancel_unsent(record)
        if unsent:
            return unsent
        # Under the change lock, so an owner move cannot start while the disconnect is in
        # flight (its replacement would outlive the cancel), nor this start mid-move.
        with self._lifecycle.changing(record, ctx.deadline, self._settle_s) as change:
            if change is None:
                raise UpstreamUnavailable("Another change to this callback is being made")
            now = self._lifecycle.record(record.callback_id, record.shard)
            if now is None or now.version != record.version:
                raise Superseded(record.callback_id)
            try:
                return self._disconnect_and_close(now, ctx)
            except UpstreamUnavailable as exc:
                change.in_doubt = exc.may_have_run
                raise

    def _disconnect_and_close(self, record: LedgerRecord, ctx: RequestContext) -> str:
        # If the disconnect lands unanswered, whoever sees the callback end later (the worker,
        # a retried cancel) knows it was this cancel.
        self._lifecycle.ask_cancel(record)
        while True:
            try:
                self._genesys.disconnect_callback(record.callback_id, record.acd_id,
                                                  ctx.deadline)
                break
            except UpstreamRejected as exc:
                if exc.status != 404:
                    raise
                ended = "CANCELLED" if record.cancel_asked else "DISCONNECTED"
                self._lifecycle.close(record, ended)
                return ended
            except UpstreamUnavailable as exc:
                # A disconnect that timed out may still have landed: answering "unchanged"
                # then would leave the caller holding a callback that is gone. Within the
                # deadline, find out (or try again) rather than answer in doubt.
                if exc.may_have_run and self._disconnected(record, ctx.deadline):
                    break
                if ctx.deadline.remaining() < 2.0:
                    raise
                time.sleep(0.2)
        self._lifecycle.close(record, "CANCELLED")
        log.info("callback cancelled", extra={"callbackId": record.callback_id})
        return "CANCELLED"

    def finish_disconnect(self, record: LedgerRecord, ctx: RequestContext) -> bool:
        """Send the pending disconnect of a callback cancelled here; false (still pending,
        the worker retries) when Genesys does not take it now."""
        try:
            self._genesys.disconnect_callback(record.callback_id, record.acd_id, ctx.deadline)
        except UpstreamRejected as exc:
            if exc.status != 404:
                return False
        except UpstreamUnavailable:
            return False
        self._lifecycle.disconnected(record)
        log.info("cancelled callback disconnected", extra={"callbackId": record.callback_id})
        return True

    def _disconnected(self, record: LedgerRecord, deadline: Deadline) -> bool:
        """Whether Genesys now shows the callback disconnected (``False`` if unknown)."""
        try:
            return callback_end_state(self._genesys.get_callback(
                record.callback_id, deadline)) == "DISCONNECTED"
        except UpstreamError:
            return False
