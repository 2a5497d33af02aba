"""What happens to a request before any route sees it: tokens, the rate limit, faults, counts.

All of these run on the machine's monotonic clock, never the injected business clock, so a
test that moves business time does not refill the bucket or expire tokens. Callers hold the
simulator lock.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from middleware.sim.wire import ApiError, Json

FAULT_MODES: Final = ("respond", "drop")
#: ``before``: the request waits, then fails or proceeds late; ``after``: the route runs (a
#: create lands), then the answer waits and is lost (dropped or replaced by ``status``).
FAULT_PHASES: Final = ("before", "after")


class TokenStore:
    """Bearer tokens issued by ``POST /oauth/token`` and when each expires."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._expiry: dict[str, float] = {}

    def issue(self, ttl_s: int) -> str:
        """A fresh opaque token valid for ``ttl_s`` seconds."""
        token = secrets.token_urlsafe(32)
        self._expiry[token] = self._monotonic() + ttl_s
        return token

    def valid(self, token: str) -> bool:
        """Whether the token was issued here and has not expired."""
        expiry = self._expiry.get(token)
        return expiry is not None and self._monotonic() < expiry

    def expire_all(self) -> int:
        """Invalidate every issued token; return how many there were."""
        count = len(self._expiry)
        self._expiry.clear()
        return count


@dataclass(frozen=True)
class Admission:
    """The bucket's answer for one request, with the values of the rate-limit headers."""

    allowed: bool
    count: int
    limit: int
    reset_s: int
    retry_after_s: int


class TokenBucket:
    """``per_minute`` requests, refilled continuously, bursting up to a full minute's worth."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._stamp = monotonic()

    def set_limit(self, per_minute: int) -> None:
        """Change the limit and start again from a full bucket."""
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._stamp = self._monotonic()

    def take(self) -> Admission:
        """Spend one token if there is one."""
        now = self._monotonic()
        rate = self.per_minute / 60.0
        self._tokens = min(float(self.per_minute), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
        missing = self.per_minute - self._tokens
        return Admission(
            allowed=allowed,
            count=math.ceil(missing),
            limit=self.per_minute,
            reset_s=math.ceil(missing / rate),
            retry_after_s=0 if allowed else max(1, math.ceil((1.0 - self._tokens) / rate)),
        )


@dataclass
class Fault:
    """A switchable failure: which requests it hits, what they get, and how many times."""

    status: int | None = None
    retry_after_s: int | None = None
    latency_ms: int = 0
    remaining: int | None = None
    path_prefix: str = ""
    method: str | None = None
    mode: str = "respond"
    phase: str = "before"

    def to_json(self) -> Json:
        """The fault as ``PUT /sim/faults`` takes it."""
        return {
            "status": self.status, "retryAfter": self.retry_after_s,
            "latencyMs": self.latency_ms, "count": self.remaining,
            "pathPrefix": self.path_prefix, "method": self.method, "mode": self.mode,
            "phase": self.phase,
        }


_FAULT_KEYS: Final = frozenset(
    {"status", "retryAfter", "latencyMs", "count", "pathPrefix", "method", "mode", "phase"}
)


def _int_or_none(raw: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, "bad.request", f"{key} must be an integer from {low} to {high}")
    return value


def parse_fault(raw: Mapping[str, Any]) -> Fault:
    """Read the body of ``PUT /sim/faults``; 400 naming the first bad key."""
    unknown = sorted(set(raw) - _FAULT_KEYS)
    if unknown:
        raise ApiError(400, "bad.request", f"unknown fault key {unknown[0]}")
    mode = raw.get("mode", "respond")
    if mode not in FAULT_MODES:
        raise ApiError(400, "bad.request", "mode must be respond or drop")
    phase = raw.get("phase", "before")
    if phase not in FAULT_PHASES:
        raise ApiError(400, "bad.request", "phase must be before or after")
    status = _int_or_none(raw, "status", 400, 599)
    latency = _int_or_none(raw, "latencyMs", 0, 60_000) or 0
    if mode == "respond" and status is None and latency == 0:
        raise ApiError(400, "bad.request", "a respond fault needs a status or a latency")
    if phase == "after" and mode == "respond" and status is None:
        raise ApiError(400, "bad.request", "an after fault needs a status or mode drop")
    prefix = raw.get("pathPrefix", "")
    method = raw.get("method")
    if not isinstance(prefix, str) or (method is not None and not isinstance(method, str)):
        raise ApiError(400, "bad.request", "pathPrefix and method must be strings")
    if prefix.startswith("/sim"):
        raise ApiError(400, "bad.request", "faults never apply to the control API")
    return Fault(
        status=status,
        retry_after_s=_int_or_none(raw, "retryAfter", 0, 3600),
        latency_ms=latency,
        remaining=_int_or_none(raw, "count", 1, 1_000_000),
        path_prefix=prefix,
        method=method.upper() if method else None,
        mode=mode,
        phase=phase,
    )


class FaultPlan:
    """The fault currently switched on, if any."""

    def __init__(self) -> None:
        self.current: Fault | None = None

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that hits this request, counting it down; ``None`` when none does."""
        fault = self.current
        if fault is None or not path.startswith(fault.path_prefix):
            return None
        if fault.method is not None and fault.method != method:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.current = None
        return fault


@dataclass
class Stats:
    """Counters behind ``GET /sim/stats``."""

    requests: Counter[str] = field(default_factory=Counter)
    token_fetches: int = 0
    rate_limited: int = 0
    rejected_bodies: int = 0
    faults_injected: int = 0

    def to_json(self) -> Json:
        """The counters as the control API shows them."""
        return {
            "requests": dict(sorted(self.requests.items())),
            "tokenFetches": self.token_fetches,
            "rateLimited": self.rate_limited,
            "rejectedBodies": self.rejected_bodies,
            "faultsInjected": self.faults_injected,
        }
