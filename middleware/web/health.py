"""Readiness: can this instance accept work that it must never lose?"""

from __future__ import annotations

from typing import Any, Final

from middleware.deadline import Deadline
from middleware.errors import StoreUnavailable, UpstreamError
from middleware.genesys.client import GenesysClient
from middleware.store import Store

#: Redis settings without which an accepted request could be lost or a claim evicted.
REQUIRED_REDIS: Final = {
    "appendonly": "yes",
    "appendfsync": "always",
    "maxmemory-policy": "noeviction",
}


class Readiness:
    """Runs each dependency check and reports them by name."""

    def __init__(self, store: Store, genesys: GenesysClient) -> None:
        self._store = store
        self._genesys = genesys

    def __call__(self, deadline: Deadline) -> dict[str, Any]:
        """``{check: {"ok": bool, "detail": str}}`` for redis, redisDurability, redisLayout
        and genesys."""
        report: dict[str, Any] = {}
        try:
            self._store.ping()
            mode = self._store.mode
            detail = f"reachable: a cluster of {self._store.primaries()} primaries" \
                if mode == "cluster" else "reachable: one primary"
            report["redis"] = {"ok": True, "detail": detail, "mode": mode}
            settings = self._store.durability()
            wrong = [f"{k}={settings.get(k, 'unknown')} (need {v})"
                     for k, v in REQUIRED_REDIS.items() if settings.get(k) != v]
            report["redisDurability"] = {"ok": not wrong,
                                         "detail": "; ".join(wrong) or "AOF always, noeviction"}
            legacy = self._store.legacy_keys()
            report["redisLayout"] = {"ok": not legacy, "detail": (
                f"keys of the layout before shards found ({', '.join(legacy)}): they are not "
                "read until moved with `python -m middleware migrate-keys` (README \"Upgrading "
                "from a release without shards\")") if legacy
                else "16 shards"}
        except StoreUnavailable as exc:
            report["redis"] = {"ok": False, "detail": str(exc),
                               "mode": self._store.mode or "unknown"}
            report["redisDurability"] = {"ok": False, "detail": "Redis unreachable"}
            report["redisLayout"] = {"ok": False, "detail": "Redis unreachable"}
        try:
            self._genesys.token(deadline)
            report["genesys"] = {"ok": True, "detail": "token obtained"}
        except UpstreamError as exc:
            report["genesys"] = {"ok": False, "detail": str(exc)}
        except StoreUnavailable as exc:
            # The shared token lives in Redis: Genesys itself was not asked.
            report["genesys"] = {"ok": False, "detail": f"not checked: {exc} (the shared "
                                 "token is kept in Redis)"}
        return report
