"""Prometheus metrics shared by every gunicorn worker and instance.

Each process counts in memory (no Redis round trip on the request path) and a background
thread adds its deltas to one Redis hash every few seconds; ``/metrics`` renders that hash
plus the scraping process's unflushed deltas, and reads the outbox gauges live. Counters
are therefore totals across all processes, at most ``FLUSH_S`` late.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from typing import Final, cast

import redis

from middleware.clock import Clock
from middleware.duplicates import epoch_ms
from middleware.errors import StoreUnavailable
from middleware.store import PREFIX, Store

log = logging.getLogger(__name__)

FLUSH_S: Final = 2.0
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_KEY: Final = f"{PREFIX}metrics"
_HELP: Final = {
    "cbm_requests_total": ("counter", "Requests by action, outcome, reason and HTTP status."),
    "cbm_request_duration_seconds": ("histogram", "Request latency by action."),
    "cbm_genesys_calls_total": ("counter", "Genesys API calls by method, route and status."),
    "cbm_genesys_rate_limited_total": ("counter", "429 answers received from Genesys."),
    "cbm_genesys_token_fetches_total": ("counter", "OAuth tokens fetched from Genesys."),
    "cbm_outbox_depth": ("gauge", "Queued callbacks waiting for delivery."),
    "cbm_outbox_oldest_age_seconds": ("gauge", "How overdue the oldest queued attempt is."),
    "cbm_dead_letters": ("gauge", "Queued callbacks that exhausted their attempts."),
}


def _series(name: str, labels: dict[str, str]) -> str:
    return json.dumps([name, sorted(labels.items())])


class Metrics:
    """Counters and histograms of this process, flushed to Redis in the background."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, float] = defaultdict(float)
        self._client: redis.Redis | None = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def attach(self, client: redis.Redis) -> None:
        """Flush to this Redis (the thread starts lazily, after gunicorn has forked)."""
        self._client = client

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1) -> None:
        """Add to a counter."""
        with self._lock:
            self._pending[_series(name, labels or {})] += value
        self._ensure_flusher()

    def observe(self, name: str, seconds: float, labels: dict[str, str]) -> None:
        """Record one latency in a histogram."""
        with self._lock:
            for bound in BUCKETS:
                if seconds <= bound:
                    self._pending[_series(f"{name}_bucket", {**labels, "le": str(bound)})] += 1
            self._pending[_series(f"{name}_bucket", {**labels, "le": "+Inf"})] += 1
            self._pending[_series(f"{name}_count", labels)] += 1
            self._pending[_series(f"{name}_sum", labels)] += seconds
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is not None or self._client is None:
            return
        with self._lock:
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._run, name="metrics-flush",
                                                 daemon=True)
                self._flusher.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def flush(self) -> None:
        """Move this process's deltas into Redis (kept for the next try if Redis fails)."""
        if self._client is None:
            return
        with self._lock:
            deltas, self._pending = dict(self._pending), defaultdict(float)
        if not deltas:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for series, value in deltas.items():
                pipe.hincrbyfloat(_KEY, series, value)
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                for series, value in deltas.items():
                    self._pending[series] += value

    def render(self, store: Store, clock: Clock) -> str:
        """The Prometheus text exposition of every process's totals and the outbox gauges."""
        totals: dict[str, float] = defaultdict(float)
        if self._client is not None:
            try:
                stored = cast(dict[str, str], self._client.hgetall(_KEY))
                for series, text in stored.items():
                    totals[series] += float(text)
            except redis.RedisError:
                log.warning("metrics: Redis unreadable, showing this process only")
        with self._lock:
            for series, delta in self._pending.items():
                totals[series] += delta
        try:
            depth, age_ms, dead = store.outbox_stats(epoch_ms(clock.now()))
            for gauge, level in (("cbm_outbox_depth", float(depth)),
                                 ("cbm_outbox_oldest_age_seconds", age_ms / 1000),
                                 ("cbm_dead_letters", float(dead))):
                totals[_series(gauge, {})] = level
        except StoreUnavailable:
            pass
        lines: list[str] = []
        by_family: dict[str, list[tuple[str, list[tuple[str, str]], float]]] = defaultdict(list)
        for series, total in totals.items():
            name, labels = json.loads(series)
            family = next((f for f in _HELP if name == f or name.startswith(f + "_")), name)
            by_family[family].append((name, [(str(k), str(v)) for k, v in labels], total))
        for family in sorted(by_family):
            kind, text = _HELP.get(family, ("untyped", family))
            lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
            for name, labels, value in sorted(by_family[family]):
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value:g}" if rendered
                             else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
