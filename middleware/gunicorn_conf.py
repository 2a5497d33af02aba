"""gunicorn settings shipped with the service (Procfile ``web``); the bind comes from PORT.

gthread keeps keep-alive connections and lets a worker wait on Redis or Genesys without
blocking its siblings. The worker count comes from the command line (Procfile:
``WEB_CONCURRENCY``, default 2, one per core we size for). ``timeout`` sits
well above REQUEST_DEADLINE_MS so only a truly stuck worker is killed. Workers are recycled
rarely and at staggered points: a restart costs a latency spike (seen at 200-300 ms p99 in
the benchmark when it happened every few seconds).

Every line gunicorn writes is JSON, formatted like the service's own (``logconfig_dict``).

Metrics: the workers of this master share their counts through ``prometheus_client``'s
multiprocess mode. The folder is ``PROMETHEUS_MULTIPROC_DIR`` when set, else a fresh
temporary one; it is emptied when the master starts (files of a previous run would be
counted again) and each dead worker is marked so its live gauges go away.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from middleware.logs import GUNICORN_LOGCONFIG

# Set here, at config load, so every process imports prometheus_client already knowing it
# (the library chooses its storage at import). prometheus_client reads the variable itself,
# which is why this file, and not middleware.config, touches it.
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
if not os.environ.get(_MULTIPROC):
    os.environ[_MULTIPROC] = tempfile.mkdtemp(prefix="cbm-metrics-")

# Imported only now: workers forked from this master inherit its choice of storage.
from prometheus_client import multiprocess  # noqa: E402

logconfig_dict = GUNICORN_LOGCONFIG
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 200_000
max_requests_jitter = 20_000
accesslog = None


def on_starting(server: Any) -> None:
    """Empty the metrics folder: counts start from zero with each master."""
    folder = Path(os.environ[_MULTIPROC])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared files."""
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream
