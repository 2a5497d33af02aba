"""The Redis connection and the policy on Redis errors, shared by every part of the store.

Every Redis failure (unreachable, timed out, refused) becomes ``StoreUnavailable``,
which the web layer answers with 503 and ``Retry-After``: the service never guesses
when it cannot read or write its own state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from middleware.errors import StoreUnavailable
from middleware.store import keys

T = TypeVar("T")

# Deleting a lock or claim only while it still holds our token keeps one request from
# freeing a claim that expired and was taken by another.
_RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: The client type the composition root passes around, and the failures it may raise
#: outside the store's own methods (connecting, a bad URL): no other package names redis.
RedisClient = redis.Redis
RedisError = redis.RedisError


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


def event_json(event: Mapping[str, str | int]) -> str:
    """An evidence event as one list entry: compact JSON."""
    return json.dumps(event, separators=(",", ":"))


def client_key(client_id: str) -> str:
    """Stable, non-reversible name for an OAuth client in key names."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:16]


class StoreBase:
    """The client, the error policy and the scripts of every part of the store.

    Each part lists its Lua scripts in ``SCRIPTS`` beside the methods that run them; they
    are registered once, here.
    """

    SCRIPTS: ClassVar[dict[str, str]] = {"_release_lock": _RELEASE_LOCK}

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._scripts: dict[str, Script] = {}
        for klass in type(self).__mro__:
            for name, lua in vars(klass).get("SCRIPTS", {}).items():
                self._scripts[name] = client.register_script(lua)

    def _script(self, name: str) -> Script:
        return self._scripts[name]

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc

    def _release(self, key: str, holder: str) -> None:
        self._call(lambda: self._script("_release_lock")(keys=[key], args=[holder]))

    def _append_history(self, pipe: Any, digest: str, event: Mapping[str, str | int],
                        ttl_s: int) -> None:
        key = keys.events(digest)
        pipe.rpush(key, event_json(event))
        pipe.expire(key, ttl_s)

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
