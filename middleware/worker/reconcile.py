"""Keeping the ledger in step with Genesys: callbacks that ended there leave the window.

Two reads a round, neither growing with the number of pending callbacks:

* **Ended callbacks, by interval.** The analytics conversation details query lists the
  callbacks on our queues (the queues the ledger's pending callbacks were written on) that
  have ended, latest end first; the round reads pages until the ends fall before the cursor
  (the latest end the previous pass saw, less ``OVERLAP``), and closes each one the ledger
  holds as pending. The query's ``interval`` selects conversations by their *start* (the
  documented behaviour: the UTC days it touches), so it spans every start a pending
  callback can have (``lookback``: the scheduling horizon plus the week a record outlives
  its time), in pieces of at most 31 days (the documented longest interval with a filter).
  "Ended since the cursor" is read from the order, not asked of the server: the models
  offer ``conversationEnd`` as a dimension with ``exists``/``notExists`` only, and what a
  ``range`` on it would do is not documented. A pass that needs more pages than a round
  allows goes on from its page next round (later ends only push earlier ones down a page:
  none is skipped), and its progress is kept in Redis, so a restart resumes it.
* **Changes in doubt, one by one.** A cancel or a reschedule whose answer never came is
  read back with one GET per callback (at most a third of the round's budget), which also
  takes the time Genesys holds when a PATCH landed unanswered.

A bounded walk over the ledger in Redis (no Genesys call) notes the queues of records
written before the queues were noted, and sends to the one-by-one reads the rare callback
that started before the interval reaches (one rescheduled again and again). Every Genesys
request of a round counts against a quarter of ``GENESYS_RATE_LIMIT_PER_MIN``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from middleware.clock import Clock
from middleware.deadline import Deadline
from middleware.errors import UpstreamRejected, UpstreamUnavailable
from middleware.genesys.client import GenesysClient, callback_end_state, callback_scheduled_ms
from middleware.ledger.lifecycle import FORGET_AFTER, Lifecycle, epoch_ms
from middleware.ledger.records import LedgerRecord, State
from middleware.store import SHARDS, Store

log = logging.getLogger(__name__)

#: How long after an unconfirmed reschedule its callback is still read back: a PATCH
#: Genesys holds longer than this, and that lands after a later reschedule, is not seen.
LATE_CHANGE_WATCH_MS: Final = 2 * 60 * 1000

#: Failed reads in a row that mean Genesys is down rather than one callback unreadable.
_OUTAGE_AFTER: Final = 3
#: How far each pass reaches back before the latest end the previous pass saw. The
#: analytics ingestion delay is not documented: it is assumed shorter than this.
OVERLAP: Final = timedelta(minutes=15)
#: The very first pass (no cursor in Redis yet) reads ends this far back.
FIRST_LOOKBACK: Final = timedelta(days=1)
#: The longest interval one query may span (documented: 31 days when filtered).
MAX_INTERVAL: Final = timedelta(days=31)
#: Conversations per page (the API's most).
PAGE_SIZE: Final = 100
#: Queues named in one query (the API documents no limit; kept modest).
QUEUES_PER_QUERY: Final = 100
#: Ledger records the Redis walk reads per round, from each shard.
WALK: Final = 125


def page_size(batch_size: int, interval_s: int, rate_limit_per_min: int) -> int:
    """Genesys requests per round: the configured batch, within a quarter of the rate
    limit."""
    share = rate_limit_per_min * interval_s // (60 * 4)
    return max(1, min(batch_size, share))


def _midnight(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Reconciler:
    """One round: the in-doubt reads, then the next pages of ended callbacks."""

    def __init__(self, store: Store, genesys: GenesysClient, lifecycle: Lifecycle,
                 budget: int, clock: Clock, lookback: timedelta) -> None:
        self._store = store
        self._genesys = genesys
        self._lifecycle = lifecycle
        self._budget = budget
        self._clock = clock
        self._lookback = lookback + FORGET_AFTER

    def run(self, deadline: Deadline) -> int:
        """Reconcile one round; return how many callbacks left the window."""
        now = self._clock.now()
        self._walk(now)
        spent, closed = self._in_doubt(now, deadline, max(1, self._budget // 3))
        return closed + self._ended(now, deadline, self._budget - spent)

    # -- the interval query ----------------------------------------------------------

    def _interval_start(self, now: datetime) -> datetime:
        """The earliest start a callback still in the ledger can have."""
        return _midnight(now - self._lookback)

    def _new_pass(self, now: datetime, floor_ms: int) -> dict[str, Any]:
        """A pass over every piece of the interval and group of queues, from page 1."""
        queues = self._store.reconcile_queues(epoch_ms(now - self._lookback))
        pieces, start = [], self._interval_start(now)
        end = _midnight(now) + timedelta(days=1)  # today whole, whatever either clock says
        while start < end:
            stop = min(start + MAX_INTERVAL, end)
            pieces += [[epoch_ms(start), epoch_ms(stop), queues[i:i + QUEUES_PER_QUERY], 1]
                       for i in range(0, len(queues), QUEUES_PER_QUERY)]
            start = stop
        return {"floorMs": floor_ms, "highMs": floor_ms, "todo": pieces}

    def _ended(self, now: datetime, deadline: Deadline, budget: int) -> int:
        """Read pages of ended callbacks (at most ``budget`` requests) and close them."""
        progress = self._store.reconcile_pass()
        if progress is None or not progress.get("todo"):
            floor_ms = int(progress["floorMs"]) if progress is not None \
                else epoch_ms(now - FIRST_LOOKBACK)
            progress = self._new_pass(now, floor_ms)
        floor_ms, closed, spent = int(progress["floorMs"]), 0, 0
        todo: list[list[Any]] = progress["todo"]
        while todo and spent < budget and deadline.remaining() > 1.0:
            start_ms, end_ms, queues, page = todo[0]
            try:
                found = self._genesys.ended_callbacks(
                    queues, _from_ms(start_ms), _from_ms(end_ms), page, PAGE_SIZE, deadline)
            except (UpstreamUnavailable, UpstreamRejected) as exc:
                # Resumed from this very page next round: nothing read is lost.
                log.warning("reconcile paused: ended-callbacks query failed",
                            extra={"error": exc.message})
                break
            spent += 1
            fresh = [(cid, ended) for cid, ended in found if epoch_ms(ended) >= floor_ms]
            if fresh:
                progress["highMs"] = max(int(progress["highMs"]),
                                         *(epoch_ms(e) for _, e in fresh))
                closed += self._close([cid for cid, _ in fresh])
            if len(fresh) < len(found) or len(found) < PAGE_SIZE:
                todo.pop(0)
            else:
                todo[0][3] = page + 1
            self._store.save_reconcile_pass(progress)
        if not todo:
            self._store.save_reconcile_pass({"floorMs": max(
                floor_ms, int(progress["highMs"]) - int(OVERLAP.total_seconds() * 1000)),
                "todo": []})
        return closed

    def _close(self, conversation_ids: list[str]) -> int:
        """Close the ledger's pending callbacks among these ended ones (others are not
        ours, or already closed)."""
        closed = 0
        for record in self._lifecycle.records(conversation_ids):
            if not record.in_genesys:
                continue
            # A cancel whose disconnect landed unanswered: it was cancelled.
            ended = State.CANCELLED if record.cancel_asked else State.DISCONNECTED
            self._lifecycle.close(record, ended)
            closed += 1
            log.info("callback left the window",
                     extra={"callbackId": record.callback_id, "state": ended})
        return closed

    # -- the Redis walk --------------------------------------------------------------

    def _walk(self, now: datetime) -> None:
        """Note queues and find callbacks the interval cannot reach, a page of each shard
        of the ledger at a time (Redis only)."""
        queues: set[str] = set()
        for shard in SHARDS:
            queues |= self._walk_shard(shard, now)
        self._lifecycle.note_queues(sorted(queues))

    def _walk_shard(self, shard: str, now: datetime) -> set[str]:
        page = self._store.pending_page(shard, self._store.walk_cursor(shard, "reconcile"),
                                        WALK)
        if not page:
            self._store.save_walk_cursor(shard, "reconcile", (-1, ""))
            return set()
        ids = [cid for cid, _ in page]
        facts = self._store.pending_facts(shard, ids)
        gone = [cid for cid, fact in zip(ids, facts, strict=True) if fact is None]
        if gone:
            # Their records expired long after their time: nothing left to reconcile.
            self._lifecycle.forget_gone(shard, gone)
        live = [(cid, f) for cid, f in zip(ids, facts, strict=True)
                if f is not None and f[1] == State.PENDING]
        reach_ms = epoch_ms(self._interval_start(now))
        early = [cid for cid, f in live if 0 < f[2] < reach_ms]
        if early:
            self._lifecycle.doubt(shard, early)
        last_id, last_ms = page[-1]
        self._store.save_walk_cursor(shard, "reconcile", (last_ms, last_id)
                                     if len(page) == WALK else (-1, ""))
        return {f[0] for _, f in live if f[0]}

    # -- the changes in doubt ----------------------------------------------------------

    def _in_doubt(self, now: datetime, deadline: Deadline, limit: int) -> tuple[int, int]:
        """Read back the callbacks whose last change is in doubt, shard by shard, at most
        ``limit`` in all; ``(requests, closed)``."""
        spent, closed = 0, 0
        for shard in SHARDS:
            if spent >= limit or deadline.remaining() <= 1.0:
                break
            did, ended, down = self._in_doubt_shard(shard, now, deadline, limit - spent)
            spent, closed = spent + did, closed + ended
            if down:
                break
        return spent, closed

    def _in_doubt_shard(self, shard: str, now: datetime, deadline: Deadline, limit: int
                        ) -> tuple[int, int, bool]:
        """One shard's in-doubt reads: ``(requests, closed, Genesys looked down)``."""
        due = self._store.in_doubt_due(shard, epoch_ms(now), limit)
        if not due:
            return 0, 0, False
        records = {r.callback_id: r for r in self._lifecycle.records(due, shard)}
        done = [cid for cid in due if cid not in records or not records[cid].in_genesys]
        if done:
            self._lifecycle.forget_doubt(shard, done)
        spent, closed, failures = 0, 0, 0
        for callback_id in due:
            record = records.get(callback_id)
            if record is None or not record.in_genesys or deadline.remaining() <= 1.0:
                continue
            spent += 1
            try:
                conversation = self._genesys.get_callback(callback_id, deadline)
            except UpstreamUnavailable as exc:
                # One callback Genesys keeps failing to read must not stop the others
                # (it stays in doubt); several failures in a row look like an outage.
                failures += 1
                self._lifecycle.settle(record, still_in_doubt=True)
                if failures >= _OUTAGE_AFTER:
                    log.warning("reconcile paused: genesys unavailable",
                                extra={"error": exc.message})
                    return spent, closed, True
                log.warning("reconcile skipped a callback", extra={
                    "callbackId": callback_id, "error": exc.message})
                continue
            except UpstreamRejected as exc:
                self._lifecycle.settle(record, still_in_doubt=True)
                log.warning("reconcile skipped a callback", extra={
                    "callbackId": callback_id, "status": exc.status})
                continue
            failures = 0
            ended = callback_end_state(conversation)
            if ended is not None:
                self._lifecycle.close(record, "CANCELLED" if record.cancel_asked else ended)
                self._lifecycle.forget_doubt(shard, [callback_id])
                closed += 1
                log.info("callback left the window", extra={
                    "callbackId": callback_id, "state": ended})
                continue
            self._adopt_time(record, conversation)
            # A PATCH Genesys holds a while lands after this read: the callback is read
            # again until its reschedule is LATE_CHANGE_WATCH old.
            watching = bool(record.reschedule_asked_ms) and epoch_ms(now) \
                - record.reschedule_asked_ms < LATE_CHANGE_WATCH_MS
            self._lifecycle.settle(record, still_in_doubt=watching)
        return spent, closed, False

    def _adopt_time(self, record: LedgerRecord, conversation: dict[str, Any] | None) -> None:
        """Genesys holds the callback at another time than the ledger (a PATCH that landed
        unanswered): the ledger takes Genesys' time, so duplicates and find-pending show the
        time the customer will be called. Guarded by the record's version, so a reschedule
        committing meanwhile wins."""
        held = callback_scheduled_ms(conversation)
        if held is None or abs(held - record.scheduled_ms) < 1000:
            return
        # A reschedule committing meanwhile wins; one that loses to this answers in doubt.
        if not self._lifecycle.reschedule(record, held):
            return
        log.info("callback time taken from Genesys", extra={
            "callbackId": record.callback_id, "fromMs": record.scheduled_ms, "toMs": held})
