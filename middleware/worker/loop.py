"""The background worker (Procfile ``worker``): runs each duty on its interval until stopped.

A duty does one bounded batch of work per call and reports how many items it handled;
the loop never lets one duty's failure stop the others. Duties live in the modules of
the rule they serve and are listed in ``app.build_duties``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from middleware.deadline import Deadline
from middleware.errors import StoreUnavailable, UpstreamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duty:
    """One periodic job: ``run`` handles a bounded batch and returns how many items it did."""

    name: str
    interval_s: float
    run: Callable[[Deadline], int]


def run_duty(duty: Duty, batch_budget_s: float = 30.0) -> int | None:
    """One batch of one duty: the items it handled, or ``None`` when it failed (logged)."""
    try:
        done = duty.run(Deadline(batch_budget_s))
    except (StoreUnavailable, UpstreamError) as exc:
        log.warning("duty failed, will retry", extra={"duty": duty.name, "error": str(exc)})
        return None
    except Exception:
        # One bad item or answer must not stop the outbox, reconciliation and
        # reassignment for good; the traceback goes to the log.
        log.exception("duty crashed, will retry", extra={"duty": duty.name})
        return None
    if done:
        log.info("duty ran", extra={"duty": duty.name, "items": done})
    return done


def run_once(duties: list[Duty]) -> int:
    """Every duty once (``worker --once``): 0 when all ran, 1 when one failed."""
    results = {duty.name: run_duty(duty) for duty in duties}
    for name, done in results.items():
        print(f"{name}: {'failed' if done is None else done}")
    return 0 if all(done is not None for done in results.values()) else 1


def run_loop(duties: list[Duty], stop: threading.Event, batch_budget_s: float = 30.0) -> None:
    """Run every due duty, sleep until the next is due, until ``stop`` is set."""
    next_run = dict.fromkeys((d.name for d in duties), 0.0)
    while not stop.is_set():
        now = time.monotonic()
        for duty in duties:
            if next_run[duty.name] > now:
                continue
            run_duty(duty, batch_budget_s)
            next_run[duty.name] = time.monotonic() + duty.interval_s
        wait = min(next_run.values(), default=now + 60) - time.monotonic()
        stop.wait(max(wait, 0.05))


def run_worker(duties: list[Duty]) -> int:
    """Procfile entry point: run until SIGTERM or SIGINT, finishing the current batch."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("worker stopping", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker started", extra={"duties": [d.name for d in duties]})
    run_loop(duties, stop)
    return 0
