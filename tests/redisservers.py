"""The Redis the suite runs against: one durable redis-server, or a three-primary Redis
Cluster on loopback, both started and stopped by PID and restartable after an abrupt kill.

Both are flagged as production runs Redis (AOF always, noeviction, no RDB snapshots), so
a kill loses nothing acknowledged and a restart on the same directory brings it all back.
Importable without pytest's fixtures (bench/ starts its own).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import redis

#: Every slot a healthy cluster serves.
SLOTS = 16384
#: How long the starter waits for a process, the cluster's creation, or its recovery.
START_TIMEOUT_S = 30.0
#: The flags every server gets, standalone or cluster node: durable as production.
DURABLE = ("--save", "", "--appendonly", "yes", "--appendfsync", "always",
           "--maxmemory-policy", "noeviction", "--daemonize", "no")


class RedisStartError(RuntimeError):
    """A redis-server or the cluster did not come up in time; the message says what and
    carries the tail of the logs that explain it."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], timeout_s: float, what: str,
          explain: Callable[[], str] = lambda: "") -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if check():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.05)
    raise RedisStartError(f"{what} not ready after {timeout_s}s{explain()}")


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RedisStartError(f"{name} is not installed; scripts/setup.sh installs it")
    return found


def _stop(process: subprocess.Popen[bytes], *, abrupt: bool) -> None:
    if process.poll() is None:
        if abrupt:
            process.kill()
        else:
            process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class RedisServer(ABC):
    """What the suite needs of its Redis, whichever the shape.

    ``url`` is what the service is given as ``REDIS_URL``; ``port``, ``directory`` and
    ``process`` name one server (for a cluster: the node the URL names, and the parent
    of every node's directory)."""

    #: ``"standalone"`` or ``"cluster"``: tests that depend on the shape read it.
    mode: ClassVar[str]
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Where the service should connect (a cluster has only db 0, which is this)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @abstractmethod
    def client(self) -> redis.Redis | redis.RedisCluster:
        """A client for assertions and clean-up, answering in ``str``."""

    @abstractmethod
    def primaries(self) -> list[redis.Redis]:
        """A plain client on each primary: together they hold every key."""

    def flush(self) -> None:
        """Empty every primary, so a test starts from nothing."""
        for primary in self.primaries():
            primary.flushall()

    def key_names(self) -> Iterator[str]:
        """Every key name, from every primary."""
        for primary in self.primaries():
            yield from primary.scan_iter(count=1000)

    @abstractmethod
    def restart(self) -> RedisServer:
        """Kill every process abruptly and start it again on the same ports and
        directories; returns this server once it answers (a cluster: ``cluster_state:ok``)."""

    @abstractmethod
    def stop(self) -> None:
        """Terminate every process and wait for it."""


@dataclass
class StandaloneRedis(RedisServer):
    """One redis-server process owned by the caller."""

    mode: ClassVar[str] = "standalone"
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        """A plain client on the server."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def primaries(self) -> list[redis.Redis]:
        """The one server."""
        return [self.client()]

    def flush(self) -> None:
        """Empty the database the service uses."""
        self.client().flushdb()

    def restart(self) -> StandaloneRedis:
        """Kill it and start it again on the same port and directory (the AOF)."""
        _stop(self.process, abrupt=True)
        self.process = _spawn(self.directory, self.port).process
        return self

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        _stop(self.process, abrupt=False)


def _spawn(directory: Path, port: int, *extra: str) -> StandaloneRedis:
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(directory), *DURABLE, "--loglevel", "warning",
         "--logfile", str(directory / "redis.log"), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = StandaloneRedis(port, directory, process)

    def explain() -> str:
        code = process.poll()
        state = "running" if code is None else f"exited with {code}"
        return f" (redis-server on port {port} {state}){_tail(directory / 'redis.log')}"

    try:
        _wait(lambda: process.poll() is None and bool(server.client().ping()),
              START_TIMEOUT_S, f"redis-server on port {port}", explain)
    except BaseException:
        # Whatever went wrong (a timeout, Ctrl-C), no server outlives the failed start.
        _stop(process, abrupt=True)
        raise
    return server


def _tail(log: Path, lines: int = 15) -> str:
    if not log.exists():
        return ""
    text = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return f"\n--- {log} ---\n{text}" if text else ""


def start_redis(directory: Path, port: int | None = None) -> StandaloneRedis:
    """Start one redis-server durable as production runs it: AOF always, noeviction."""
    return _spawn(directory, port or free_port())


@dataclass
class ClusterNode:
    """One primary of the cluster: its client port, its bus port, its directory."""

    port: int
    bus_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or start again) the node; ``nodes.conf`` there holds its cluster."""
        self.process = _spawn(
            self.directory, self.port, "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / f"nodes-{self.port}.conf"),
            "--cluster-node-timeout", "2000",
            # Chosen free, not port + 10000, which may fall past 65535 or be taken.
            "--cluster-port", str(self.bus_port)).process

    def client(self) -> redis.Redis:
        """A plain client on this node alone (no redirections followed)."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def info(self) -> dict[str, str]:
        """``CLUSTER INFO`` as a mapping."""
        raw = self.client().execute_command("CLUSTER INFO")
        # redis-py parses the reply into a mapping, numbers as int; compared as text here.
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        text = raw if isinstance(raw, str) else bytes(raw).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass
class RedisClusterServer(RedisServer):
    """Three primaries, no replicas, every slot assigned; the URL names the first node."""

    mode: ClassVar[str] = "cluster"
    directory: Path
    nodes: list[ClusterNode] = field(default_factory=list)

    @property  # type: ignore[override]
    def port(self) -> int:
        """The node the URL names."""
        return self.nodes[0].port

    @property  # type: ignore[override]
    def process(self) -> subprocess.Popen[bytes]:
        """The process of the node the URL names."""
        process = self.nodes[0].process
        assert process is not None, "the cluster was never started"
        return process

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """Every node's process."""
        return [node.process for node in self.nodes if node.process is not None]

    def client(self) -> redis.RedisCluster:
        """A cluster client: follows slots and redirections across the nodes."""
        return redis.RedisCluster(host="127.0.0.1", port=self.port, decode_responses=True,
                                  socket_timeout=5)

    def primaries(self) -> list[redis.Redis]:
        """A plain client on each node (all are primaries: no replicas here)."""
        return [node.client() for node in self.nodes]

    def restart(self) -> RedisClusterServer:
        """Kill every node at once and start them again; each reloads its AOF and its
        ``nodes.conf``, and the cluster is back when every node says ``cluster_state:ok``."""
        for node in self.nodes:
            if node.process is not None:
                _stop(node.process, abrupt=True)
        self._start_nodes()
        self.wait_ok()
        return self

    def stop(self) -> None:
        """Terminate every node and wait for each."""
        for node in self.nodes:
            if node.process is not None:
                _stop(node.process, abrupt=False)

    def wait_ok(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until every node serves all slots with the cluster healthy."""
        def healthy() -> bool:
            for node in self.nodes:
                info = node.info()
                if (info.get("cluster_state") != "ok"
                        or info.get("cluster_slots_assigned") != str(SLOTS)
                        or info.get("cluster_known_nodes") != str(len(self.nodes))):
                    return False
            return True

        _wait(healthy, timeout_s, f"cluster on ports {self.ports()}", self._explain)

    def ports(self) -> list[int]:
        """Every node's client port."""
        return [node.port for node in self.nodes]

    def _start_nodes(self) -> None:
        started: list[ClusterNode] = []
        try:
            for node in self.nodes:
                node.start()
                started.append(node)
        except BaseException:
            for node in started:
                if node.process is not None:
                    _stop(node.process, abrupt=True)
            raise

    def _explain(self) -> str:
        parts = []
        for node in self.nodes:
            try:
                info = node.info()
                state = (f"cluster_state:{info.get('cluster_state')} "
                         f"slots_assigned:{info.get('cluster_slots_assigned')} "
                         f"known_nodes:{info.get('cluster_known_nodes')}")
            except (OSError, redis.RedisError) as exc:
                state = f"unreachable ({exc})"
            parts.append(f"\n  node {node.port}: {state}")
        return "".join(parts) + "".join(_tail(n.directory / "redis.log", 5) for n in self.nodes)


def start_cluster(directory: Path, size: int = 3) -> RedisClusterServer:
    """Start ``size`` durable cluster nodes on free loopback ports (one directory each under
    ``directory``), join them with ``redis-cli --cluster create`` (no replicas) and wait
    until every node reports ``cluster_state:ok`` with all 16384 slots assigned."""
    cli = _binary("redis-cli")
    ports: set[int] = set()
    while len(ports) < 2 * size:
        ports.add(free_port())
    chosen = sorted(ports)
    cluster = RedisClusterServer(directory, [
        ClusterNode(port, bus, directory / f"node-{port}")
        for port, bus in zip(chosen[:size], chosen[size:], strict=True)])
    cluster._start_nodes()
    try:
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.ports()),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
        if created.returncode != 0:
            raise RedisStartError(
                f"redis-cli --cluster create exited with {created.returncode}:\n"
                f"{created.stdout[-2000:]}{created.stderr[-2000:]}{cluster._explain()}")
        cluster.wait_ok()
    except BaseException:
        for process in cluster.processes:
            _stop(process, abrupt=True)
        raise
    return cluster


def start_for_mode(mode: str, directory: Path) -> RedisServer:
    """The suite's Redis for ``TEST_REDIS``: empty or ``standalone`` for one server,
    ``cluster`` for three primaries."""
    if mode in ("", "standalone"):
        return start_redis(directory)
    if mode == "cluster":
        return start_cluster(directory)
    raise RedisStartError(f"TEST_REDIS={mode!r}: use 'standalone' (the default) or 'cluster'")


def client_for(url: str) -> redis.Redis | redis.RedisCluster:
    """A plain client on ``url`` for assertions, of the kind the server there is (asked
    with ``INFO cluster``, as the product does)."""
    probe = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    try:
        enabled = int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    finally:
        probe.close()
    if enabled:
        return redis.RedisCluster.from_url(url, decode_responses=True, socket_timeout=5)
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
