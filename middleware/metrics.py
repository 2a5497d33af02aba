"""Prometheus metrics by the book (SPEC §3.7), with ``prometheus_client``.

Each instance exposes its own exact counts and Prometheus sums instances. Under gunicorn
the workers of one master share them through ``prometheus_client``'s multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, prepared by ``gunicorn_conf``); elsewhere a process counts
in memory. Labels come only from closed sets: action names and route templates of this
service, outcomes and reasons of its own answers, HTTP statuses, Genesys route templates.
Where a label set is closed and small (action x outcome), every series exists at 0 from
the start, so ``rate()`` and alerts see a zero rather than nothing.

Gauges of shared state (outbox depth and age, dead letters) are served by one process,
the worker, through ``SharedStateCollector``: the web instances would report the same
value N times. This module imports no Redis: the caller passes a function that reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

#: Content type of the text exposition ``render`` returns.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

#: ``(outbox depth, age in seconds of its most overdue entry, dead letters)``, or ``None``
#: when the store cannot be read right now.
OutboxStats = Callable[[], tuple[int, float, int] | None]


def multiprocess_dir() -> str:
    """The folder of this instance's shared metric files, or ``""`` outside gunicorn."""
    # prometheus_client reads this variable itself; gunicorn_conf sets it before any worker.
    return os.environ.get(_MULTIPROC_ENV, "")


class Metrics:
    """The counters and histograms of one process (or one gunicorn instance)."""

    def __init__(self, outcomes: Mapping[str, Iterable[str]] | None = None) -> None:
        # The _created series double every family and no dashboard here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cbm_requests_total", "Requests by action, outcome, reason and HTTP status.",
            ("action", "outcome", "reason", "status"), registry=self.registry)
        self.answers = Counter(
            "cbm_answers_total", "Answers by action and outcome (every pair from the start).",
            ("action", "outcome"), registry=self.registry)
        self.duration = Histogram(
            "cbm_request_duration_seconds", "Request latency by action.", ("action",),
            buckets=BUCKETS, registry=self.registry)
        self.genesys_calls = Counter(
            "cbm_genesys_calls_total", "Genesys API calls by method, route template and status.",
            ("method", "route", "status"), registry=self.registry)
        self.genesys_rate_limited = Counter(
            "cbm_genesys_rate_limited_total", "429 answers received from Genesys.",
            registry=self.registry)
        self.genesys_errors = Counter(
            "cbm_genesys_errors_total", "Genesys calls that failed: 5xx answers or no answer.",
            ("kind",), registry=self.registry)
        self.token_fetches = Counter(
            "cbm_genesys_token_fetches_total", "OAuth tokens fetched from Genesys.",
            registry=self.registry)
        for kind in ("5xx", "network"):
            self.genesys_errors.labels(kind)
        for action, values in (outcomes or {}).items():
            self.duration.labels(action)
            for outcome in values:
                self.answers.labels(action, outcome)

    def request(self, action: str, outcome: str, reason: str, status: int,
                seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(action, outcome, reason, str(status)).inc()
        if outcome:
            self.answers.labels(action, outcome).inc()
        self.duration.labels(action).observe(seconds)

    def genesys_call(self, method: str, route: str, status: int | None) -> None:
        """Count one outbound Genesys call; ``status`` is ``None`` when no answer came."""
        self.genesys_calls.labels(method, route, "error" if status is None else str(status)).inc()
        if status == 429:
            self.genesys_rate_limited.inc()
        elif status is None:
            self.genesys_errors.labels("network").inc()
        elif status >= 500:
            self.genesys_errors.labels("5xx").inc()

    def token_fetched(self) -> None:
        """Count one OAuth token fetch."""
        self.token_fetches.inc()

    def render(self) -> bytes:
        """This instance's exposition: every worker's files under gunicorn, else this process."""
        path = multiprocess_dir()
        if not path:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(registry)


class SharedStateCollector(Collector):
    """The outbox and dead-letter gauges, read from the store at each scrape."""

    def __init__(self, stats: OutboxStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        """Three gauges, or none when the store cannot be read (the scrape still answers)."""
        read = self._stats()
        if read is None:
            return []
        depth, age_s, dead = read
        return [
            GaugeMetricFamily("cbm_outbox_depth", "Queued callbacks waiting for delivery.",
                              value=depth),
            GaugeMetricFamily("cbm_outbox_oldest_age_seconds",
                              "How overdue the oldest queued attempt is.", value=age_s),
            GaugeMetricFamily("cbm_dead_letters",
                              "Queued callbacks that exhausted their attempts.", value=dead),
        ]


def serve_worker_metrics(metrics: Metrics, stats: OutboxStats, port: int,
                         host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve the worker's counters and the shared-state gauges on ``port``; returns a stop."""
    metrics.registry.register(SharedStateCollector(stats))
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return stop
