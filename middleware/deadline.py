"""A request's time budget, from which every outbound call draws its timeouts."""

from __future__ import annotations

import time


class Deadline:
    """Monotonic point in time by which the current request must be answered."""

    def __init__(self, budget_s: float) -> None:
        self._end = time.monotonic() + budget_s

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the budget is spent."""
        return self.remaining() <= 0

    def timeouts(self, connect_s: float, read_s: float) -> tuple[float, float]:
        """Connect and read timeouts: the configured ones, cut to what is left of the budget."""
        left = max(self.remaining(), 0.001)
        return min(connect_s, left), min(read_s, left)
