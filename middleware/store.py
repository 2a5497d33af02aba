"""Everything the service keeps in Redis: key names, TTLs, scripts and the policy on Redis errors.

Callers speak in domain words (``save_token``, ``record_callback``); no other module
knows a key name. Keys never contain a phone number, token or secret: numbers appear
only as HMAC digests (``numbers.NumberKeys``), OAuth clients as a hash of their id.

Every Redis failure (unreachable, timed out, refused) becomes ``StoreUnavailable``,
which the web layer answers with 503 and ``Retry-After``: the service never guesses
when it cannot read or write its own state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from middleware.errors import StoreUnavailable

T = TypeVar("T")

PREFIX: Final = "cbm:"

# Deleting a lock only while it still holds our token keeps one worker from freeing a lock
# that expired and was taken by another.
_RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(url: str, timeout_s: float) -> redis.Redis:
    """A client whose every command gives up after ``timeout_s``, retried once.

    redis-py's defaults wait up to 5 s a try and retry ten times; a data action
    cannot afford either.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        decode_responses=True,
    )


def client_key(client_id: str) -> str:
    """Stable, non-reversible name for an OAuth client in key names."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:16]


class Store:
    """The service's state in Redis, behind methods named for what they mean."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._release_lock = client.register_script(_RELEASE_LOCK)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc

    # -- health -------------------------------------------------------------------------

    def ping(self) -> bool:
        """Whether Redis answers."""
        return bool(self._call(self._r.ping))

    def durability(self) -> dict[str, str]:
        """The persistence settings an accepted request depends on (empty if CONFIG is off)."""
        settings: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy"):
            try:
                settings.update(cast(dict[str, str], self._r.config_get(name)))
            except redis.ResponseError:
                # Managed Redis often renames CONFIG; report what we could read.
                continue
            except redis.RedisError as exc:
                raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc
        return settings

    # -- OAuth token shared by every worker ----------------------------------------------

    def cached_token(self, client: str) -> tuple[str, float] | None:
        """The shared access token and its refresh-by epoch second, if one is cached."""
        raw = self._call(lambda: self._r.get(f"{PREFIX}token:{client}"))
        if not raw:
            return None
        data = json.loads(cast(str, raw))
        return str(data["token"]), float(data["refreshAt"])

    def save_token(self, client: str, token: str, refresh_at: float, ttl_s: int) -> None:
        """Share a fresh token with every worker until it should be refreshed."""
        value = json.dumps({"token": token, "refreshAt": refresh_at})
        self._call(lambda: self._r.set(f"{PREFIX}token:{client}", value, ex=max(ttl_s, 1)))

    def forget_token(self, client: str, token: str) -> None:
        """Drop the shared token if it is the one Genesys just refused."""
        key = f"{PREFIX}token:{client}"
        cached = self.cached_token(client)
        if cached and cached[0] == token:
            self._call(lambda: self._r.delete(key))

    def acquire_token_lock(self, client: str, holder: str, ttl_ms: int) -> bool:
        """Become the one worker fetching a token; the lock expires if that worker dies."""
        key = f"{PREFIX}token-lock:{client}"
        return bool(self._call(lambda: self._r.set(key, holder, nx=True, px=ttl_ms)))

    def release_token_lock(self, client: str, holder: str) -> None:
        """Release the fetch lock if we still hold it."""
        key = f"{PREFIX}token-lock:{client}"
        self._call(lambda: self._release_lock(keys=[key], args=[holder]))

    # -- callbacks ----------------------------------------------------------------------

    def record_callback(self, callback_id: str, record: dict[str, Any], ttl_s: int) -> None:
        """Keep what later calls need about a created callback (its identifiers above all)."""
        key = f"{PREFIX}callback:{callback_id}"
        self._call(lambda: self._r.set(key, json.dumps(record), ex=ttl_s))

    def callback(self, callback_id: str) -> dict[str, Any] | None:
        """A callback created here, or ``None``."""
        raw = self._call(lambda: self._r.get(f"{PREFIX}callback:{callback_id}"))
        return cast(dict[str, Any], json.loads(cast(str, raw))) if raw else None
