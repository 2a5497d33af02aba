"""Ahead of time: callbacks due soon whose owner has since become unavailable get a new owner.

A worker duty looks at the pending callbacks due within ``REASSIGN_LOOKAHEAD_MINUTES``;
for each agent-owned one whose owner is now unavailable at its time (time off entered
after creation, out of office, left the company...), the owner rule picks a new owner
and the callback is replaced (create for the new owner, then disconnect the old one).
Each move is recorded in the number's evidence history and logged. A replacement whose
old callback could not be disconnected yet is finished on a later round.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from middleware.actions.answers import Revoked, Superseded, from_ms
from middleware.actions.checks import OwnerRule
from middleware.actions.manage import ManageCallbacks
from middleware.clock import Clock
from middleware.deadline import Deadline
from middleware.errors import UpstreamError, UpstreamRejected
from middleware.ledger.lifecycle import Lifecycle, epoch_ms
from middleware.store import SHARDS, Store

log = logging.getLogger(__name__)


class Reassigner:
    """One round over the callbacks falling due soon."""

    def __init__(self, store: Store, lifecycle: Lifecycle, owner: OwnerRule,
                 callbacks: ManageCallbacks, lookahead: timedelta, batch: int,
                 clock: Clock) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._owner = owner
        self._callbacks = callbacks
        self._lookahead = lookahead
        self._batch = batch
        self._clock = clock

    def run(self, deadline: Deadline) -> int:
        """Check the callbacks due within the lookahead, shard by shard; return how many
        moved."""
        moved = 0
        for shard in SHARDS:
            done = self._round(shard, deadline)
            if done is None:
                break
            moved += done
        return moved

    def _round(self, shard: str, deadline: Deadline) -> int | None:
        """One shard's page; ``None`` when Genesys paused the round."""
        # Replaced callbacks whose disconnect failed come first, whatever their time.
        for callback_id in self._store.replaced_awaiting_disconnect(shard, self._batch):
            old = self._lifecycle.record(callback_id, shard)
            if old is None or not old.pending:
                self._lifecycle.forget_replacement(shard, callback_id)
            elif not self._callbacks.finish_replacement(old, deadline):
                break
        now = self._clock.now()
        # A cursor walks the lookahead a page at a time, so a page of callbacks whose owners
        # are fine (or cannot be moved) never hides the ones after it.
        start, end = epoch_ms(now), epoch_ms(now + self._lookahead)
        cursor = self._store.walk_cursor(shard, "reassign")
        if cursor[0] < start:
            cursor = (start - 1, "")
        due = [(cid, ms) for cid, ms in self._store.pending_page(shard, cursor, self._batch)
               if ms <= end]
        self._store.save_walk_cursor(shard, "reassign", due[-1][::-1]
                                     if len(due) == self._batch else (-1, ""))
        moved = 0
        for record in self._lifecycle.records([cid for cid, _ in due], shard):
            if not record.in_genesys or not record.agent_id:
                continue
            if record.replaced_by:
                continue
            at = from_ms(record.scheduled_ms)
            try:
                found = self._owner.availability(record.agent_id, record.queue_id, at, deadline)
                if found is not None and found.available:
                    continue
                decision = self._owner.resolve(record.agent_id, record.queue_id, at, deadline)
                if decision.outcome not in ("REASSIGNED", "QUEUE"):
                    log.warning("owner unavailable and no one can take over", extra={
                        "callbackId": record.callback_id, "agentId": record.agent_id,
                        "reason": decision.reassign_reason or decision.outcome})
                    continue
                # Under the change lock: a reschedule of it in flight finishes first.
                with self._lifecycle.changing(record, deadline, 0.0) as change:
                    current = self._lifecycle.record(record.callback_id, shard) \
                        if change else None
                    if current is None or current.version != record.version:
                        continue
                    self._callbacks.replace_owner(record, decision.assigned, at, deadline,
                                                  decision.reassign_reason)
                moved += 1
            except Revoked:
                # Revoked with its callbacks kept: no new callback is made for it.
                continue
            except Superseded:
                # Rescheduled or cancelled meanwhile: the next round sees it as it now is.
                continue
            except UpstreamRejected as exc:
                # Genesys refuses this one callback (a read or create it will not do): the
                # others, here and in later shards, are still moved; this one is tried again
                # next round.
                log.warning("callback not moved: genesys refused", extra={
                    "callbackId": record.callback_id, "status": exc.status,
                    "error": exc.message})
                continue
            except UpstreamError as exc:
                log.warning("reassignment paused: genesys", extra={"error": exc.message})
                return None
        return moved
