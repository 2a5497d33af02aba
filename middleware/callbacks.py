"""The callback actions: create, find pending, reschedule and cancel callbacks.

The create pipeline reads like the spec, one visible step per rule::

    contract → number → idempotency key → consent → time → duplicate → owner →
    journal → create in Genesys → deliver (or QUEUED for the outbox worker)

The first failing check gives the answer, and nothing reaches Genesys unless every
check passed. A REJECTED answer leaves nothing behind: the number's claim is released
and no idempotent answer is stored.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from middleware.actions.checks import OwnerRule, TimeService
from middleware.actions.consent import ConsentLedger
from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.duplicates import DuplicateWindow, epoch_ms
from middleware.errors import (
    StoreUnavailable,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from middleware.genesys.client import GenesysClient, callback_end_state
from middleware.idempotency import IdempotencyGate, IdempotencyKey, Started, key_for
from middleware.rules import time as timing
from middleware.rules.number import CustomerNumber, invalid_number_message, normalise, number_of
from middleware.rules.owner import OwnerDecision
from middleware.store import LedgerRecord, Store

log = logging.getLogger(__name__)

AGENT_OWNED: Final = "AGENT_OWNED_CALLBACK"
_CALLBACK_ID: Final = re.compile(r"^[0-9A-Za-z-]{8,64}$")

Answer = dict[str, Any]
_DAILY_LIMIT_MESSAGE: Final = ("This number already had the most callbacks allowed in 24 "
                               "hours (MAX_CALLBACKS_PER_NUMBER_PER_DAY).")


class Superseded(Exception):
    """The record changed since it was read: the step was not taken; read it again."""


def _time_fields(instant: datetime, agent_zone: str, number: CustomerNumber | None,
                 customer_zones: str = "") -> dict[str, str]:
    """The readable-back times of an answer: agent's and customer's zone and local time."""
    zones = ",".join(number.zones) if number is not None else customer_zones
    first = zones.split(",")[0]
    return {
        "scheduledTimeUtc": timing.format_utc(instant),
        "agentTimeZone": agent_zone,
        "agentLocalTime": timing.format_local(instant, agent_zone) if agent_zone else "",
        "customerTimeZone": zones,
        "customerLocalTime": timing.format_local(instant, first) if first else "",
    }


def queue_refusal(queue_id: str, queue: dict[str, Any] | None) -> str:
    """Why Genesys would refuse an agent-owned callback on this queue, or ``""``."""
    if queue is None:
        return f"The queue {queue_id} does not exist in Genesys Cloud (check queueId)."
    owned = queue.get("agentOwnedRouting") or {}
    if owned.get("enableAgentOwnedCallbacks") is not True:
        return (f"The queue {queue_id} does not allow agent-owned callbacks: turn on "
                "agentOwnedRouting.enableAgentOwnedCallbacks (Admin > Queues > Voice > "
                "Agent Owned Routing) first.")
    return ""


def from_ms(ms: int) -> datetime:
    """The instant of a ledger score."""
    return datetime.fromtimestamp(ms / 1000, UTC)


class CallbackService:
    """Creates, finds and cancels consent-checked, agent-owned callbacks."""

    def __init__(self, default_country: str, contracts: dict[str, Contract],
                 genesys: GenesysClient,
                 store: Store, window: DuplicateWindow, idempotency: IdempotencyGate,
                 consents: ConsentLedger, times: TimeService, owner: OwnerRule,
                 clock: Clock, journal_lease_ms: int = 10_000, settle_s: float = 6.0) -> None:
        self._country = default_country
        self._create_out = contracts["create-callback"]
        self._find_out = contracts["find-pending-callbacks"]
        self._cancel_out = contracts["cancel-callback"]
        self._reschedule_out = contracts["reschedule-callback"]
        self._genesys = genesys
        self._store = store
        self._window = window
        self._idempotency = idempotency
        self._consents = consents
        self._times = times
        self._owner = owner
        self._clock = clock
        self._journal_lease_ms = journal_lease_ms
        # Before the worker looks for a create that may have reached Genesys, it must land.
        self._settle_s = settle_s

    # -- create-callback ----------------------------------------------------------------

    def create(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        """Run every check in order, create the callback if all pass, and return the answer."""
        agent_id = str(fields["agentId"])
        number = number_of(fields, self._country)
        if number is None:
            return self._create_out.answer(
                outcome="REJECTED", reason="INVALID_NUMBER", requestId=ctx.request_id,
                ownerAgentId=agent_id, message=invalid_number_message(fields, self._country))

        key = key_for(fields, ctx.idempotency_key, ctx.credential, number.e164)
        token = uuid.uuid4().hex
        leased = time.monotonic()
        if key is not None:
            started = self._idempotency.begin(key, token)
            leased = time.monotonic()
            if started.replay is not None and key.derived \
                    and self._ended(started.replay, ctx.deadline) \
                    and self._idempotency.take_over(key, token, started.replay):
                leased = time.monotonic()
                started = Started()
            if started.replay is not None:
                log.info("idempotent replay", extra={"number": number.masked})
                return {**started.replay, "replayed": True, "requestId": ctx.request_id}
        answer: Answer = {"outcome": "REJECTED"}
        released = True
        try:
            answer = self._create_checked(fields, number, agent_id, token, ctx)
        except StoreUnavailable as exc:
            if key is not None and not self._finish(key, token, answer):
                # The key stays in flight until its lease ends: the 503 says when a retry
                # will be served rather than refused with 409.
                exc.retry_after_s = self._idempotency.lease_left_s(leased)
            released = False
            raise
        finally:
            if key is not None and released:
                self._finish(key, token, answer)
        return answer

    def _finish(self, key: IdempotencyKey, token: str, answer: Answer) -> bool:
        """Store the idempotent answer (or release the key); false if Redis could not."""
        try:
            self._idempotency.finish(key, token, answer)
        except StoreUnavailable:
            # The in-flight lease expires on its own; the caller gets our answer.
            log.warning("could not store the idempotent answer")
            return False
        return True

    def _ended(self, replay: Answer, deadline: Deadline) -> bool:
        """Whether the callback a stored answer names has ended (a derived key must not
        replay it: the conversation is asking for a new one). Genesys is asked too: a
        callback completed there may not have been reconciled yet (SPEC §4 Lifecycle 6)."""
        callback_id = str(replay.get("callbackId") or replay.get("existingCallbackId") or "")
        if not callback_id:
            return False
        record = self._store.callback(callback_id)
        if record is None or not record.pending:
            return record is not None
        if not record.in_genesys:
            return False
        try:
            ended = callback_end_state(self._genesys.get_callback(callback_id, deadline))
        except UpstreamError:
            # Unknown: the ledger's view stands, as before reconciliation would correct it.
            return False
        if ended is None:
            return False
        self._window.close(record, ended)
        return True

    def _create_checked(self, fields: dict[str, Any], number: CustomerNumber, agent_id: str,
                        token: str, ctx: RequestContext) -> Answer:
        answer = self._create_out.answer
        now = self._clock.now()
        common: dict[str, Any] = {
            "requestId": ctx.request_id, "ownerAgentId": agent_id,
            "customerNumberE164": number.e164, "customerTimeZone": ",".join(number.zones),
        }

        if self._window.over_daily_limit(number):
            return answer(outcome="REJECTED", reason="TOO_MANY_REQUESTS_FOR_NUMBER", **common,
                          message=_DAILY_LIMIT_MESSAGE)

        verdict = self._consents.check(fields, number)
        if verdict.reason != "OK":
            return answer(outcome="REJECTED", reason=verdict.reason, message=verdict.message,
                          consentId=str(fields.get("consentId") or ""), **common)

        try:
            profile = self._times.profile(agent_id, now, ctx.deadline)
            queue = self._genesys.queue(str(fields["queueId"]), ctx.deadline)
        except (UpstreamUnavailable, UpstreamRejected) as exc:
            return self._upstream_failure(exc, common, reading=True)
        refusal = queue_refusal(str(fields["queueId"]), queue)
        if refusal:
            # Genesys would refuse the create: say why now, before anything is written.
            return answer(outcome="REJECTED", reason="UPSTREAM_REJECTED", message=refusal,
                          **common)
        time_ctx = self._times.context(now, profile, number, queue)
        when = self._times.check(self._times.parse(fields, profile), time_ctx)
        common["agentTimeZone"] = profile.zone
        if not when.ok or when.instant is None:
            return answer(outcome="REJECTED", reason=when.reason, message=when.message,
                          suggestedTimeUtc=timing.format_utc(when.suggested)
                          if when.suggested else "", **common)
        scheduled = when.instant
        common.update(_time_fields(scheduled, profile.zone, number),
                      warnings=",".join(when.warnings))

        claim = self._window.claim(number, token, ctx.deadline)
        if claim.existing is not None:
            return self._duplicate(claim.existing, common)
        if claim.over_daily_limit:
            return answer(outcome="REJECTED", reason="TOO_MANY_REQUESTS_FOR_NUMBER", **common,
                          message=_DAILY_LIMIT_MESSAGE)
        if not claim.claimed:
            return answer(outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE",
                          message="Another request for this number is being created right "
                          "now; retry shortly to receive it.", **common)

        try:
            decision = self._owner.resolve(
                agent_id, str(fields["queueId"]), scheduled, ctx.deadline,
                allow_reassignment=fields.get("allowReassignment", True) is not False)
        except (UpstreamUnavailable, UpstreamRejected) as exc:
            self._window.release(number, token)
            return self._upstream_failure(exc, common, reading=True)
        except BaseException:
            self._window.release(number, token)
            raise
        if decision.outcome in ("UNKNOWN_AGENT", "NONE"):
            self._window.release(number, token)
            if decision.outcome == "UNKNOWN_AGENT":
                return answer(outcome="REJECTED", reason="UNKNOWN_AGENT", **common,
                              message=f"The agent id {agent_id} is not a Genesys user.")
            return answer(outcome="REJECTED", reason="NO_AVAILABLE_OWNER", **common,
                          reassignReason=decision.reassign_reason,
                          message=f"The agent is unavailable ({decision.reassign_reason}) and "
                          "no one else may own the callback.")
        assigned = decision.assigned
        if decision.reassigned:
            zone = decision.profile.zone if decision.profile is not None else ""
            common.update(_time_fields(scheduled, zone, number), reassigned=True,
                          reassignReason=decision.reassign_reason)

        try:
            consent_id = verdict.consent_id or self._consents.record(
                number, fields, verdict.captured or now, via="create-callback")
            command = self._command(fields, number, assigned, timing.format_utc(scheduled),
                                    token, consent_id)
            # Journal first: from here on the request is never lost, and a crash before the
            # outcome is recorded is resolved by the worker without a second callback.
            journaled = self._window.journal(number, token, LedgerRecord(
                callback_id=f"queued-{token}", number_key="", scheduled_ms=epoch_ms(scheduled),
                agent_id=assigned, queue_id=str(fields["queueId"]), state="CREATING",
                acd_id="", request_token=token, created_ms=epoch_ms(now),
                consent_id=consent_id, e164=number.e164), payload={
                    "command": command, "ledgerId": f"queued-{token}", "e164": number.e164,
                    "mayHaveRun": True, "acceptedMs": epoch_ms(now)},
                resolve_after_ms=epoch_ms(now) + self._journal_lease_ms, epoch=verdict.epoch)
        except BaseException:
            self._window.release(number, token)
            raise
        common["consentId"] = consent_id
        if journaled is None:
            self._window.release(number, token)
            return answer(outcome="REJECTED", reason="CONSENT_REVOKED", **common,
                          message="Consent was withdrawn while the callback was being "
                          "checked; nothing was created.")

        try:
            created = self._genesys.create_callback(command, ctx.deadline)
        except UpstreamUnavailable as exc:
            self._window.defer(journaled, {
                "command": command, "ledgerId": journaled.callback_id, "e164": number.e164,
                "mayHaveRun": exc.may_have_run, "acceptedMs": epoch_ms(now)},
                epoch_ms(now) + int(1000 * max(exc.retry_after_s or 1, self._settle_s
                                               if exc.may_have_run else 0)))
            log.warning("genesys unavailable: callback queued", extra={
                "error": exc.message, "number": number.masked, "mayHaveRun": exc.may_have_run})
            return answer(outcome="QUEUED", reason="UPSTREAM_UNAVAILABLE", **common,
                          assignedAgentId=assigned,
                          message="Accepted: Genesys Cloud is unreachable right now, so the "
                          "callback will be created shortly. Do not retry.") | {
                              "retryable": False}
        except UpstreamRejected as exc:
            self._window.abandon(journaled)
            return self._upstream_failure(exc, common)

        acd = next((i["id"] for i in created.identifiers if i["type"] == "ACD"), "")
        if self._window.deliver(number, journaled, created.conversation_id, acd,
                                epoch_ms(scheduled)) is None:
            self.undo_create(number, journaled, created.conversation_id, acd, ctx.deadline)
            return answer(outcome="REJECTED", reason="CONSENT_REVOKED", **common,
                          message="Consent was withdrawn while the callback was being created; "
                          "it was cancelled.")
        log.info("callback created", extra={"callbackId": created.conversation_id,
                                            "number": number.masked, "agentId": assigned})
        return answer(outcome="CREATED", reason="OK", callbackId=created.conversation_id,
                      assignedAgentId=assigned,
                      message=f"Callback scheduled for {timing.format_utc(scheduled)}.", **common)

    def _duplicate(self, existing: LedgerRecord, common: dict[str, Any]) -> Answer:
        instant = from_ms(existing.scheduled_ms)
        when = timing.format_utc(instant)
        # A queued callback has no Genesys id yet; flows see it as pending all the same.
        shown_id = existing.callback_id if existing.in_genesys else ""
        log.info("duplicate found", extra={"callbackId": existing.callback_id})
        return self._create_out.answer(**{
            **common,
            "outcome": "DUPLICATE", "reason": "DUPLICATE_PENDING",
            "message": f"A callback for this number is already scheduled for {when}; "
                       "no new one was created.",
            "callbackId": shown_id, "scheduledTimeUtc": when,
            "assignedAgentId": existing.agent_id, "existingCallbackId": shown_id,
            "existingScheduledTimeUtc": when, "existingAgentId": existing.agent_id,
            **_time_fields(instant, "", None, str(common["customerTimeZone"])),
            "agentTimeZone": "", "agentLocalTime": "",
        })

    def _upstream_failure(self, exc: UpstreamUnavailable | UpstreamRejected,
                          common: dict[str, Any], *, reading: bool = False,
                          contract: Contract | None = None) -> Answer:
        out = contract or self._create_out
        if isinstance(exc, UpstreamUnavailable):
            log.warning("genesys unavailable", extra={"error": exc.message, "reading": reading})
            return out.answer(
                outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **common,
                message="Genesys Cloud could not be reached in time; nothing was changed. "
                "Retry the same request.")
        log.warning("genesys refused", extra={"status": exc.status, "code": exc.code,
                                              "error": exc.message})
        return out.answer(outcome="REJECTED", reason="UPSTREAM_REJECTED", **common,
                          message=f"Genesys Cloud refused the request: {exc.message}")

    @staticmethod
    def _command(fields: dict[str, Any], number: CustomerNumber, agent_id: str,
                 scheduled_utc: str, token: str, consent_id: str) -> dict[str, Any]:
        """The agent-owned ``CreateCallbackCommand`` exactly as SPEC §4 describes it; with no
        agent (the queue fallback) it carries no owner fields."""
        routing: dict[str, Any] = {"queueId": fields["queueId"]}
        if agent_id:
            routing["scoredAgents"] = [{"agent": {"id": agent_id}, "score": 100}]
            routing["routingFlags"] = [AGENT_OWNED]
        if "priority" in fields:
            routing["priority"] = fields["priority"]
        data = {"requestToken": token, "consentId": consent_id}
        for key in ("reference", "notes"):
            if fields.get(key):
                data[key] = str(fields[key])
        command: dict[str, Any] = {
            "routingData": routing,
            "callbackNumbers": [number.e164],
            "callbackScheduledTime": scheduled_utc,
            "validateCallbackNumbers": True,
            "data": data,
        }
        if fields.get("customerName"):
            command["callbackUserName"] = str(fields["customerName"])
        return command

    # -- find-pending-callbacks ---------------------------------------------------------

    def find_pending(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        """The number's pending callbacks in the window; the earliest one in detail."""
        answer = self._find_out.answer
        common = {"requestId": ctx.request_id, "windowHours": self._window.window_hours}
        number = number_of(fields, self._country)
        if number is None:
            return answer(outcome="REJECTED", reason="INVALID_NUMBER",
                          message=invalid_number_message(fields, self._country), **common)
        pending = self._window.pending(number)
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
                    **common, message="The callback is being moved to a new owner right "
                    "now; retry the same request.")
            time.sleep(0.2)

    def _reschedule_target(self, callback_id: str) -> tuple[LedgerRecord | None, bool]:
        """What a reschedule of this id acts on: the live end of its replacement chain
        (SPEC §4 Lifecycle 4), ``None`` when nothing is pending; and whether to wait, a
        replacement being still in creation."""
        record = self._store.callback(callback_id) if _CALLBACK_ID.fullmatch(callback_id) else None
        if record is None:
            return None, False
        chain = self._chain(record)
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
            return self._upstream_failure(exc, common, reading=True, contract=out)
        when = self._times.check(self._times.parse(fields, profile),
                                 self._times.context(now, profile, number, queue))
        if not when.ok or when.instant is None:
            return out.answer(outcome="REJECTED", reason=when.reason, message=when.message,
                              agentTimeZone=profile.zone,
                              suggestedTimeUtc=timing.format_utc(when.suggested)
                              if when.suggested else "", **common)
        common.update(_time_fields(when.instant, profile.zone, number),
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
        now = self._store.callback(record.callback_id)
        return now is None or now.version != record.version or bool(now.replaced_by)

    def _reschedule_commit(self, record: LedgerRecord, scheduled: datetime,
                           number: CustomerNumber | None, ctx: RequestContext,
                           common: dict[str, Any]) -> Answer | None:
        """Give the callback its new time in Genesys (a new owner if needed), then commit it
        at the version read; ``None`` when the record changed meanwhile."""
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
                                            ctx.deadline, decision.reassign_reason)
                zone = decision.profile.zone if decision.profile is not None else ""
                common.update(_time_fields(scheduled, zone, number))
                return out.answer(outcome="RESCHEDULED", reason="OK", **{
                    **common, "callbackId": new_id, "previousCallbackId": callback_id,
                    "assignedAgentId": decision.assigned, "reassigned": True,
                    "reassignReason": decision.reassign_reason,
                    "message": f"Callback moved to {timing.format_utc(scheduled)} with a new "
                               f"owner ({decision.reassign_reason})" + (
                                   "." if new_id else "; Genesys is unreachable, so the new "
                                   "callback is queued and its id follows.")})
            if not self._patch_until_sure(record, scheduled, ctx.deadline):
                return None
        except Superseded:
            return None
        except UpstreamRejected as exc:
            if self._changed(record):
                return None
            if exc.status == 404:
                self._window.close(record, "DISCONNECTED")
                return out.answer(outcome="REJECTED", reason="NOT_FOUND", **common,
                                  message="Genesys Cloud no longer holds this callback.")
            return self._upstream_failure(exc, common, contract=out)
        except UpstreamUnavailable as exc:
            return self._upstream_failure(exc, common, contract=out)
        if not self._window.move(record, epoch_ms(scheduled)):
            return None
        log.info("callback rescheduled", extra={"callbackId": callback_id})
        return out.answer(outcome="RESCHEDULED", reason="OK", **common,
                          message=f"Callback moved to {timing.format_utc(scheduled)}.")

    # -- moving ownership: disconnect plus a new agent-owned create ---------------------

    def replace_owner(self, record: LedgerRecord, new_agent: str, scheduled: datetime,
                      deadline: Deadline, reason: str) -> str:
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
            self._window.close(record, ended)
            return ""
        customer: dict[str, Any] = next((p for p in (old or {}).get("participants", [])
                                         if p.get("purpose") == "customer"), {})
        attributes = dict(customer.get("attributes") or {})
        token = uuid.uuid4().hex
        now = self._clock.now()
        fields = {"queueId": record.queue_id, "customerName": customer.get("callbackUserName"),
                  "reference": attributes.get("reference"), "notes": attributes.get("notes")}
        command = self._command(fields, number, new_agent, timing.format_utc(scheduled), token,
                                record.consent_id)
        payload = {"command": command, "ledgerId": f"queued-{token}", "e164": number.e164,
                   "mayHaveRun": True, "acceptedMs": epoch_ms(now)}
        journaled = self._window.journal(number, token, LedgerRecord(
            callback_id=f"queued-{token}", number_key="", scheduled_ms=epoch_ms(scheduled),
            agent_id=new_agent, queue_id=record.queue_id, state="CREATING", acd_id="",
            request_token=token, created_ms=epoch_ms(now), consent_id=record.consent_id,
            e164=record.e164, replaces=record.callback_id), payload,
            epoch_ms(now) + self._journal_lease_ms, counts=False)
        if journaled is None:
            return ""
        if not self._store.relink_replacement(record.callback_id, record.replaced_by,
                                              journaled.callback_id, record.version):
            # A reschedule (or another move, or a cancel) committed since the record was
            # read: a replacement made from it would bring back what it changed.
            self._window.abandon(journaled)
            raise Superseded(record.callback_id)
        try:
            created = self._genesys.create_callback(command, deadline)
        except UpstreamUnavailable as exc:
            self._window.defer(journaled, {**payload, "mayHaveRun": exc.may_have_run},
                               epoch_ms(now) + int(1000 * self._settle_s))
            log.warning("replacement callback queued", extra={
                "callbackId": record.callback_id, "toAgentId": new_agent or "queue"})
            return ""
        except UpstreamRejected:
            self._window.abandon(journaled)
            self._store.relink_replacement(record.callback_id, journaled.callback_id, "")
            raise
        acd = next((i["id"] for i in created.identifiers if i["type"] == "ACD"), "")
        if self._window.deliver(number, journaled, created.conversation_id, acd,
                                epoch_ms(scheduled)) is None:
            self.undo_create(number, journaled, created.conversation_id, acd, deadline)
            self._store.relink_replacement(record.callback_id, journaled.callback_id, "")
            return ""
        log.info("callback reassigned", extra={
            "callbackId": record.callback_id, "newCallbackId": created.conversation_id,
            "fromAgentId": record.agent_id, "toAgentId": new_agent or "queue",
            "reason": reason})
        self.finish_replacement(record, deadline)
        return created.conversation_id

    def undo_create(self, number: CustomerNumber, journaled: LedgerRecord, callback_id: str,
                    acd_id: str, deadline: Deadline) -> None:
        """Disconnect a callback Genesys created after its request was cancelled; if that
        fails, keep it in the ledger (pending) so the next cancel or revoke finds it."""
        try:
            self._genesys.disconnect_callback(callback_id, acd_id, deadline)
            log.info("callback cancelled during creation", extra={"callbackId": callback_id})
        except UpstreamError as exc:
            log.error("callback created after its cancellation is still scheduled", extra={
                "callbackId": callback_id, "error": exc.message})
            self._window.commit(number, journaled.request_token, replace(
                journaled, callback_id=callback_id, acd_id=acd_id, state="PENDING",
                number_key=""))

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
        self._window.close(record, "REASSIGNED")
        return True

    # -- cancel-callback ----------------------------------------------------------------

    def cancel(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        """Disconnect a callback created here and take it out of the window."""
        answer = self._cancel_out.answer
        callback_id = str(fields["callbackId"])
        common = {"requestId": ctx.request_id, "callbackId": callback_id}
        record = self._store.callback(callback_id) if _CALLBACK_ID.fullmatch(callback_id) else None
        if record is None:
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message="No callback with this id was created through this service.")
        chain = self._chain(record)
        # The caller may hold an id the service has since replaced: every pending link of
        # the chain goes (an old one still live while its replacement is queued, too).
        live = [r for r in chain if r.pending]
        if len(chain) > 1 and live:
            try:
                ends = [self.cancel_record(r, ctx) for r in live]
            except UpstreamUnavailable:
                return answer(outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **common,
                              message="Genesys Cloud could not be reached; retry the same "
                              "request.")
            except UpstreamRejected as exc:
                return answer(outcome="REJECTED", reason="UPSTREAM_REJECTED", **common,
                              message=f"Genesys Cloud refused the cancel: {exc.message}")
            if "CANCELLED" in ends:
                return answer(outcome="CANCELLED", reason="OK", **common,
                              message="The callback (moved to a new owner by the service) "
                              "was disconnected in Genesys Cloud.")
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message="Genesys Cloud no longer holds this callback; it was "
                          "removed from the window.")
        record = chain[-1]
        if record.state == "CANCELLED":
            return answer(outcome="CANCELLED", reason="OK", **common,
                          message="The callback was already cancelled.")
        if not record.pending:
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message=f"The callback is no longer pending ({record.state.lower()}).")
        try:
            ended = self.cancel_record(record, ctx)
        except UpstreamUnavailable:
            return answer(outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **common,
                          message="Genesys Cloud could not be reached; the callback is "
                          "unchanged. Retry the same request.")
        except UpstreamRejected as exc:
            return answer(outcome="REJECTED", reason="UPSTREAM_REJECTED", **common,
                          message=f"Genesys Cloud refused the cancel: {exc.message}")
        if ended == "DISCONNECTED":
            return answer(outcome="NOT_FOUND", reason="NOT_FOUND", **common,
                          message="Genesys Cloud no longer holds this callback; it was "
                          "removed from the window.")
        return answer(outcome="CANCELLED", reason="OK", **common,
                      message="The callback was disconnected in Genesys Cloud.")

    def _chain(self, record: LedgerRecord, hops: int = 5) -> list[LedgerRecord]:
        """The record and the replacements its ``replaced_by`` links lead to (bounded, so a
        cycle cannot hold a request); the last is the one that now stands for it."""
        chain = [record]
        while record.replaced_by and len(chain) <= hops:
            found = self._store.callback(record.replaced_by)
            if found is None or any(r.callback_id == found.callback_id for r in chain):
                break
            chain.append(found)
            record = found
        return chain

    def cancel_record(self, record: LedgerRecord, ctx: RequestContext) -> str:
        """Disconnect a pending callback in Genesys and close it in the ledger.

        Returns ``CANCELLED``, or ``DISCONNECTED`` when Genesys no longer knew it; raises
        ``UpstreamUnavailable``/``UpstreamRejected`` with the ledger unchanged.
        """
        if record.state in ("QUEUED", "CREATING"):
            # Not in Genesys yet: closing it here makes the worker drop its outbox entry.
            self._window.close(record, "CANCELLED")
            return "CANCELLED"
        # If the disconnect lands unanswered, whoever sees the callback end later (the worker,
        # a retried cancel) knows it was this cancel.
        self._store.mark_cancel_asked(record.callback_id)
        while True:
            try:
                self._genesys.disconnect_callback(record.callback_id, record.acd_id,
                                                  ctx.deadline)
                break
            except UpstreamRejected as exc:
                if exc.status != 404:
                    raise
                ended = "CANCELLED" if record.cancel_asked else "DISCONNECTED"
                self._window.close(record, ended)
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
        self._window.close(record, "CANCELLED")
        log.info("callback cancelled", extra={"callbackId": record.callback_id})
        return "CANCELLED"

    def _disconnected(self, record: LedgerRecord, deadline: Deadline) -> bool:
        """Whether Genesys now shows the callback disconnected (``False`` if unknown)."""
        try:
            return callback_end_state(self._genesys.get_callback(
                record.callback_id, deadline)) == "DISCONNECTED"
        except UpstreamError:
            return False
