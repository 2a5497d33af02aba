"""Never lost: the worker delivers callbacks accepted while Genesys was unreachable.

``create-callback`` answers QUEUED after writing, in one Redis transaction, the ledger record
(it holds the duplicate window) and an outbox entry with the exact create command. This
duty leases due entries (a worker killed mid-attempt frees its lease when it ends) and:

* when an earlier attempt may have reached Genesys (a timeout after sending, a 5xx), looks
  for the callback carrying our ``requestToken`` first, and adopts it if found;
* when the scheduled time has passed meanwhile, creates it at the next valid instant (the
  customer's calling hours, the owner's shifts) and records the shift;
* on a retryable failure schedules the next attempt with capped exponential backoff and full
  jitter, never sooner than Genesys' ``Retry-After``;
* on a refusal (a 4xx other than 429), or after ``OUTBOX_MAX_ATTEMPTS``, moves the entry to
  the dead letters, which are kept, counted in ``/metrics``, logged, and replayed with
  ``python -m middleware dead-letters replay``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from middleware.actions.answers import from_ms
from middleware.actions.checks import TimeService
from middleware.actions.consent import ConsentLedger
from middleware.clock import Clock
from middleware.deadline import Deadline
from middleware.errors import UpstreamRejected, UpstreamUnavailable
from middleware.genesys.client import GenesysClient
from middleware.ledger.lifecycle import Lifecycle, epoch_ms
from middleware.ledger.records import LedgerRecord
from middleware.rules.number import CustomerNumber, normalise
from middleware.rules.profiles import AgentProfile
from middleware.rules.time import format_utc, parse_instant
from middleware.store import SHARDS, OutboxEntry, Store

log = logging.getLogger(__name__)

#: Disconnects a callback created after its request was cancelled (CreateCallback.undo).
Undo = Callable[[CustomerNumber, LedgerRecord, str, str, Deadline], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently the outbox retries.

    ``settle`` is the least wait after an attempt that may have reached Genesys: a request
    still in flight must land before we look for its token, or we would create it twice.
    """

    max_attempts: int
    base: timedelta
    cap: timedelta
    settle: timedelta = timedelta(seconds=6)

    def next_delay(self, attempt: int, retry_after_s: float | None,
                   may_have_run: bool = False) -> timedelta:
        """Full jitter over a capped exponential, but never before ``Retry-After`` (nor,
        after an attempt that may have run, before ``settle``)."""
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2 ** attempt)
        delay = random.uniform(0, ceiling)  # noqa: S311 (jitter, not security)
        floor = max(retry_after_s or 0, self.settle.total_seconds() if may_have_run else 0)
        return timedelta(seconds=max(delay, floor))


class OutboxDelivery:
    """The worker duty that drains the outbox."""

    def __init__(self, store: Store, genesys: GenesysClient, lifecycle: Lifecycle,
                 times: TimeService, policy: RetryPolicy, batch: int, clock: Clock,
                 undo: Undo) -> None:
        self._store = store
        self._genesys = genesys
        self._lifecycle = lifecycle
        self._times = times
        self._policy = policy
        self._batch = batch
        self._clock = clock
        self._undo = undo

    def run(self, deadline: Deadline) -> int:
        """Attempt every due entry once; return how many were delivered."""
        now = self._clock.now()
        lease_ms = int(max(deadline.remaining(), 1.0) * 1000) + 5000
        delivered = 0
        for shard in SHARDS:
            if deadline.remaining() < 1.0:
                break
            for entry in self._store.lease_outbox(shard, epoch_ms(now), lease_ms, self._batch):
                if deadline.remaining() < 1.0:
                    # Leased but not tried: its lease ends and a later round takes it.
                    break
                if self._attempt(entry, deadline):
                    delivered += 1
        return delivered

    def _attempt(self, entry: OutboxEntry, deadline: Deadline) -> bool:
        payload = dict(entry.payload)
        record = self._lifecycle.record(str(payload["ledgerId"]), entry.shard)
        if record is None or record.state not in ("QUEUED", "CREATING"):
            return self._cancelled(entry, payload, deadline, record)
        command: dict[str, Any] = dict(payload["command"])
        if not payload.get("mayHaveRun"):
            # Written before sending: if this worker dies after Genesys got the create, the
            # next attempt looks for it instead of creating it again.
            self._store.save_outbox_payload(entry, {**payload, "mayHaveRun": True})
        # However this attempt ends, a create it sends may land after we stop waiting.
        self._lifecycle.watch_late_create(entry.token, str(payload["e164"]),
                                       int(payload.get("acceptedMs") or 0))
        try:
            if payload.get("mayHaveRun"):
                found = self._genesys.find_callback_by_token(
                    str(payload["e164"]), entry.token, from_ms(int(payload["acceptedMs"])),
                    self._clock.now(), deadline)
                if found is not None:
                    self._deliver(entry, record, found, "", command)
                    log.info("queued callback found in Genesys", extra={"callbackId": found})
                    return True
            command = self._reschedule_if_late(record, command, deadline)
            created = self._genesys.create_callback(command, deadline)
        except UpstreamUnavailable as exc:
            payload["mayHaveRun"] = bool(payload.get("mayHaveRun")) or exc.may_have_run
            payload["command"] = command
            self._failed(entry, payload, exc.message, exc.retry_after_s, retryable=True)
            return False
        except UpstreamRejected as exc:
            self._failed(entry, payload, f"{exc.status} {exc.code} {exc.message}", None,
                         retryable=False)
            return False
        acd = next((i["id"] for i in created.identifiers if i["type"] == "ACD"), "")
        self._deliver(entry, record, created.conversation_id, acd, command)
        log.info("queued callback created", extra={"callbackId": created.conversation_id,
                                                   "attempts": entry.attempts + 1})
        return True

    def _cancelled(self, entry: OutboxEntry, payload: dict[str, Any],
                   deadline: Deadline, record: LedgerRecord | None) -> bool:
        """Cancelled (or revoked) while queued: nothing to create; an attempt that may have
        reached Genesys is looked for and disconnected."""
        if payload.get("mayHaveRun"):
            try:
                found = self._genesys.find_callback_by_token(
                    str(payload["e164"]), entry.token, from_ms(int(payload["acceptedMs"])),
                    self._clock.now(), deadline)
                if found is not None:
                    self._genesys.disconnect_callback(found, "", deadline)
                    log.info("callback of a cancelled request disconnected",
                             extra={"callbackId": found})
            except (UpstreamUnavailable, UpstreamRejected) as exc:
                # Kept until the search answers: a create of it that landed is disconnected
                # then, and no other duty would look for it once its watch has ended. A
                # refusal is asked again less often, and said loudly, not raised: raised, it
                # stopped the round at this entry every time.
                refused = isinstance(exc, UpstreamRejected)
                if refused:
                    log.error("search for a cancelled request's callback refused", extra={
                        "token": entry.token, "error": exc.message})
                self._store.retry_outbox(
                    entry, epoch_ms(self._clock.now()) + (60_000 if refused else 5000),
                    exc.message, payload)
                return False
        if record is not None and record.replaces:
            self._lifecycle.unlink(record, record.replaces)
        self._store.finish_outbox(entry.shard, entry.token)
        log.info("outbox entry dropped: no longer wanted", extra={"token": entry.token})
        return False

    def _reschedule_if_late(self, record: LedgerRecord, command: dict[str, Any],
                            deadline: Deadline) -> dict[str, Any]:
        """A time already gone (or too close) moves to the next valid instant, recorded."""
        now = self._clock.now()
        if record.scheduled_ms > epoch_ms(now + self._times.min_lead):
            return command
        number = normalise(record.e164, "")
        profile = self._times.profile(record.agent_id, now, deadline) if record.agent_id \
            else AgentProfile("", None, "none")
        context = self._times.context(now, profile, number, None)
        check = self._times.check(self._times.parse({}, profile), context)
        if check.instant is None:
            return command
        new_time = format_utc(check.instant)
        log.info("queued callback moved past its time", extra={
            "callbackId": record.callback_id, "from": command.get("callbackScheduledTime"),
            "to": new_time})
        self._lifecycle.reschedule(record, epoch_ms(check.instant))
        return {**command, "callbackScheduledTime": new_time}

    def _deliver(self, entry: OutboxEntry, record: LedgerRecord, callback_id: str, acd: str,
                 command: dict[str, Any]) -> None:
        number = normalise(record.e164, "")
        if number is None:
            raise ValueError(f"ledger record {record.callback_id} has no valid number")
        scheduled = parse_instant(str(command.get("callbackScheduledTime") or ""))
        scheduled_ms = epoch_ms(scheduled) if scheduled else record.scheduled_ms
        if self._lifecycle.deliver(number, record, callback_id, acd, scheduled_ms) is None:
            self._undo(number, record, callback_id, acd, Deadline(10))

    def _failed(self, entry: OutboxEntry, payload: dict[str, Any], error: str,
                retry_after_s: float | None, *, retryable: bool) -> None:
        now = self._clock.now()
        if retryable and entry.attempts + 1 < self._policy.max_attempts:
            delay = self._policy.next_delay(entry.attempts, retry_after_s,
                                            bool(payload.get("mayHaveRun")))
            self._store.retry_outbox(entry, epoch_ms(now + delay), error, payload)
            log.warning("queued callback not created yet", extra={
                "token": entry.token, "attempt": entry.attempts + 1, "error": error,
                "retryInS": round(delay.total_seconds(), 1)})
            return
        if not self._lifecycle.dead_letter(
                entry, self._lifecycle.record(str(payload["ledgerId"]), entry.shard), error):
            log.info("outbox entry dropped: cancelled before it was given up on",
                     extra={"token": entry.token})
            return
        log.error("queued callback dead-lettered", extra={
            "token": entry.token, "attempts": entry.attempts + 1, "error": error})


@dataclass(frozen=True)
class Replay:
    """What a dead-letter replay did: the tokens back in the outbox, and why the others
    stay dead letters (by token)."""

    replayed: list[str]
    refused: dict[str, str]


def replay(store: Store, lifecycle: Lifecycle, consents: ConsentLedger, tokens: list[str],
           clock: Clock) -> Replay:
    """Put dead letters back in the outbox (and their callbacks back in the window) only if
    each passes the consent and duplicate checks again, like a new request (SPEC §4
    Lifecycle 5): the consent it relied on must not be revoked, nor older than
    CONSENT_MAX_AGE_HOURS now; a refused one stays a dead letter with the reason in its
    error."""
    replayed: list[str] = []
    refused: dict[str, str] = {}
    for token in tokens:
        entry = store.outbox_entry(token)
        if entry is None:
            continue
        record = lifecycle.record(str(entry.payload["ledgerId"]), entry.shard)
        number = normalise(record.e164, "") if record is not None else None
        if record is None or number is None:
            # Nothing to put back (its record expired, FORGET_AFTER past its time): said,
            # and kept, rather than skipped in silence.
            reason = ("GONE: its ledger record has expired; the dead letter is kept, "
                      "create the callback anew") if record is None else \
                "INVALID_NUMBER: its ledger record holds no valid number"
        else:
            verdict = consents.check({"consentGiven": True, "consentId": record.consent_id},
                                     number, lifecycle.facts(number, record.consent_id))
            reason = f"{verdict.reason}: {verdict.message}" if verdict.reason != "OK" else \
                lifecycle.replay(number, token, record, Deadline(5), verdict.epoch)
        if not reason:
            replayed.append(token)
            log.info("dead letter replayed", extra={"token": token})
            continue
        refused[token] = reason
        store.refuse_replay(entry, f"replay refused: {reason}")
        log.warning("dead letter replay refused", extra={"token": token, "reason": reason})
    return Replay(replayed, refused)


def replay_dead_letters(store: Store, lifecycle: Lifecycle, consents: ConsentLedger,
                        tokens: list[str], clock: Clock) -> list[str]:
    """Replay dead letters as ``replay`` does; return the tokens replayed."""
    return replay(store, lifecycle, consents, tokens, clock).replayed
