"""A callback's life: the only code that changes a ledger record or its indexes.

Each public method below that writes is one named transition of SPEC §4 Lifecycle, made of
one atomic Redis step that re-checks, at commit, every guard the change relies on (no
revocation stored since the consent check, the number's claim still ours, the record's
version unchanged); a transition whose guard no longer holds writes nothing and says so.

    claim / release    the number, for one create at a time (``claimed`` is the ``with``)
    journal            the create's intent, before Genesys sees it (CREATING)
    claim_and_journal  both at once, for a number with nothing in the way (the warm path)
    deliver            Genesys holds it: the real record takes the journal's place (PENDING)
    defer              Genesys could not take it now: QUEUED, for the outbox
    abandon            Genesys refused it: gone, as if never asked for
    keep               created after it was cancelled and could not be undone: PENDING again
    ask_cancel         a disconnect is being sent (so a reply lost on the way still counts)
    ask_reschedule     a PATCH is being sent (the worker reads the callback if it never commits)
    cancel / close     out of the window for good (CANCELLED, COMPLETED, DISCONNECTED...)
    reschedule         a new time, only on the version read
    move / unlink      an owner move starts (the old callback links its replacement) or fails
    replace            the replacement is live: the old callback ends REASSIGNED
    dead_letter        the outbox gave up: out of the window, kept for a replay
    replay             a dead letter back in the outbox, after consent and window checks again

The duplicate window lives here too, because finding a number's pending callback and
claiming the number are one step: a number has a pending callback when the ledger holds one
for it that is not ended and is due no later than now + the window; concurrent requests
through any number of workers and instances create exactly one callback (the winner
creates, the others wait for its result and answer DUPLICATE with it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from middleware.clock import Clock
from middleware.deadline import Deadline
from middleware.ledger.records import TERMINAL_STATES, LedgerRecord, State, history_event
from middleware.rules.consent import well_formed_id
from middleware.rules.number import CustomerNumber, NumberKeys
from middleware.store import (
    SHARDS,
    ConsentWrite,
    NumberFacts,
    OutboxEntry,
    Store,
    window_check,
)

#: Owned callbacks live at most 168 h past their time in Genesys; older entries are stale.
FORGET_AFTER: Final = timedelta(days=8)
#: The sweep's slice of each shard's packed records and windows, in trim pages.
SWEEP_PAGES: Final = 10
_POLL_S: Final = 0.025
# Leave this much of the deadline to answer after waiting for another request's create.
_ANSWER_MARGIN_S: Final = 0.3
#: A window end no scheduled time reaches: every pending callback, however far ahead.
_NO_END_MS: Final = 2**62


#: How long after the last attempt that may have run a create it is still looked for.
LATE_CREATE_WATCH: Final = timedelta(minutes=15)
#: A change in doubt is read back by the worker no sooner than this after it was asked
#: (the request itself is still making sure within its deadline until then).
DOUBT_AFTER: Final = timedelta(seconds=10)
#: How long a reschedule left in doubt keeps the number's claim: until the worker has read
#: the callback back (``DOUBT_AFTER``, then its next reconcile round, every
#: RECONCILE_INTERVAL_SECONDS, 60 by default) and the ledger holds the time Genesys holds.
IN_DOUBT_CLAIM: Final = timedelta(minutes=3)
#: How often one process notes again a queue it wrote a callback on (the worker keeps
#: the queues seen recently).
_QUEUE_NOTE_S: Final = 600.0


def epoch_ms(instant: datetime) -> int:
    """Milliseconds since the epoch, the score of the ledger's sorted sets."""
    return int(instant.timestamp() * 1000)


@dataclass(frozen=True)
class Claim:
    """``existing`` is set for a duplicate; ``busy`` when another request kept the number."""

    claimed: bool
    existing: LedgerRecord | None = None
    busy: bool = False
    over_daily_limit: bool = False
    #: The number's callback was cancelled here and Genesys has not let it go yet.
    disconnecting: bool = False


@dataclass(frozen=True)
class Journaled:
    """What ``claim_and_journal`` or ``journal_status`` did: its status, the record
    journaled (``OK`` only) and the Genesys budget's answer (0: a call taken for the create;
    ``None``: not asked)."""

    status: str
    record: LedgerRecord | None
    rate: int | None
    #: ``DUPLICATE``: the id indexed pending in the window (its record may have ended).
    existing: str = ""


class Hold:
    """A claim held by a ``with``: a journal that took the claim's place marks it kept."""

    def __init__(self) -> None:
        self.kept = False

    def journaled(self) -> None:
        """The journal dropped the claim itself: nothing is left to release."""
        self.kept = True


class Change:
    """A change held by ``Lifecycle.changing``: one sent and not confirmed is in doubt."""

    def __init__(self) -> None:
        self.in_doubt = False


class Lifecycle:
    """The guarded transitions of a callback's life, and the reads they rely on."""

    def __init__(self, store: Store, keys: NumberKeys, window: timedelta, claim_ttl: timedelta,
                 clock: Clock, evidence_ttl: timedelta, daily_limit: int = 3) -> None:
        self._store = store
        self._evidence_ttl_s = int(evidence_ttl.total_seconds())
        self._daily_limit = daily_limit
        self._keys = keys
        self._window = window
        self._claim_ttl_ms = int(claim_ttl.total_seconds() * 1000)
        self._clock = clock
        self._queues_noted: dict[str, float] = {}

    @property
    def window_hours(self) -> int:
        """The window's length, as flows see it."""
        return int(self._window.total_seconds() // 3600)

    def enters_window(self, record: LedgerRecord, scheduled_ms: int) -> bool:
        """Whether moving ``record`` to ``scheduled_ms`` brings it into the window from
        beyond it (where another callback of the number may be pending)."""
        end = epoch_ms(self._clock.now() + self._window)
        return record.scheduled_ms > end >= scheduled_ms

    def claim(self, number: CustomerNumber, token: str, deadline: Deadline, *,
              capped: bool = True, beyond_window: bool = False) -> Claim:
        """Claim the number for ``token``, or return the pending callback that blocks it.

        While another request holds the claim (it is creating right now), wait for its
        result within the deadline: it either becomes the pending callback we return, or
        is released and we claim. ``capped``: the daily cap applies (not to a reschedule,
        which creates nothing new). ``beyond_window``: a pending callback at any time
        blocks it, not only one in the window (a derived key run afresh, whose check of
        the number must be as atomic as the window's).
        """
        digests = self._keys.all(number.e164)
        while True:
            now = self._clock.now()
            result = self._store.claim_window(
                digests, token, _NO_END_MS if beyond_window else epoch_ms(now + self._window),
                self._claim_ttl_ms,
                epoch_ms(now - FORGET_AFTER), epoch_ms(now),
                self._daily_limit if capped else 2**31)
            if result.status == "CLAIMED":
                return Claim(claimed=True)
            if result.status == "LIMIT":
                return Claim(claimed=False, over_daily_limit=True)
            if result.status == "DUPLICATE":
                record = self.record(result.callback_id, NumberKeys.shard(number.e164))
                if record is not None and record.state == "CREATING":
                    # Being created right now: wait for its id, as for a held claim.
                    if deadline.remaining() <= _ANSWER_MARGIN_S + _POLL_S:
                        return Claim(claimed=False, busy=True)
                    time.sleep(_POLL_S)
                    continue
                if record is not None and record.pending:
                    return Claim(claimed=False, existing=record)
                if record is not None and record.disconnecting:
                    # Cancelled, but Genesys still holds it: no second one beside it.
                    return Claim(claimed=False, busy=True, disconnecting=True)
                # The index outlived its record (or its end): drop it, then look again.
                self._store.unindex(result.callback_id, digests)
                continue
            if deadline.remaining() <= _ANSWER_MARGIN_S + _POLL_S:
                return Claim(claimed=False, busy=True)
            time.sleep(_POLL_S)

    def facts(self, number: CustomerNumber, consent_id: str) -> NumberFacts:
        """What a create checks first, in one round trip: the number's daily count, its
        revocation state, the consent record ``consent_id`` names (if well formed) and
        whether a callback is indexed pending in its window."""
        now = self._clock.now()
        return self._store.number_facts(
            self._keys.all(number.e164), consent_id if well_formed_id(consent_id) else "",
            epoch_ms(now), epoch_ms(now + self._window))

    @property
    def daily_limit(self) -> int:
        """Callbacks a number may get in any 24 hours."""
        return self._daily_limit

    def _ttl_s(self, record: LedgerRecord) -> int:
        """A record lives until a week past its time: long after Genesys has let it go."""
        ahead = max(record.scheduled_ms - epoch_ms(self._clock.now()), 0) // 1000
        return ahead + int(FORGET_AFTER.total_seconds())

    def _event(self, event: str, record: LedgerRecord, replaces: str = ""
               ) -> dict[str, str | int]:
        # Everything a person needs once the record has expired, which is long before the
        # evidence does: the consent relied on, the owner, the queue and the time.
        return history_event(event, epoch_ms(self._clock.now()), callbackId=record.callback_id,
                             state=str(record.state), consentId=record.consent_id,
                             agentId=record.agent_id, queueId=record.queue_id,
                             scheduledMs=record.scheduled_ms, replaces=replaces)

    def _closed(self, callback_id: str, state: str) -> dict[str, str | int]:
        return history_event("callback-closed", epoch_ms(self._clock.now()),
                             callbackId=callback_id, state=state)

    @contextmanager
    def claimed(self, number: CustomerNumber, token: str) -> Iterator[Hold]:
        """The claim ``claim`` took, released however the block ends (a refusal, an error)
        unless the block's journal took its place (``Hold.journaled``)."""
        hold = Hold()
        try:
            yield hold
        finally:
            if not hold.kept:
                self.release(number, token)

    def keep_claim(self, number: CustomerNumber, token: str, hold: Hold) -> None:
        """A change sent under the number's claim is in doubt (it may have landed): the claim
        outlives the ``with`` for ``IN_DOUBT_CLAIM``, so no create takes the window while
        the ledger may not hold the time Genesys holds."""
        self._store.extend_claim(self._keys.all(number.e164), token,
                                 int(IN_DOUBT_CLAIM.total_seconds() * 1000))
        hold.journaled()

    @contextmanager
    def changing(self, record: LedgerRecord, deadline: Deadline, settle_s: float
                 ) -> Iterator[Change | None]:
        """Hold the callback's change lock while a change is sent to Genesys and committed
        (``None``: another change holds it past the deadline), so two reschedules or a
        reschedule and an owner move never land in Genesys in one order and commit here in
        the other. A change left in doubt (``Change.in_doubt``) keeps the lock until it
        expires ``settle_s`` after the deadline: the next change cannot overtake a PATCH that
        may still land."""
        holder = uuid.uuid4().hex
        ttl_ms = int(1000 * (max(deadline.remaining(), 0.0) + settle_s))
        while not self._store.lock_change(record.callback_id, holder, ttl_ms):
            if deadline.remaining() <= _ANSWER_MARGIN_S + _POLL_S:
                yield None
                return
            time.sleep(_POLL_S)
        change = Change()
        try:
            yield change
        finally:
            if not change.in_doubt:
                self._store.unlock_change(record.callback_id, holder)

    # -- reads ---------------------------------------------------------------------------

    def record(self, callback_id: str, shard: str | None = None) -> LedgerRecord | None:
        """A callback of the ledger, or ``None`` (``shard`` unknown, as for an id a caller
        gave: every shard is read, in the same one round trip)."""
        raw = self._store.callback(callback_id, shard)
        return LedgerRecord.from_fields(raw) if raw else None

    def records(self, callback_ids: list[str], shard: str | None = None
                ) -> list[LedgerRecord]:
        """Several records in one round trip, skipping those that are gone."""
        if not callback_ids:
            return []
        return [LedgerRecord.from_fields(raw)
                for raw in self._store.callbacks(callback_ids, shard)]

    def chain(self, record: LedgerRecord, hops: int = 5) -> list[LedgerRecord]:
        """The record and the replacements its ``replaced_by`` links lead to (bounded, so a
        cycle cannot hold a request); the last is the one that now stands for it."""
        chain = [record]
        while record.replaced_by and len(chain) <= hops:
            found = self.record(record.replaced_by, record.shard)
            if found is None or any(r.callback_id == found.callback_id for r in chain):
                break
            chain.append(found)
            record = found
        return chain

    # -- transitions ---------------------------------------------------------------------

    def keep(self, number: CustomerNumber, token: str, record: LedgerRecord, *,
             event: str = "callback", replaces: str = "") -> None:
        """Record a created callback in the window and the number's evidence history, and
        release the claim (a create that landed after its cancel and could not be undone)."""
        digest = self._keys.current(number.e164)
        self._note_queue(record.queue_id)
        self._store.commit_callback(digest, token, replace(
            record, number_key=digest, number_keys=self._keys.all(number.e164)),
                                    self._ttl_s(record), self._event(event, record, replaces),
                                    self._evidence_ttl_s)

    def reschedule(self, record: LedgerRecord, scheduled_ms: int) -> bool:
        """Give a pending callback its new time in the window and the history; false when
        the record changed since it was read (nothing written)."""
        now = self._clock.now()
        return self._store.move_callback(record, scheduled_ms, self._ttl_s(
            replace(record, scheduled_ms=scheduled_ms)), history_event(
            "callback-rescheduled", epoch_ms(now), callbackId=record.callback_id,
            scheduledMs=scheduled_ms), self._evidence_ttl_s)

    def journal(self, number: CustomerNumber, token: str, record: LedgerRecord,
                payload: dict[str, Any], resolve_after_ms: int, *,
                counts: bool = True, epoch: int = -1, consent: ConsentWrite | None = None
                ) -> LedgerRecord | None:
        """Write the create's intent before Genesys sees it (state CREATING): it holds the
        window and releases the claim, and if this process dies before ``deliver`` or
        ``defer``, the worker resolves it from ``resolve_after_ms`` on (finding the callback
        by its token, or creating it). Returns the record as stored, or ``None`` when a
        revocation was stored since the consent check that read ``epoch`` (nothing written).
        ``consent``: the consent the request gave, stored in the same step only when the
        journal takes (a create refused here keeps no consent of its own).
        """
        return self.journal_status(number, token, record, payload, resolve_after_ms,
                                   counts=counts, epoch=epoch, consent=consent).record

    def journal_status(self, number: CustomerNumber, token: str, record: LedgerRecord,
                       payload: dict[str, Any], resolve_after_ms: int, *,
                       counts: bool = True, epoch: int = -1,
                       consent: ConsentWrite | None = None) -> Journaled:
        """``journal``, saying why when nothing was written: ``REVOKED`` (a revocation
        stored since the consent check) or ``LOST`` (the number's claim expired and another
        request holds it)."""
        # Written under every digest, so instances on an older PII_KEYS list see it too.
        stored = replace(record, number_key=self._keys.current(number.e164),
                         number_keys=self._keys.all(number.e164), state="CREATING")
        if consent is not None:
            # The consent the request gave goes in the same transaction: one round trip.
            status, _ = self._store.journal_create(
                consent, stored.number_key, token, stored, self._ttl_s(record),
                self._evidence_ttl_s, payload, resolve_after_ms, epoch)
        else:
            status = self._store.queue_callback(stored.number_key, token, stored,
                                                self._ttl_s(record), None,
                                                self._evidence_ttl_s, payload,
                                                resolve_after_ms, counts, epoch=epoch)
        return Journaled(status, stored if status == "OK" else None, None)

    def claim_and_journal(self, number: CustomerNumber, token: str, record: LedgerRecord,
                          payload: dict[str, Any], resolve_after_ms: int, *, epoch: int,
                          consent: ConsentWrite | None = None,
                          budget: tuple[str, int, float] | None = None) -> Journaled:
        """``claim`` and ``journal`` in one step, for a number with nothing in its way (the
        warm path): ``OK`` with the record; ``REVOKED`` as ``journal``; or ``DUPLICATE``,
        ``BUSY``, ``LIMIT`` when a claim would not have been granted now, with nothing
        written (the caller then claims as usual, which waits or answers). With ``epoch``
        ``READ_IN_STEP`` the step makes the consent rule's revocation check itself
        (``REVOKED`` while the number stands revoked). A consent given with the request is
        stored in the same step, and a call taken from the Genesys ``budget`` where the
        store can (``Journaled.rate``), both only when it answers ``OK``: a refused create
        keeps no consent and spends no call."""
        now = self._clock.now()
        stored = replace(record, number_key=self._keys.current(number.e164),
                         number_keys=self._keys.all(number.e164), state="CREATING")
        check = window_check(epoch_ms(now + self._window), epoch_ms(now - FORGET_AFTER),
                             epoch_ms(now), self._daily_limit)
        # The consent and the Genesys call only if the step journals: refused here, the
        # create is answered by the usual steps, or as the DUPLICATE this step found.
        status, rate = self._store.journal_create(
            consent, stored.number_key, token, stored, self._ttl_s(record),
            self._evidence_ttl_s, payload, resolve_after_ms, epoch, claimed=check, rate=budget)
        status, _, found = status.partition(":")
        return Journaled(status, stored if status == "OK" else None, rate, found)

    def cancel_later(self, record: LedgerRecord) -> bool:
        """A revocation (or a cancel) could not disconnect this callback now: it is cancelled
        here at once, the worker finishes the disconnect, and until then the number's window
        stays blocked, so the revoked number keeps no live callback and never gets a second
        one beside it (SPEC §4 Lifecycle 1, 2). False when it had ended meanwhile."""
        return self._store.disconnect_later(record, self._ttl_s(record), self._event(
            "callback-closed", replace(record, state=State.CANCELLED)), self._evidence_ttl_s)

    def keep_cancelled(self, number: CustomerNumber, record: LedgerRecord) -> None:
        """A create that landed after its request was cancelled, and could not be undone:
        recorded cancelled with its disconnect pending, blocking the window as above."""
        stored = replace(record, number_key=self._keys.current(number.e164),
                         number_keys=self._keys.all(number.e164), state=State.PENDING)
        self._store.disconnect_later(stored, self._ttl_s(stored), self._event(
            "callback-closed", replace(stored, state=State.CANCELLED)), self._evidence_ttl_s,
            write=True)

    def disconnected(self, record: LedgerRecord) -> None:
        """The pending disconnect of a cancelled callback landed: the window is free."""
        self._store.disconnected(record)

    def revocation_epoch(self, number: CustomerNumber) -> int | None:
        """The number's revocation epoch for a guarded journal, or ``None`` while it stands
        revoked."""
        revoked, lifted = self._store.consent_state(self._keys.all(number.e164))
        return None if revoked > lifted else revoked

    def disconnecting(self, number: CustomerNumber) -> list[LedgerRecord]:
        """The number's cancelled callbacks whose disconnect is still to land."""
        found = self._store.pending_in_window(self._keys.all(number.e164), _NO_END_MS)
        return [r for r in self.records([cid for cid, _ in found]) if r.disconnecting]

    def watch_late_create(self, token: str, e164: str, since_ms: int) -> None:
        """A create sent with ``token`` may land after we stop waiting for it: the orphan
        sweep looks for it for ``LATE_CREATE_WATCH`` from now."""
        self._store.watch_orphan(NumberKeys.shard(e164), token, e164, since_ms, epoch_ms(
            self._clock.now() + LATE_CREATE_WATCH))

    def defer(self, record: LedgerRecord, payload: dict[str, Any], next_ms: int) -> bool:
        """Genesys could not take the journaled create now: it stays in the window, QUEUED
        (false, nothing written, when it was cancelled meanwhile)."""
        if payload.get("mayHaveRun"):
            self.watch_late_create(record.request_token, record.e164,
                                   int(payload.get("acceptedMs") or record.created_ms))
        return self._store.defer_journaled(record, payload, next_ms, self._event(
            "callback-queued", replace(record, state="QUEUED")), self._evidence_ttl_s)

    def deliver(self, number: CustomerNumber, journaled: LedgerRecord, callback_id: str,
                acd_id: str, scheduled_ms: int) -> LedgerRecord | None:
        """The journaled callback exists in Genesys: the real record takes its place.

        ``None`` when the request was cancelled (or consent revoked) while Genesys was
        creating it: the caller must then disconnect the callback it just created.
        """
        real = replace(journaled, callback_id=callback_id, acd_id=acd_id, state="PENDING",
                       scheduled_ms=scheduled_ms, number_key=self._keys.current(number.e164),
                       replaced_by="")
        self._note_queue(real.queue_id)
        if not self._store.deliver_journaled(journaled, real, self._ttl_s(real),
                                             self._event("callback", real),
                                             self._evidence_ttl_s):
            return None
        return real

    def _note_queue(self, queue_id: str) -> None:
        """Tell the worker's reconciliation which queue to query, once every few minutes
        per process (not a Redis round trip per create)."""
        now = time.monotonic()
        if queue_id and now - self._queues_noted.get(queue_id, -_QUEUE_NOTE_S) >= _QUEUE_NOTE_S:
            self._store.note_queues([queue_id], epoch_ms(self._clock.now()))
            self._queues_noted[queue_id] = now

    def note_queues(self, queue_ids: list[str]) -> None:
        """Queues the worker found pending callbacks on (records written elsewhere)."""
        self._store.note_queues(queue_ids, epoch_ms(self._clock.now()))

    def replay(self, number: CustomerNumber, token: str, record: LedgerRecord,
               deadline: Deadline, epoch: int) -> str:
        """Replay a dead letter like a new request, once the consent rule has let it
        (``epoch``: the revocation epoch that check read): it claims the window again, and
        the step that puts it back re-checks the claim and that no revocation came since.
        Returns ``""`` when it is back in the outbox, else why it stays a dead letter."""
        digests = self._keys.all(number.e164)
        claim = self.claim(number, token, deadline)
        if claim.existing is not None:
            return "DUPLICATE_PENDING: the number has a pending callback in the window"
        if claim.over_daily_limit:
            return "TOO_MANY_REQUESTS_FOR_NUMBER: the number's daily cap is reached"
        if not claim.claimed:
            return "BUSY: another request for the number is being created; replay later"
        now = self._clock.now()
        # Indexed at the time it is due now, not one that has passed: an entry long past
        # would leave the window (FORGET_AFTER) before the outbox creates it, and a second
        # create for the number would then go through. The record keeps its own time until
        # the outbox moves it to the next valid instant, as for any queued callback whose
        # time has passed (no answer names an instant the rules have not checked).
        queued = replace(record, state="QUEUED")
        due_ms = max(record.scheduled_ms, epoch_ms(now))
        status = self._store.replay_dead_letter(
            token, digests, record.callback_id, record.agent_id, due_ms,
            self._ttl_s(record), epoch, epoch_ms(now),
            self._event("callback-queued", queued), self._evidence_ttl_s)
        if status == "OK":
            return ""
        self.release(number, token)
        return {"REVOKED": "CONSENT_REVOKED: the customer withdrew consent meanwhile",
                "LOST": "BUSY: another request for the number took the window; replay later",
                }.get(status, "GONE: no longer a dead letter")

    def abandon(self, journaled: LedgerRecord) -> None:
        """Genesys refused the journaled create: it leaves the window, the outbox and the
        daily count, as if it had never been asked for."""
        self._store.close_callback(journaled, "CANCELLED", None, self._evidence_ttl_s)
        self._store.uncount_creation(journaled.digests, journaled.request_token)
        self._store.finish_outbox(journaled.shard, journaled.request_token)

    def close(self, record: LedgerRecord, state: str) -> None:
        """Take a callback out of the window for good (cancelled, completed, disconnected)."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state} is not a terminal state")
        self._store.close_callback(record, state, self._closed(record.callback_id, state),
                                   self._evidence_ttl_s)

    def cancel(self, record: LedgerRecord) -> None:
        """The callback was cancelled (in Genesys, or before it got there)."""
        self.close(record, State.CANCELLED)

    def ask_cancel(self, record: LedgerRecord) -> None:
        """A disconnect is being sent: if the callback is later seen ended unanswered, it
        ended cancelled."""
        self._store.mark_cancel_asked(record.shard, record.callback_id, epoch_ms(
            self._clock.now() + DOUBT_AFTER))

    def ask_reschedule(self, record: LedgerRecord) -> None:
        """A PATCH with a new time is being sent: until the reschedule commits, the worker
        reads the callback back and takes the time Genesys holds."""
        now = self._clock.now()
        self._store.mark_reschedule_asked(record.shard, record.callback_id, epoch_ms(now),
                                          epoch_ms(now + DOUBT_AFTER))

    def settle(self, record: LedgerRecord, *, still_in_doubt: bool = False) -> None:
        """Genesys was read for this in-doubt callback: its reschedule (as read) is no
        longer in doubt; it leaves the worker's reads unless ``still_in_doubt``."""
        again = epoch_ms(self._clock.now() + DOUBT_AFTER)
        if still_in_doubt:
            self._store.doubt(record.shard, [record.callback_id], again)
            return
        # Out of the reads first: a reschedule asking meanwhile leaves its flag, seen below.
        self._store.settle_doubt(record.shard, [record.callback_id])
        if record.reschedule_asked_ms and not self._store.clear_reschedule_asked(
                record.shard, record.callback_id, record.reschedule_asked_ms):
            self._store.doubt(record.shard, [record.callback_id], again)

    def forget_doubt(self, shard: str, callback_ids: list[str]) -> None:
        """These callbacks of the shard ended or are gone: no longer read as in doubt."""
        self._store.settle_doubt(shard, callback_ids)

    def doubt(self, shard: str, callback_ids: list[str]) -> None:
        """Read these callbacks of the shard one by one (the interval query cannot reach
        them)."""
        self._store.doubt(shard, callback_ids, epoch_ms(self._clock.now()))

    def move(self, record: LedgerRecord, replacement: LedgerRecord) -> bool:
        """An owner move starts: the callback links its journaled replacement, only while it
        is still the version read with the link read (false, nothing written, otherwise: a
        reschedule, cancel or other move came first)."""
        return self._store.relink_replacement(record.shard, record.callback_id,
                                              record.replaced_by, replacement.callback_id,
                                              record.version)

    def unlink(self, replacement: LedgerRecord, old_id: str) -> None:
        """The move failed (refused, undone or dead-lettered): the old callback stays the
        customer's, no longer linked to ``replacement`` (of the same number, so of the same
        shard)."""
        self._store.relink_replacement(replacement.shard, old_id, replacement.callback_id, "")

    def replace(self, record: LedgerRecord) -> None:
        """The replacement is live and the old callback disconnected: it ended
        REASSIGNED."""
        self.close(record, State.REASSIGNED)

    def forget_replacement(self, shard: str, callback_id: str) -> None:
        """Stop retrying the disconnect of a replaced callback (it has ended)."""
        self._store.forget_replacement(shard, callback_id)

    def forget_gone(self, shard: str, callback_ids: list[str]) -> None:
        """Drop index entries whose records expired long after their time."""
        self._store.forget_pending(shard, callback_ids)

    def trim(self, limit: int) -> int:
        """One bounded round of keeping the shared indexes small, shard by shard: entries
        scheduled before the window and a week ago, the next page of the worker's index
        whose records are gone, the stale entries of the owners met on that page, and ended
        callbacks in the disconnect sets. Returns how many entries went."""
        before_ms = epoch_ms(self._clock.now() - self._window - FORGET_AFTER)
        gone = 0
        for shard in SHARDS:
            gone += self._store.trim_stale_pending(shard, before_ms, limit)
            page = self._store.pending_page(shard, self._store.walk_cursor(shard, "trim"),
                                            limit)
            ids = [cid for cid, _ in page]
            found = self.records(ids, shard)
            held = {r.callback_id for r in found}
            missing = [cid for cid in ids if cid not in held]
            if missing:
                self._store.forget_pending(shard, missing)
            gone += len(missing)
            self._store.trim_owned(shard, sorted({r.agent_id for r in found}), before_ms)
            gone += self._store.trim_ended_sets(shard, limit)
            # Packed records and windows have no TTL: each goes once its own expiry passed.
            # Ten times the page: reading an expiry in place costs little, and the sweep
            # must pass over every callback kept (a week past its time) faster than they
            # expire.
            gone += self._store.sweep(shard, limit * SWEEP_PAGES)
            # A short page means the walk reached the end: the next round starts over.
            self._store.save_walk_cursor(shard, "trim", (page[-1][1], page[-1][0])
                                         if len(page) == limit else (-1, ""))
        return gone

    def dead_letter(self, entry: OutboxEntry, record: LedgerRecord | None, error: str) -> bool:
        """The outbox gave up on a create: kept as a dead letter for a replay, out of the
        window; an owner move it was leaves the old callback the customer's. False when it
        was cancelled meanwhile (nothing kept: a replay must not bring it back)."""
        now = self._clock.now()
        event = self._closed(record.callback_id if record else "", State.DEAD_LETTER)
        return self._store.dead_letter_callback(entry.shard, entry.token, entry.attempts + 1,
                                                error,
                                                epoch_ms(now), record, event,
                                                self._evidence_ttl_s)

    def release(self, number: CustomerNumber, token: str) -> None:
        """Free the number after a refusal, so it never blocks a later valid request."""
        self._store.release_claim(self._keys.all(number.e164), token)

    def pending(self, number: CustomerNumber, *, window_only: bool = True
                ) -> list[LedgerRecord]:
        """The number's pending callbacks, earliest first: in the window, or all of them."""
        end = epoch_ms(self._clock.now() + self._window) if window_only else _NO_END_MS
        found = self._store.pending_in_window(self._keys.all(number.e164), end)
        # A number's callbacks are all in its shard: one read, not one per shard.
        return [r for r in self.records([cid for cid, _ in found], NumberKeys.shard(number.e164))
                if r.pending]
