"""Keeping Redis bounded: the shared indexes that cannot carry a TTL per member are trimmed
a bounded page per round, so what the service keeps does not grow with the traffic it
has seen, only with what is pending (README "Capacity")."""

from __future__ import annotations

from middleware.deadline import Deadline
from middleware.ledger.lifecycle import Lifecycle


class IndexTrim:
    """The ``trim`` duty: stale entries of the shards' walks, the owners' sets of the layout
    before ``packed`` and the disconnect sets go, ``batch`` at most of each per round, and
    the sweep deletes packed records and windows past their expiry."""

    def __init__(self, lifecycle: Lifecycle, batch: int) -> None:
        self._lifecycle = lifecycle
        self._batch = batch

    def run(self, deadline: Deadline) -> int:
        """One round; how many index entries it dropped."""
        if deadline.remaining() <= 0:
            return 0
        return self._lifecycle.trim(self._batch)
