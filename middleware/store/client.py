"""The Redis connection and the policy on Redis errors, shared by every part of the store.

Every Redis failure (unreachable, timed out, refused) becomes ``StoreUnavailable``,
which the web layer answers with 503 and ``Retry-After``: the service never guesses
when it cannot read or write its own state.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from middleware.errors import StoreUnavailable
from middleware.store import keys
from middleware.store.packed import READ_RECORDS, WINDOW_PENDING, compose_layers

T = TypeVar("T")

# Deleting a lock or claim only while it still holds our token keeps one request from
# freeing a claim that expired and was taken by another.
_RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: The failures a caller may meet outside the store's own methods (a bad URL): no other
#: package names redis.
RedisError = redis.RedisError
#: A client of either kind; both speak the same commands for keys of one slot.
AnyRedis = redis.Redis | redis.RedisCluster


class Connection:
    """The service's Redis: one primary, or a Redis Cluster reached through any of its
    nodes. Which one is found out with ``INFO cluster`` on first use (SPEC §5), not at
    start: an instance started while Redis is down answers 503 and finds out once it is
    back, with no setting to say which."""

    def __init__(self, url: str, timeout_s: float, client: AnyRedis | None = None) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._client = client
        self._finding = threading.Lock()
        self._mode = "" if client is None else (
            "cluster" if isinstance(client, redis.RedisCluster) else "standalone")

    @property
    def mode(self) -> str:
        """``standalone``, ``cluster``, or ``""`` while Redis has not answered yet."""
        return self._mode

    def client(self) -> AnyRedis:
        """The client for the mode found (raises ``redis.RedisError`` while Redis cannot be
        asked)."""
        if self._client is not None:
            return self._client
        with self._finding:
            # One thread finds out; a second client made beside it would be dropped and
            # close the connections the first thread is using.
            if self._client is None:
                self._client = self._find()
            return self._client

    def _find(self) -> AnyRedis:
        # redis-py's defaults wait up to 5 s a try and retry ten times; a data action
        # cannot afford either.
        options: dict[str, Any] = {
            "socket_timeout": self._timeout_s, "socket_connect_timeout": self._timeout_s,
            "retry": Retry(NoBackoff(), 1), "decode_responses": True}
        probe = redis.Redis.from_url(self._url, **options)
        try:
            enabled = int(probe.info("cluster").get("cluster_enabled", 0)) == 1
        except redis.ResponseError:
            # INFO refused (some managed services rename it): a cluster always answers it.
            enabled = False
        finally:
            probe.close()
        if enabled:
            # A cluster has one database: the cluster client ignores the URL's path. Each
            # command goes to the node holding its slot, and follows MOVED answers.
            client: AnyRedis = redis.RedisCluster.from_url(self._url, **options)
            self._mode = "cluster"
        else:
            client = redis.Redis.from_url(self._url, health_check_interval=30, **options)
            self._mode = "standalone"
        return client


def connect(url: str, timeout_s: float) -> Connection:
    """The service's Redis at ``url``: every command gives up after ``timeout_s``, retried
    once; no connection is opened until first use."""
    return Connection(url, timeout_s)


#: What the composition root passes around: a connection, or a client made elsewhere.
RedisClient = Connection | redis.Redis


def event_json(event: Mapping[str, str | int]) -> str:
    """An evidence event as one list entry: compact JSON."""
    return json.dumps(event, separators=(",", ":"))


def client_key(client_id: str) -> str:
    """Stable, non-reversible name for an OAuth client in key names."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:16]


def compose(*bodies: str) -> str:
    """One script that runs ``bodies`` in order, each on its own slice of KEYS and ARGV, and
    answers a list of their answers (``false`` for none).

    Its ARGV starts with each body's key and argument counts; ``StoreBase._steps`` lays them
    out. Each body runs as a local function whose parameters shadow KEYS and ARGV, so it
    reads as it would alone.
    """
    layer, finish, bodies = compose_layers(bodies)
    parts = [layer] if layer else []
    parts += [f"local function step{i}(KEYS, ARGV)\n{body}\nend"
              for i, body in enumerate(bodies)]
    parts.append("""
local function slice(t, from, n)
  local s = {}
  for j = 1, n do s[j] = t[from + j] end
  return s
end
local out, k, a = {}, 0, """ + str(2 * len(bodies)))
    for i in range(len(bodies)):
        parts.append(f"""do
  local nk, na = tonumber(ARGV[{2 * i + 1}]), tonumber(ARGV[{2 * i + 2}])
  local r = step{i}(slice(KEYS, k, nk), slice(ARGV, a, na))
  if r == nil then r = false end
  out[{i + 1}] = r
  k, a = k + nk, a + na
end""")
    if finish:
        parts.append(finish)
    parts.append("return out")
    return "\n".join(parts)


class StoreBase:
    """The client, the error policy and the scripts of every part of the store.

    Each part lists its Lua scripts in ``SCRIPTS`` beside the methods that run them; they
    are registered once, here.
    """

    SCRIPTS: ClassVar[dict[str, str]] = {
        "_release_lock": _RELEASE_LOCK, "_read_records": READ_RECORDS,
        "_window_pending": WINDOW_PENDING}

    def __init__(self, client: RedisClient) -> None:
        self._conn = client if isinstance(client, Connection) else Connection("", 0, client)
        self._lua: dict[str, str] = {}
        for klass in type(self).__mro__:
            self._lua.update(vars(klass).get("SCRIPTS", {}))
        self._scripts: dict[str, Script] = {}
        self._shas: dict[str, str] = {}

    @property
    def _r(self) -> Any:
        # Any: redis-py types Redis and RedisCluster apart, though for the keys of one slot
        # they take the same commands.
        try:
            return self._conn.client()
        except (redis.RedisError, RedisClusterException) as exc:
            raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc

    @property
    def mode(self) -> str:
        """The Redis mode found (``standalone``, ``cluster``; ``""`` before Redis answered)."""
        return self._conn.mode

    def _script(self, name: str) -> Script:
        if name not in self._scripts:
            self._scripts[name] = self._r.register_script(self._lua[name])
        return self._scripts[name]

    def _steps(self, name: str,
               steps: list[tuple[str, list[str], Sequence[str | int | float]]]) -> list[Any]:
        """Run several scripts as one (``compose``): one command, so one round trip and all
        or nothing sent (a script missing after a Redis restart is loaded and the whole
        step sent again, where inside MULTI it would fail alone while the rest applied).
        ``name`` names this combination of ``steps`` (body, keys, args)."""
        if name not in self._scripts:
            self._scripts[name] = self._r.register_script(compose(*(b for b, _, _ in steps)))
        counts: list[str | int | float] = []
        names: list[str] = []
        args: list[str | int | float] = []
        for _, step_keys, step_args in steps:
            counts += [len(step_keys), len(step_args)]
            names += step_keys
            args += step_args
        script = self._scripts[name]
        return cast(list[Any], self._call(lambda: script(keys=names, args=[*counts, *args])))

    def _reads(self, scripts: Sequence[str], build: Callable[[Any], None]) -> list[Any]:
        """Run the reads ``build`` queues on a pipeline (no transaction), where some are
        ``scripts`` queued by ``_queue_script``: one round trip. Redis forgets scripts when
        it restarts; they are then loaded and the reads, which change nothing, sent again."""
        for attempt in (0, 1):
            pipe = self._r.pipeline(transaction=False)
            build(pipe)
            try:
                return cast(list[Any], pipe.execute())
            except redis.exceptions.NoScriptError as exc:
                if attempt:
                    raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc
                for name in scripts:
                    self._call(functools.partial(self._r.script_load, self._lua[name]))
            except (redis.RedisError, RedisClusterException) as exc:
                raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def _queue_script(self, pipe: Any, name: str, names: Sequence[str],
                      args: Sequence[str | int]) -> None:
        """Queue one of ``SCRIPTS`` on ``pipe`` by its hash (``_reads`` runs it)."""
        sha = self._shas.get(name)
        if sha is None:
            sha = self._shas[name] = hashlib.sha1(
                self._lua[name].encode(), usedforsecurity=False).hexdigest()
        pipe.execute_command("EVALSHA", sha, len(names), *names, *args)

    def _records(self, callback_ids: list[str], shard: str | None) -> list[dict[str, str]]:
        """Ledger records by id in one round trip, skipping those that are gone (``shard``
        unknown: every shard is read)."""
        if not callback_ids:
            return []
        shards = (shard,) if shard is not None else keys.SHARDS

        def build(pipe: Any) -> None:
            # One script per shard: its keys share the shard's slot.
            for each in shards:
                self._queue_script(pipe, "_read_records",
                                   [keys.record(each, cid) for cid in callback_ids], [])

        rows = cast(list[list[list[str]]], self._reads(["_read_records"], build))
        found: list[dict[str, str]] = []
        for i, cid in enumerate(callback_ids):
            for row in (per_shard[i] for per_shard in rows):
                if row:
                    # The id is the key's; records written since do not repeat it.
                    found.append({"id": cid, **dict(zip(row[0::2], row[1::2], strict=True))})
                    break
        return found

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (redis.RedisError, RedisClusterException) as exc:
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
        """The persistence settings an accepted request depends on (empty if CONFIG is off);
        on a cluster, a setting any primary lacks is reported as that primary has it."""
        settings: dict[str, str] = {}
        client = self._r
        for name in ("appendonly", "appendfsync", "maxmemory-policy"):
            try:
                if isinstance(client, redis.RedisCluster):
                    per_node = cast(dict[str, dict[str, str]], client.config_get(
                        name, target_nodes=redis.RedisCluster.PRIMARIES))
                    values = sorted({v.get(name, "") for v in per_node.values()})
                    settings[name] = values[0] if len(values) == 1 else "/".join(values)
                else:
                    settings.update(cast(dict[str, str], client.config_get(name)))
            except redis.ResponseError:
                # Managed Redis often renames CONFIG; report what we could read.
                continue
            except (redis.RedisError, RedisClusterException) as exc:
                raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc
        return settings

    def legacy_keys(self) -> list[str]:
        """Shared indexes of the layout before shards (README "Upgrading") still in Redis:
        what they hold is not read by this release."""
        names = [f"{keys.PREFIX}{n}" for n in ("pending", "outbox", "dead", "consent-seq")]
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.exists(name)
        found = cast(list[int], self._call(pipe.execute))
        return [name for name, there in zip(names, found, strict=True) if there]

    def primaries(self) -> int:
        """How many primaries hold the data (1 unless a cluster)."""
        client = self._r
        if isinstance(client, redis.RedisCluster):
            return len(self._call(client.get_primaries))
        return 1
