"""Keeping the ledger in step with Genesys: callbacks that ended there leave the window.

A worker duty walks the ledger's pending callbacks in scheduled order, a bounded page
per round, and asks Genesys about each. A page is capped so that reconciliation uses at
most a quarter of ``GENESYS_RATE_LIMIT_PER_MIN``, leaving the rest to live requests.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from middleware.deadline import Deadline
from middleware.errors import UpstreamRejected, UpstreamUnavailable
from middleware.genesys.client import GenesysClient, callback_end_state, callback_scheduled_ms
from middleware.ledger.lifecycle import Lifecycle
from middleware.ledger.records import LedgerRecord
from middleware.store import Store

log = logging.getLogger(__name__)

#: Failed reads in a row that mean Genesys is down rather than one callback unreadable.
_OUTAGE_AFTER: Final = 3


def page_size(batch_size: int, interval_s: int, rate_limit_per_min: int) -> int:
    """Callbacks per round: the configured batch, within a quarter of the rate limit."""
    share = rate_limit_per_min * interval_s // (60 * 4)
    return max(1, min(batch_size, share))


class Reconciler:
    """One round checks the next page of pending callbacks against Genesys."""

    def __init__(self, store: Store, genesys: GenesysClient, lifecycle: Lifecycle,
                 batch: int) -> None:
        self._store = store
        self._genesys = genesys
        self._lifecycle = lifecycle
        self._batch = batch

    def run(self, deadline: Deadline) -> int:
        """Check one page; return how many callbacks left the window."""
        page = self._store.pending_page(self._store.reconcile_cursor(), self._batch)
        if not page:
            self._store.save_reconcile_cursor((-1, ""))
            return 0
        records = {r.callback_id: r for r in self._lifecycle.records([cid for cid, _ in page])}
        gone = [cid for cid, _ in page if cid not in records]
        if gone:
            # Their records expired long after their time: nothing left to reconcile.
            self._lifecycle.forget_gone(gone)
        closed, cursor, failures = 0, self._store.reconcile_cursor(), 0
        for callback_id, scheduled_ms in page:
            record = records.get(callback_id)
            if record is not None and record.in_genesys:
                try:
                    conversation = self._genesys.get_callback(callback_id, deadline)
                except UpstreamUnavailable as exc:
                    # One callback Genesys keeps failing to read must not stop the walk for
                    # every later one: it is skipped (checked again next lap). Several
                    # failures in a row look like an outage: pause where we are.
                    failures += 1
                    if failures >= _OUTAGE_AFTER:
                        log.warning("reconcile paused: genesys unavailable",
                                    extra={"error": exc.message})
                        break
                    log.warning("reconcile skipped a callback", extra={
                        "callbackId": callback_id, "error": exc.message})
                except UpstreamRejected as exc:
                    log.warning("reconcile skipped a callback", extra={
                        "callbackId": callback_id, "status": exc.status})
                else:
                    failures = 0
                    ended = callback_end_state(conversation)
                    self._adopt_time(record, conversation, ended)
                    if ended is not None:
                        # A cancel whose disconnect landed unanswered: it was cancelled.
                        ended = "CANCELLED" if record.cancel_asked else ended
                        self._lifecycle.close(record, ended)
                        closed += 1
                        log.info("callback left the window",
                                 extra={"callbackId": callback_id, "state": ended})
            cursor = (scheduled_ms, callback_id)
        self._store.save_reconcile_cursor(cursor)
        return closed

    def _adopt_time(self, record: LedgerRecord, conversation: dict[str, Any] | None,
                    ended: str | None) -> None:
        """Genesys holds the callback at another time than the ledger (a PATCH that landed
        unanswered): the ledger takes Genesys' time, so duplicates and find-pending show the
        time the customer will be called. Guarded by the record's version, so a reschedule
        committing meanwhile wins."""
        held = callback_scheduled_ms(conversation)
        if ended is not None or held is None or abs(held - record.scheduled_ms) < 1000:
            return
        if self._lifecycle.reschedule(record, held):
            log.info("callback time taken from Genesys", extra={
                "callbackId": record.callback_id, "fromMs": record.scheduled_ms, "toMs": held})
