"""create-callback, one visible step per rule of SPEC §4::

    number → idempotency key → daily cap → consent → time → claim (duplicate) → owner →
    journal → create in Genesys → deliver (or QUEUED for the outbox worker)

A create that gives its own consent first tries them all with no read of its number: the
consent, time and owner rules, then one Redis step that makes the number's checks (daily
cap, window, claim, revocation) and journals it, then Genesys and the delivery: two Redis
round trips. Anything that step refuses or finds in its way, and any refusal before it,
sends the request through the steps above from the start, which answer in their order.

Each step either answers (the first failing check gives the answer) or fills in the draft
for the next. Nothing reaches Genesys unless every check passed, and a REJECTED answer
leaves nothing behind: the number's claim is released by the one ``with`` around the steps
that hold it, and no idempotent answer is stored.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from middleware.actions.answers import (
    Answer,
    create_command,
    from_ms,
    queue_refusal,
    time_fields,
    upstream_failure,
)
from middleware.actions.checks import OwnerRule, TimeService
from middleware.actions.consent import ConsentLedger
from middleware.actions.idempotency import IdempotencyGate, IdempotencyKey, key_for
from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import (
    IdempotencyInFlight,
    StoreUnavailable,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from middleware.genesys.client import (
    GenesysClient,
    NotCached,
    cached_reads_only,
    callback_end_state,
)
from middleware.ledger.lifecycle import Hold, Lifecycle, epoch_ms
from middleware.ledger.records import LedgerRecord
from middleware.rules import time as timing
from middleware.rules.number import (
    CustomerNumber,
    NumberKeys,
    invalid_number_message,
    number_of,
)
from middleware.store import READ_IN_STEP, ConsentWrite, NumberFacts

log = logging.getLogger(__name__)

# The consent rule's facts before any is read: the step that journals makes the revocation
# check (``READ_IN_STEP``), and nothing else of the rule reads the store for a create that
# gives its own consent.
_UNREAD: Final = NumberFacts(created_today=0, revoked=0, lifted=0, consent=None)

#: Consent refusals made before the consent a request names was found for its number.
_UNFOUND_CONSENT: Final = frozenset({"CONSENT_MISSING", "CONSENT_NOT_FOUND"})

#: Times a derived key whose answer ended is read again when another request took it over
#: first (each try reads what that request left: its answer, or its 409 while in flight).
_TAKE_OVER_TRIES: Final = 3
#: What ``_ended`` knows of a stored answer's callback: it ended, or it may have.
_ENDED: Final = "ENDED"
_MAYBE_ENDED: Final = "MAYBE"

_DAILY_LIMIT_MESSAGE: Final = ("This number already had the most callbacks allowed in 24 "
                               "hours (MAX_CALLBACKS_PER_NUMBER_PER_DAY).")


@dataclass
class Draft:
    """What the steps of one create have found so far."""

    #: A derived key's earlier answer was not replayed, and whether its callback ended is
    #: unknown (Genesys could not say, or the answer named none): that callback may still
    #: be live at any time, so any pending callback of the number answers, in the window or
    #: beyond it. One known to have ended leaves a request like any other (SPEC §4's
    #: window alone).
    afresh: bool
    fields: dict[str, Any]
    number: CustomerNumber
    agent_id: str
    token: str
    ctx: RequestContext
    now: datetime
    common: dict[str, Any]
    consent_id: str = ""
    consent_epoch: int = -1
    captured: datetime | None = None
    scheduled: datetime | None = None
    assigned: str = ""
    #: The owner step ran (``assigned`` may be empty: the queue owns it).
    owner_known: bool = False
    #: A call was taken from the Genesys budget for this create (the warm step's).
    reserved: bool = False
    command: dict[str, Any] = field(default_factory=dict)
    journaled: LedgerRecord | None = None

    @property
    def queue_id(self) -> str:
        """The queue asked for."""
        return str(self.fields["queueId"])

    @property
    def at(self) -> datetime:
        """The accepted time (set by the time step)."""
        if self.scheduled is None:
            raise RuntimeError("the time step has not run")
        return self.scheduled


class CreateCallback:
    """The ``create-callback`` action."""

    def __init__(self, default_country: str, contract: Contract, genesys: GenesysClient,
                 lifecycle: Lifecycle, idempotency: IdempotencyGate, consents: ConsentLedger,
                 times: TimeService, owner: OwnerRule, clock: Clock,
                 journal_lease_ms: int = 10_000, settle_s: float = 6.0) -> None:
        self._country = default_country
        self._out = contract
        self._genesys = genesys
        self._lifecycle = lifecycle
        self._idempotency = idempotency
        self._consents = consents
        self._times = times
        self._owner = owner
        self._clock = clock
        self._journal_lease_ms = journal_lease_ms
        # Before the worker looks for a create that may have reached Genesys, it must land.
        self._settle_s = settle_s

    def create(self, fields: dict[str, Any], ctx: RequestContext) -> Answer:
        """Run every check in order, create the callback if all pass, and return the answer."""
        agent_id = str(fields["agentId"])
        number = number_of(fields, self._country)
        if number is None:
            return self._out.answer(
                outcome="REJECTED", reason="INVALID_NUMBER", requestId=ctx.request_id,
                ownerAgentId=agent_id, message=invalid_number_message(fields, self._country))
        key = key_for(fields, ctx.idempotency_key, ctx.credential, number.e164)
        token = uuid.uuid4().hex
        leased, previous, afresh = time.monotonic(), None, False
        if key is not None:
            replay, leased, previous, afresh = self._begin(key, token, ctx.deadline)
            if replay is not None:
                log.info("idempotent replay", extra={"number": number.masked})
                return {**replay, "replayed": True, "requestId": ctx.request_id}
        answer: Answer = {"outcome": "REJECTED"}
        try:
            answer = self._checked(Draft(afresh, fields, number, agent_id, token, ctx,
                                         self._clock.now(), {
                "requestId": ctx.request_id, "ownerAgentId": agent_id,
                "customerNumberE164": number.e164, "customerTimeZone": ",".join(number.zones),
            }))
        except StoreUnavailable as exc:
            if key is not None and not self._finish(key, token, answer, previous):
                # The key stays in flight until its lease ends: the 503 says when a retry
                # will be served rather than refused with 409.
                exc.retry_after_s = self._idempotency.lease_left_s(leased)
            raise
        except BaseException:
            if key is not None:
                self._finish(key, token, answer, previous)
            raise
        if key is not None:
            self._finish(key, token, answer, previous)
        return answer

    # -- the idempotency key --------------------------------------------------------------

    def _begin(self, key: IdempotencyKey, token: str, deadline: Deadline
               ) -> tuple[Answer | None, float, Answer | None, bool]:
        """Take the key for this request: the answer to replay (if one is stored), when its
        lease started, and, for a derived key that does not replay a callback that has ended
        (or may have), the stored answer it took over (``_finish`` puts it back if this run
        ends with no answer to store) and whether that callback may still be live."""
        for _ in range(_TAKE_OVER_TRIES):
            started = self._idempotency.begin(key, token)
            leased = time.monotonic()
            if started.replay is None or not key.derived:
                return started.replay, leased, None, False
            ended = self._ended(started.replay, deadline)
            if not ended:
                return started.replay, leased, None, False
            if self._idempotency.take_over(key, token, started.replay):
                return None, time.monotonic(), started.replay, ended == _MAYBE_ENDED
            # Another request took the key over first: what it answers (or its 409 while
            # in flight) is read again, never the ended answer just found.
        raise IdempotencyInFlight("A request with this idempotency key is in progress.",
                                  retry_after_s=1)

    def _finish(self, key: IdempotencyKey, token: str, answer: Answer,
                previous: Answer | None) -> bool:
        """Store the idempotent answer (or put back ``previous``, the one it took over, or
        release the key: ``IdempotencyGate.finish``); false if Redis could not."""
        try:
            self._idempotency.finish(key, token, answer, previous)
        except StoreUnavailable:
            # The in-flight lease expires on its own; the caller gets our answer.
            log.warning("could not store the idempotent answer")
            return False
        return True

    def _ended(self, replay: Answer, deadline: Deadline) -> str:
        """Whether the callback a stored answer names has ended (a derived key must not
        replay it: the conversation is asking for a new one): ``_ENDED``, ``_MAYBE_ENDED``
        (unknown), or ``""``. Genesys is asked too: a callback completed there may not have
        been reconciled yet (SPEC §4 Lifecycle 6)."""
        callback_id = str(replay.get("callbackId") or replay.get("existingCallbackId") or "")
        if not callback_id:
            # A QUEUED answer names no callback yet, so whether it has ended is unknown here:
            # the request runs afresh (any pending callback answers DUPLICATE).
            return _MAYBE_ENDED if str(replay.get("outcome")) in ("QUEUED", "DUPLICATE") \
                else ""
        record = self._lifecycle.record(callback_id)
        if record is not None and record.replaced_by:
            # Moved to a new owner: the callback lives on as its replacement (SPEC §4
            # Lifecycle 4), which is what has ended or not.
            record = self._lifecycle.chain(record)[-1]
        if record is None or not record.pending:
            return _ENDED if record is not None else ""
        if not record.in_genesys:
            return ""
        try:
            ended = callback_end_state(self._genesys.get_callback(record.callback_id,
                                                                  deadline))
        except UpstreamError:
            # Unknown: it may have ended, so the request runs afresh rather than replaying.
            # That cannot double it: its claim finds the callback if it is still pending.
            return _MAYBE_ENDED
        if ended is None:
            return ""
        self._lifecycle.close(record, ended)
        return _ENDED

    # -- the steps ------------------------------------------------------------------------

    def _checked(self, d: Draft) -> Answer:
        """The checks that need no claim, then the steps that hold it."""
        if not d.afresh and d.fields.get("consentGiven") is True \
                and not d.fields.get("consentId"):
            start = dict(d.common)
            answer = self._at_once(d)
            if answer is not None:
                return answer
            # Refused, or something in the way: nothing was written, and the usual steps
            # answer afresh, in their order (a call taken from the budget is kept).
            d = Draft(d.afresh, d.fields, d.number, d.agent_id, d.token, d.ctx, d.now, start,
                      reserved=d.reserved)
        # The daily count, the revocation state and the consent relied on: one round trip.
        facts = self._lifecycle.facts(d.number, str(d.fields.get("consentId") or ""))
        return self._daily_cap(d, facts) or self._consent(d, facts) or self._time(d) \
            or self._claimed(d, facts)

    def _at_once(self, d: Draft) -> Answer | None:
        """A create that gives its own consent, with nothing in its way: consent, time and
        owner are checked before anything of the number is read, then one Redis step makes
        the number's checks (daily cap, window, claim, and the consent rule's revocation
        check) and journals it with its consent; then Genesys. Two Redis round trips in all.
        ``None`` when a check refused or the step found anything in its way: nothing was
        written, and ``_checked``'s usual steps answer."""
        verdict = self._consents.check(d.fields, d.number, _UNREAD)
        if verdict.reason != "OK":
            return None
        d.consent_id, d.consent_epoch, d.captured = "", READ_IN_STEP, verdict.captured
        # The time and owner rules run here before the number's cap and revocation are
        # read: only on what the read cache holds, so a create those refuse never calls
        # Genesys (a cold cache sends it down the usual steps, which read the number first).
        try:
            with cached_reads_only():
                if self._time(d) is not None:
                    return None
                # What a DUPLICATE answer carries: the usual steps find it before the owner.
                checked = dict(d.common)
                if self._owner_step(d) is not None:
                    return None
        except NotCached:
            return None
        given = self._given_consent(d)
        ask = self._genesys.budget()
        done = self._lifecycle.claim_and_journal(
            d.number, d.token, self._intent(d), self._payload(d, may_have_run=True),
            epoch_ms(d.now) + self._journal_lease_ms, epoch=READ_IN_STEP, consent=given,
            budget=(ask.client, ask.capacity, ask.per_ms))
        d.reserved = done.rate == 0
        if done.existing:
            # Cap, consent and time passed: the usual claim would answer this one, unless it
            # is being created right now (wait for it) or its record ended (drop its index).
            existing = self._lifecycle.record(done.existing, NumberKeys.shard(d.number.e164))
            if existing is not None and existing.pending and existing.state != "CREATING":
                return self._duplicate(existing, d, checked)
        if done.record is None:
            return None
        if given is not None:
            self._consents.stored(given, d.number)
        d.journaled = done.record
        return self._send(d)

    def _daily_cap(self, d: Draft, facts: NumberFacts) -> Answer | None:
        """The number's cap, read first so a capped number answers in the number step (the
        claim checks it again, atomically)."""
        if facts.created_today < self._lifecycle.daily_limit:
            return None
        return self._out.answer(outcome="REJECTED", reason="TOO_MANY_REQUESTS_FOR_NUMBER",
                                **d.common, message=_DAILY_LIMIT_MESSAGE)

    def _consent(self, d: Draft, facts: NumberFacts) -> Answer | None:
        """Recorded consent (or one given with the request), not revoked since."""
        verdict = self._consents.check(d.fields, d.number, facts)
        if verdict.reason != "OK":
            # Named back only once found as this number's record (revoked since, or stale).
            named = "" if verdict.reason in _UNFOUND_CONSENT else str(
                d.fields.get("consentId") or "")
            return self._out.answer(outcome="REJECTED", reason=verdict.reason,
                                    message=verdict.message, consentId=named, **d.common)
        d.consent_id, d.consent_epoch = verdict.consent_id, verdict.epoch
        d.captured = verdict.captured
        return None

    def _time(self, d: Draft) -> Answer | None:
        """The owner's zone and hours, the customer's calling hours, and the queue."""
        try:
            profile = self._times.profile(d.agent_id, d.now, d.ctx.deadline)
            queue = self._genesys.queue(d.queue_id, d.ctx.deadline)
        except (UpstreamUnavailable, UpstreamRejected) as exc:
            return upstream_failure(self._out, exc, d.common, reading=True)
        refusal = queue_refusal(d.queue_id, queue)
        if refusal:
            # Genesys would refuse the create: say why now, before anything is written.
            return self._out.answer(outcome="REJECTED", reason="UPSTREAM_REJECTED",
                                    message=refusal, **d.common)
        when = self._times.check(self._times.parse(d.fields, profile),
                                 self._times.context(d.now, profile, d.number, queue))
        d.common["agentTimeZone"] = profile.zone
        if not when.ok or when.instant is None:
            return self._out.answer(
                outcome="REJECTED", reason=when.reason, message=when.message, **d.common,
                suggestedTimeUtc=timing.format_utc(when.suggested) if when.suggested else "")
        d.scheduled = when.instant
        d.common.update(time_fields(when.instant, profile.zone, d.number),
                        warnings=",".join(when.warnings))
        return None

    def _claimed(self, d: Draft, facts: NumberFacts) -> Answer:
        """Claim the number (or answer its pending callback); owner and journal hold the
        claim, which the ``with`` releases unless the journal took its place. A number with
        nothing pending takes the warm path first: owner, then claim and journal in one
        step; anything found in its way there sends it down the usual path."""
        if not d.afresh and not facts.pending_indexed:
            answer = self._warm(d)
            if answer is not None:
                return answer
        # Run afresh (a derived key whose callback may not have ended), any pending
        # callback of the number answers, in the window or beyond it, in the same atomic
        # step as the claim; one still being created is waited for like any other.
        claim = self._lifecycle.claim(d.number, d.token, d.ctx.deadline,
                                      beyond_window=d.afresh)
        if claim.existing is not None:
            return self._duplicate(claim.existing, d)
        if claim.over_daily_limit:
            return self._out.answer(outcome="REJECTED", reason="TOO_MANY_REQUESTS_FOR_NUMBER",
                                    **d.common, message=_DAILY_LIMIT_MESSAGE)
        if claim.disconnecting:
            return self._out.answer(
                outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **d.common,
                message="This number's last callback was cancelled, and Genesys Cloud has not "
                "taken its disconnect yet; retry shortly.")
        if not claim.claimed:
            return self._out.answer(
                outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **d.common,
                message="Another request for this number is being created right now; retry "
                "shortly to receive it.")
        with self._lifecycle.claimed(d.number, d.token) as hold:
            answer = (None if d.owner_known else self._owner_step(d)) or self._journal(d, hold)
        return answer or self._send(d)

    def _warm(self, d: Draft) -> Answer | None:
        """The owner, then the claim and the journal (and the consent the request gave) in
        one Redis step, then Genesys; ``None`` when the step found the number claimed, a
        callback pending or the daily cap reached (the usual path then waits or answers)."""
        before = dict(d.common)
        answer = self._owner_step(d)
        if answer is not None:
            return answer
        given = self._given_consent(d)
        ask = self._genesys.budget()
        done = self._lifecycle.claim_and_journal(
            d.number, d.token, self._intent(d), self._payload(d, may_have_run=True),
            epoch_ms(d.now) + self._journal_lease_ms, epoch=d.consent_epoch, consent=given,
            budget=(ask.client, ask.capacity, ask.per_ms))
        if done.status == "REVOKED":
            # Consent comes before the owner (SPEC §3.1): no owner decision in the answer.
            # It names the recorded consent it relied on, never one it gave (not stored).
            d.common = {**before, "consentId": "" if given is not None else d.consent_id}
            return self._revoked_meanwhile(d)
        d.reserved = done.rate == 0
        if done.record is None:
            # Nothing was written, the consent and the budget's call included: the usual
            # path answers as if this step had not run (the owner rule runs again under its
            # claim, after the window and the cap, in SPEC §3.1's order), and a create it
            # journals stores the consent with its own journal.
            d.common = before
            d.assigned, d.owner_known = "", False
            if given is not None:
                d.consent_id = ""
            return None
        if given is not None:
            self._consents.stored(given, d.number)
        d.journaled = done.record
        return self._send(d)

    def _given_consent(self, d: Draft) -> ConsentWrite | None:
        """The consent the request gave, to store with its journal (``None`` when it relies
        on one recorded before); the create command names it."""
        given = None if d.consent_id else self._consents.prepare(
            d.number, d.fields, d.captured or d.now, via="create-callback")
        if given is not None:
            d.consent_id = given.record["consentId"]
        d.command = create_command(d.fields, d.number, d.assigned, timing.format_utc(d.at),
                                   d.token, d.consent_id)
        d.common["consentId"] = d.consent_id
        return given

    def _intent(self, d: Draft) -> LedgerRecord:
        """The journal's record of the create."""
        return LedgerRecord(
            callback_id=f"queued-{d.token}", number_key="", scheduled_ms=epoch_ms(d.at),
            agent_id=d.assigned, queue_id=d.queue_id, state="CREATING", acd_id="",
            request_token=d.token, created_ms=epoch_ms(d.now), consent_id=d.consent_id,
            e164=d.number.e164)

    def _revoked_meanwhile(self, d: Draft) -> Answer:
        return self._out.answer(outcome="REJECTED", reason="CONSENT_REVOKED", **d.common,
                                message="Consent was withdrawn while the callback was "
                                "being checked; nothing was created.")

    def _owner_step(self, d: Draft) -> Answer | None:
        """The owner, or who takes over when the owner is unavailable then (SPEC §4 Owner)."""
        try:
            decision = self._owner.resolve(
                d.agent_id, d.queue_id, d.at, d.ctx.deadline,
                allow_reassignment=d.fields.get("allowReassignment", True) is not False)
        except (UpstreamUnavailable, UpstreamRejected) as exc:
            return upstream_failure(self._out, exc, d.common, reading=True)
        if decision.outcome == "UNKNOWN_AGENT":
            return self._out.answer(outcome="REJECTED", reason="UNKNOWN_AGENT", **d.common,
                                    message=f"The agent id {d.agent_id} is not a Genesys user.")
        if decision.outcome == "NONE":
            return self._out.answer(
                outcome="REJECTED", reason="NO_AVAILABLE_OWNER", **d.common,
                reassignReason=decision.reassign_reason,
                message=f"The agent is unavailable ({decision.reassign_reason}) and no one "
                "else may own the callback.")
        d.assigned, d.owner_known = decision.assigned, True
        if decision.reassigned:
            zone = decision.profile.zone if decision.profile is not None else ""
            d.common.update(time_fields(d.at, zone, d.number), reassigned=True,
                            reassignReason=decision.reassign_reason)
        return None

    def _journal(self, d: Draft, hold: Hold) -> Answer | None:
        """Write the request before Genesys sees it: from here on it is never lost, and a
        crash before the outcome is recorded is resolved by the worker without a second
        callback. The journal re-checks that no revocation was stored since the consent step
        and that the claim is still ours."""
        given = self._given_consent(d)
        done = self._lifecycle.journal_status(
            d.number, d.token, self._intent(d), payload=self._payload(d, may_have_run=True),
            resolve_after_ms=epoch_ms(d.now) + self._journal_lease_ms, epoch=d.consent_epoch,
            consent=given)
        d.journaled = done.record
        if given is not None and d.journaled is not None:
            self._consents.stored(given, d.number)
        if d.journaled is None:
            if given is not None:
                d.common["consentId"] = ""  # not stored: the answer names none
            if done.status == "LOST":
                # The claim ran out while the owner was read and another request holds the
                # number now: not a revocation; a retry gets that request's callback.
                return self._out.answer(
                    outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **d.common,
                    message="Another request for this number is being created right now; "
                    "retry shortly to receive it.")
            return self._revoked_meanwhile(d)
        hold.journaled()
        return None

    def _payload(self, d: Draft, *, may_have_run: bool) -> dict[str, Any]:
        ledger_id = d.journaled.callback_id if d.journaled else f"queued-{d.token}"
        return {"command": d.command, "ledgerId": ledger_id, "e164": d.number.e164,
                "mayHaveRun": may_have_run, "acceptedMs": epoch_ms(d.now)}

    def _send(self, d: Draft) -> Answer:
        """Create it in Genesys, then deliver it (or QUEUE it, or take it back)."""
        journaled = d.journaled
        if journaled is None:
            raise RuntimeError("the journal step has not run")
        reserved, d.reserved = d.reserved, False
        try:
            created = self._genesys.create_callback(d.command, d.ctx.deadline, reserved)
        except UpstreamUnavailable as exc:
            return self._queued(d, journaled, exc)
        except UpstreamRejected as exc:
            self._lifecycle.abandon(journaled)
            return upstream_failure(self._out, exc, d.common)
        acd = next((i["id"] for i in created.identifiers if i["type"] == "ACD"), "")
        if self._lifecycle.deliver(d.number, journaled, created.conversation_id, acd,
                                   epoch_ms(d.at)) is None:
            self.undo(d.number, journaled, created.conversation_id, acd, d.ctx.deadline)
            return self._out.answer(outcome="REJECTED", reason="CONSENT_REVOKED", **d.common,
                                    message="Consent was withdrawn while the callback was "
                                    "being created; it was cancelled.")
        # The request line names the callback, its owner and the masked number.
        return self._out.answer(outcome="CREATED", reason="OK",
                                callbackId=created.conversation_id, assignedAgentId=d.assigned,
                                message=f"Callback scheduled for {timing.format_utc(d.at)}.",
                                **d.common)

    def _queued(self, d: Draft, journaled: LedgerRecord, exc: UpstreamUnavailable) -> Answer:
        """Genesys could not take it now: the outbox will, and the caller must not retry."""
        wait_s = max(exc.retry_after_s or 1, self._settle_s if exc.may_have_run else 0)
        self._lifecycle.defer(journaled, self._payload(d, may_have_run=exc.may_have_run),
                              epoch_ms(d.now) + int(1000 * wait_s))
        log.warning("genesys unavailable: callback queued", extra={
            "error": exc.message, "number": d.number.masked, "mayHaveRun": exc.may_have_run})
        return self._out.answer(
            outcome="QUEUED", reason="UPSTREAM_UNAVAILABLE", **d.common,
            assignedAgentId=d.assigned,
            message="Accepted: Genesys Cloud is unreachable right now, so the callback will "
            "be created shortly. Do not retry.") | {"retryable": False}

    def _duplicate(self, existing: LedgerRecord, d: Draft,
                   common: dict[str, Any] | None = None) -> Answer:
        """The number's pending callback, answered instead of a second one: every field
        describes that callback (``common``: the request's fields to start from, by default
        ``d.common``), none this request's own time or owner decision."""
        common = d.common if common is None else common
        instant = from_ms(existing.scheduled_ms)
        when = timing.format_utc(instant)
        # A queued callback has no Genesys id yet; flows see it as pending all the same.
        shown_id = existing.callback_id if existing.in_genesys else ""
        log.info("duplicate found", extra={"callbackId": existing.callback_id})
        return self._out.answer(**{
            **common,
            "outcome": "DUPLICATE", "reason": "DUPLICATE_PENDING",
            "message": f"A callback for this number is already scheduled for {when}; "
                       "no new one was created.",
            "callbackId": shown_id, "scheduledTimeUtc": when,
            "assignedAgentId": existing.agent_id, "existingCallbackId": shown_id,
            "existingScheduledTimeUtc": when, "existingAgentId": existing.agent_id,
            **time_fields(instant, self._owner_zone(existing.agent_id, d, common), None,
                          str(common["customerTimeZone"])),
            # The request's warnings are of its own time, and the owner rule may have run
            # for it (the warm step): neither is of the callback named.
            "warnings": "", "reassigned": False, "reassignReason": "",
        })

    def _owner_zone(self, agent_id: str, d: Draft, common: dict[str, Any]) -> str:
        """A pending callback's owner's zone, from what this request read already (its
        time step read the agent asked for, into ``common``) or the read cache; ``""`` when
        neither has it: a DUPLICATE never waits on Genesys for a field of its answer."""
        if not agent_id:
            return ""
        if agent_id == d.agent_id and "agentTimeZone" in common:
            return str(common["agentTimeZone"])
        try:
            with cached_reads_only():
                return self._times.profile(agent_id, d.now, d.ctx.deadline).zone
        except (NotCached, UpstreamError):
            return ""

    def undo(self, number: CustomerNumber, journaled: LedgerRecord, callback_id: str,
             acd_id: str, deadline: Deadline) -> None:
        """Disconnect a callback Genesys created after its request was cancelled; if that
        fails, record it cancelled with its disconnect pending: the worker retries it, and the
        number gets no second callback beside it meanwhile."""
        try:
            self._genesys.disconnect_callback(callback_id, acd_id, deadline)
            log.info("callback cancelled during creation", extra={"callbackId": callback_id})
        except UpstreamError as exc:
            log.error("callback created after its cancellation is still scheduled", extra={
                "callbackId": callback_id, "error": exc.message})
            self._lifecycle.keep_cancelled(number, replace(
                journaled, callback_id=callback_id, acd_id=acd_id, number_key="",
                replaced_by=""))
