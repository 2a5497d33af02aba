"""``bench/run``: one benchmark run of the service against its ceiling and its reference path.

Everything on loopback, started here and stopped here by PID:

* redis-server on a free port, durable as production runs it (AOF ``appendfsync always``,
  ``noeviction``);
* the Genesys simulator under gunicorn (``-w 1 -k gthread --threads 8``), its rate limit
  raised out of the way (``SIM_RATE_LIMIT_PER_MIN``), and the service's own Genesys budget
  too (``GENESYS_RATE_LIMIT_PER_MIN``): the table says so;
* the service under the shipped gunicorn config (``-c python:middleware.gunicorn_conf
  -w 2``, as the Procfile);
* ``bench/reference_app.py`` (``/bare``: the ceiling; ``/reference``: the unavoidable work
  of a create) under the same gunicorn config on another port.

Then wrk scenarios (warm-up, then a measured run each), CPU per request from the gunicorn
process trees (``/proc/<pid>/stat``), Genesys calls per create from ``/sim/stats``, and the
duplicate window's lookups with 1k and 1M pending callbacks written by the product's own
``Store`` code (each in its number's shard), plus Redis bytes per pending callback; the
create row again against a three-primary Redis Cluster (``tests/redisservers.py``), the
Redis round trips per request (``bench/roundtrips.py``, on one primary and on the
cluster), and the bytes a callback keeps past the window (``tests/memory.py``). Prints one
Markdown report and writes it to ``bench/last-run.md``.
"""

# A benchmark driver, not product code: it starts known local binaries (S603/S607) and
# draws reproducible, non-secret test data from seeded generators (S311).
# ruff: noqa: S311, S603, S607

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402
from redis.commands.core import Script  # noqa: E402

from bench import roundtrips  # noqa: E402
from middleware.app import build_services  # noqa: E402
from middleware.clock import FixedClock, SystemClock  # noqa: E402
from middleware.config import Config  # noqa: E402
from middleware.deadline import Deadline  # noqa: E402
from middleware.genesys.client import new_session  # noqa: E402
from middleware.ledger.records import LedgerRecord  # noqa: E402
from middleware.rules.number import CustomerNumber, NumberKeys, normalise  # noqa: E402
from middleware.store import Store, connect, keys  # noqa: E402
from middleware.store.packed import with_layer  # noqa: E402
from tests import memory  # noqa: E402
from tests.conftest import T0, _serve_sim  # noqa: E402
from tests.memory import key_bytes, kind_of  # noqa: E402
from tests.redisservers import start_cluster, start_redis  # noqa: E402

CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-client-secret"
BASIC_USER, BASIC_PASSWORD = "bench", "bench-password"
PII_KEY = "bench-pii-key"
DEMO_AGENT = "a1000000-0000-4000-8000-000000000001"
DEMO_QUEUE = "b1000000-0000-4000-8000-000000000001"
RATE_LIMIT = 100_000_000  # per minute: "out of the way" for both the simulator and the service
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_THREADS = 2
CREATE_ROUTE = "POST /api/v2/conversations/callbacks"


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A process this run started, with its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The process id (the gunicorn master for the apps)."""
        return self.popen.pid


class Rig:
    """Starts processes, notes each PID (``bench/run`` kills those left on exit), stops them."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[Proc] = []
        self._pids = work / "pids"

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        """Start one process in its own session, its output in ``<work>/<name>.log``."""
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        with self._pids.open("a") as pids:
            pids.write(f"{popen.pid}\n")
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        """TERM, then KILL after 15 s; the process only, by its id."""
        if proc.popen.poll() is None:
            proc.popen.terminate()
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)
        # Only processes still running stay listed for bench/run's exit trap.
        self._pids.write_text("".join(f"{p.pid}\n" for p in self.procs))

    def adopt(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> Proc:
        """A process started elsewhere (a cluster node): listed and stopped like the rest."""
        with self._pids.open("a") as pids:
            pids.write(f"{popen.pid}\n")
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """Stop everything still running, newest first."""
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, proc: Proc) -> None:
    """Poll ``check`` until true; fail with the process's log tail after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.popen.poll() is not None:
            break
        try:
            if check():
                return
        except (OSError, redis.RedisError, requests.RequestException):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start:\n{proc.log.read_text()[-3000:]}")


def gunicorn_argv(app: str, port: int, *extra: str) -> list[str]:
    """gunicorn as the Procfile runs it, bound to loopback."""
    return [sys.executable, "-m", "gunicorn", *extra, "-b", f"127.0.0.1:{port}", app]


# -- CPU accounting ------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children (recycled workers) and live children."""
    try:
        fields = _stat(pid)
        total = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
        for child in children(pid):
            try:
                child_fields = _stat(child)
                total += int(child_fields[11]) + int(child_fields[12])
            except OSError:
                continue
        return total / CLK_TCK
    except OSError:
        return 0.0


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / CLK_TCK


def wrk_children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """One measured wrk run."""

    name: str
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int = 0
    socket_errors: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per request, by process tree
    other_load_cores: float = 0.0
    worker_restarts: int = 0
    genesys_calls: int = 0
    genesys_routes: dict[str, int] = field(default_factory=dict)
    genesys_counted: bool = False
    redis_commands: dict[str, int] = field(default_factory=dict)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(name: str, connections: int, seconds: float, out: str) -> WrkResult:
    """Requests/s, p50/p99 and errors from ``wrk --latency`` output, and post.lua's counts."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:\s+(.*)", out)
    counts_line = re.search(r"BENCH-COUNTS (.*)", out)
    counts = {k: int(v) for k, v in (p.split("=") for p in counts_line.group(1).split())} \
        if counts_line else {}
    return WrkResult(name, connections, seconds, total, rps, p50, p99,
                     int(non2xx.group(1)) if non2xx else 0,
                     errors.group(1).strip() if errors else "", counts)


def run_wrk(url: str, script: Path, connections: int, seconds: float,
            script_args: list[str], name: str = "") -> WrkResult:
    """One bounded wrk run on loopback."""
    threads = 1 if connections == 1 else WRK_THREADS
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
            "--timeout", "5s", "-s", str(script), url]
    if script_args:
        argv += ["--", *script_args, str(threads)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return parse_wrk(name, connections, seconds, done.stdout)


# -- numbers -------------------------------------------------------------------------------


def valid_us_numbers(count: int) -> list[str]:
    """Distinct E.164 US numbers that the service's own parser accepts, spread over many
    area codes and exchanges (in a fixed order, so runs are comparable)."""
    area_codes = [a for a in range(201, 990)
                  if (n := normalise(f"+1{a}2345678", "US")) is not None and n.region == "US"]
    exchanges = [x for x in range(230, 990, 11) if x % 100 != 11 and x != 555]
    found: list[str] = []
    subscriber = 1001
    while len(found) < count:
        for area in area_codes:
            for exchange in exchanges:
                candidate = f"+1{area}{exchange}{subscriber:04d}"
                number = normalise(candidate, "US")
                if number is not None and number.region == "US":
                    found.append(number.e164)
                    if len(found) == count:
                        return found
        subscriber += 37
    return found


# -- the run -------------------------------------------------------------------------------


@dataclass
class Stack:
    """Everything started for the HTTP scenarios."""

    redis_port: int
    redis_proc: Proc
    sim_url: str
    sim: Proc
    service_url: str
    service: Proc
    reference_url: str
    reference: Proc


def service_env(redis_url: str, sim_url: str, log_level: str) -> dict[str, str]:
    """The service's (and the reference app's) environment."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "GENESYS_API_URL": sim_url,
        "GENESYS_LOGIN_URL": sim_url,
        "GENESYS_CLIENT_ID": CLIENT_ID,
        "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
        "ACTION_BASIC_CREDENTIALS": f"{BASIC_USER}:{BASIC_PASSWORD}",
        "PII_KEYS": PII_KEY,
        "GENESYS_RATE_LIMIT_PER_MIN": str(RATE_LIMIT),
        "LOG_LEVEL": log_level,
    }


def start_stack(rig: Rig, args: argparse.Namespace) -> Stack:
    """redis-server, the simulator, the service and the reference app, each on a free port."""
    redis_port = free_port()
    redis_dir = rig.work / "redis"
    redis_dir.mkdir()
    redis_proc = rig.start("redis", [
        shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind",
        "127.0.0.1", "--dir", str(redis_dir), "--save", "", "--appendonly", "yes",
        "--appendfsync", "always", "--maxmemory-policy", "noeviction", "--daemonize", "no",
        "--loglevel", "warning"], dict(os.environ))
    client = redis.Redis(port=redis_port, socket_timeout=30)
    wait_until(lambda: bool(client.ping()), 20, "redis-server", redis_proc)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    sim_port = free_port()
    sim = rig.start("sim", gunicorn_argv("middleware.sim.wsgi:app", sim_port, "-w", "1", "-k",
                                         "gthread", "--threads", "8"), {
        **os.environ, "SIM_PORT": str(sim_port), "SIM_RATE_LIMIT_PER_MIN": str(RATE_LIMIT),
        "GENESYS_CLIENT_ID": CLIENT_ID, "GENESYS_CLIENT_SECRET": CLIENT_SECRET})
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_until(lambda: requests.get(f"{sim_url}/sim/stats", timeout=2).ok, 30, "simulator", sim)

    env = service_env(redis_url, sim_url, args.log_level)
    shipped = ("-c", "python:middleware.gunicorn_conf", "-w", str(args.workers))
    service_port, reference_port = free_port(), free_port()
    service = rig.start("service", gunicorn_argv("middleware.wsgi:app", service_port, *shipped),
                        env)
    reference = rig.start("reference", gunicorn_argv("bench.reference_app:app", reference_port,
                                                     *shipped), env)
    service_url = f"http://127.0.0.1:{service_port}"
    reference_url = f"http://127.0.0.1:{reference_port}"
    wait_until(lambda: requests.get(f"{service_url}/healthz", timeout=2).ok, 60, "service",
               service)
    wait_until(lambda: requests.post(f"{reference_url}/bare", json={}, timeout=2).ok, 60,
               "reference app", reference)
    return Stack(redis_port, redis_proc, sim_url, sim, service_url, service, reference_url,
                 reference)


class Numbers:
    """The list file of fresh numbers and how far the runs have used it."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.numbers = valid_us_numbers(count)
        path.write_text("\n".join(self.numbers) + "\n")
        self.offset = 0

    def take(self, count: int) -> list[str]:
        """Numbers for requests sent from here (not through wrk)."""
        taken = self.numbers[self.offset:self.offset + count]
        self.offset += count
        return taken

    def used(self, result: WrkResult, threads: int) -> None:
        """Move past what a wrk run consumed."""
        self.offset += threads * result.counts.get("maxk", 0)


AUTH = "Basic " + base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()


def sim_calls(sim_url: str) -> dict[str, int]:
    """The /api/v2 and /oauth requests the simulator has counted, by route."""
    stats = requests.get(f"{sim_url}/sim/stats", timeout=5).json()
    return {str(k): int(v) for k, v in stats["requests"].items()}


def redis_commands(*clients: redis.Redis) -> dict[str, int]:
    """Calls per Redis command so far (commands run inside scripts included), summed over
    the servers (a cluster's primaries)."""
    calls: dict[str, int] = {}
    for client in clients:
        for name, stats in client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            calls[command] = calls.get(command, 0) + int(stats["calls"])
    return calls


def used_memory(nodes: list[tuple[int, redis.Redis]]) -> int:
    """INFO used_memory summed over the servers."""
    return sum(int(client.info("memory")["used_memory"]) for _, client in nodes)


def create_body(number: str) -> dict[str, Any]:
    """The body post.lua sends for kind=create."""
    return {"customerNumber": number, "customerName": "Bench Customer", "agentId": DEMO_AGENT,
            "queueId": DEMO_QUEUE, "consentGiven": True}


def warm_caches(stack: Stack, numbers: Numbers, workers: int,
                urls: list[str] | None = None) -> None:
    """Fill each worker's Genesys read cache and token: a few creates on fresh connections
    (gunicorn hands each to whichever worker accepts it), to both apps (or to ``urls``)."""
    for _ in range(6 * workers):
        number = numbers.take(1)[0]
        for url in urls or (f"{stack.service_url}/v1/actions/create-callback",
                            f"{stack.reference_url}/reference"):
            answer = requests.post(url, json=create_body(number), timeout=10,
                                   headers={"Authorization": AUTH, "Connection": "close"})
            if answer.status_code != 200 or answer.json().get("outcome") != "CREATED":
                raise RuntimeError(f"warm-up create failed at {url}: {answer.status_code} "
                                   f"{answer.text[:500]}")


@dataclass
class Scenario:
    """One row of the HTTP table."""

    name: str
    url: str
    script: Path
    connections: int
    script_args: Callable[[], list[str]]
    trees: dict[str, int]  # label -> master pid whose CPU is charged per request
    fresh_numbers: bool = False
    count_genesys: bool = False


def measure(scenario: Scenario, stack: Stack, numbers: Numbers, args: argparse.Namespace,
            redis_client: redis.Redis, redis_nodes: list[tuple[int, redis.Redis]] | None = None
            ) -> WrkResult:
    """Warm-up run, then the measured run with CPU, load, restarts and Genesys calls.
    ``redis_nodes``: the (pid, client) of every primary when they are not ``stack``'s one
    redis-server (a cluster): their CPU, memory and commands are summed."""
    nodes = redis_nodes or [(stack.redis_proc.pid, redis_client)]
    threads = 1 if scenario.connections == 1 else WRK_THREADS
    if args.warmup > 0:
        warm = run_wrk(scenario.url, scenario.script, scenario.connections, args.warmup,
                       scenario.script_args(), scenario.name)
        if scenario.fresh_numbers:
            numbers.used(warm, threads)
    workers_before = {label: set(children(pid)) for label, pid in scenario.trees.items()}
    ours = {**scenario.trees, "sim": stack.sim.pid,
            **{f"redis-{i}": pid for i, (pid, _) in enumerate(nodes)}}
    cpu_before = {label: tree_cpu_s(pid) for label, pid in ours.items()}
    busy_before, wrk_before = machine_busy_s(), wrk_children_cpu_s()
    calls_before = sim_calls(stack.sim_url) if scenario.count_genesys else {}
    memory_before = used_memory(nodes)
    commands_before = redis_commands(*(client for _, client in nodes))
    result = run_wrk(scenario.url, scenario.script, scenario.connections, args.duration,
                     scenario.script_args(), scenario.name)
    cpu_after = {label: tree_cpu_s(pid) for label, pid in ours.items()}
    busy, wrk_cpu = machine_busy_s() - busy_before, wrk_children_cpu_s() - wrk_before
    if scenario.fresh_numbers:
        numbers.used(result, threads)
    if scenario.count_genesys:
        calls_after = sim_calls(stack.sim_url)
        result.genesys_routes = {route: n - calls_before.get(route, 0)
                                 for route, n in calls_after.items()
                                 if n > calls_before.get(route, 0)}
        result.genesys_calls = sum(result.genesys_routes.values())
        result.genesys_counted = True
    result.counts["redis_bytes"] = used_memory(nodes) - memory_before
    commands_after = redis_commands(*(client for _, client in nodes))
    result.redis_commands = {name: n - commands_before.get(name, 0)
                             for name, n in commands_after.items()
                             if n > commands_before.get(name, 0)
                             and name not in ("info", "cluster")}
    spent = {label: cpu_after[label] - cpu_before[label] for label in ours}
    result.cpu_ms = {label: 1000 * s / max(result.requests, 1) for label, s in spent.items()}
    result.other_load_cores = max(0.0, (busy - sum(spent.values()) - wrk_cpu) / args.duration)
    result.worker_restarts = sum(
        len(workers_before[label] - set(children(pid))) for label, pid in scenario.trees.items())
    return result


def http_scenarios(stack: Stack, numbers: Numbers, args: argparse.Namespace,
                   redis_client: redis.Redis) -> dict[str, WrkResult]:
    """Every HTTP row of the table, one after the other."""
    post, bare = ROOT / "bench" / "post.lua", ROOT / "bench" / "bare.lua"
    create_url = f"{stack.service_url}/v1/actions/create-callback"
    find_url = f"{stack.service_url}/v1/actions/find-pending-callbacks"
    reference_url = f"{stack.reference_url}/reference"
    service_tree = {"service": stack.service.pid}
    reference_tree = {"service": stack.reference.pid}

    def fresh(kind: str = "create") -> Callable[[], list[str]]:
        return lambda: ["new", str(numbers.path), str(numbers.offset), kind, AUTH]

    # The number the duplicate and find rows hammer: one pending callback, made first.
    pending_number = numbers.take(1)[0]
    made = requests.post(create_url, json=create_body(pending_number), timeout=10,
                         headers={"Authorization": AUTH}).json()
    if made.get("outcome") != "CREATED":
        raise RuntimeError(f"could not create the duplicate row's callback: {made}")

    def fixed(kind: str) -> Callable[[], list[str]]:
        return lambda: ["fixed", pending_number, "0", kind, AUTH]

    conns = args.connections
    scenarios = [
        Scenario("bare (ceiling)", f"{stack.reference_url}/bare", bare, conns, list,
                 reference_tree),
        Scenario("reference path", reference_url, post, conns, fresh(), reference_tree,
                 fresh_numbers=True),
        Scenario("create-callback, new numbers", create_url, post, conns, fresh(),
                 service_tree, fresh_numbers=True, count_genesys=True),
        Scenario("create-callback, DUPLICATE", create_url, post, conns, fixed("create"),
                 service_tree, count_genesys=True),
        Scenario("find-pending-callbacks (FOUND)", find_url, post, conns, fixed("find"),
                 service_tree, count_genesys=True),
        Scenario("reference path", reference_url, post, 1, fresh(), reference_tree,
                 fresh_numbers=True),
        Scenario("create-callback, new numbers", create_url, post, 1, fresh(), service_tree,
                 fresh_numbers=True, count_genesys=True),
    ]
    results: dict[str, WrkResult] = {}
    for scenario in scenarios:
        key = f"{scenario.name} c{scenario.connections}"
        print(f"  {key} ...", file=sys.stderr, flush=True)
        results[key] = measure(scenario, stack, numbers, args, redis_client)
    return results


# -- the same create on a Redis Cluster -------------------------------------------------------

CLUSTER_ROW = "create-callback, new numbers, Redis Cluster (3 primaries)"


@dataclass
class ClusterRun:
    """The create row against a three-primary Redis Cluster, and its round trips."""

    result: WrkResult
    trips: dict[str, roundtrips.Row] | None


def cluster_phase(rig: Rig, stack: Stack, numbers: Numbers,
                  args: argparse.Namespace) -> ClusterRun:
    """Start a three-primary cluster (the test rig's ``start_cluster``), a second service
    under the same gunicorn config with REDIS_URL naming its first node, warm it up as the
    standalone one, and run the create row at the same connection count; then count the
    round trips of the warm path in-process against the same cluster."""
    cluster = start_cluster(rig.work / "cluster")
    nodes = [rig.adopt(f"cluster-{node.port}", node.process, node.directory / "redis.log")
             for node in cluster.nodes if node.process is not None]
    try:
        env = service_env(cluster.url, stack.sim_url, args.log_level)
        port = free_port()
        service = rig.start("service-cluster", gunicorn_argv(
            "middleware.wsgi:app", port, "-c", "python:middleware.gunicorn_conf", "-w",
            str(args.workers)), env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=2).ok, 60,
                   "service on the cluster", service)
        create_url = f"{url}/v1/actions/create-callback"
        on_cluster = Stack(stack.redis_port, stack.redis_proc, stack.sim_url, stack.sim, url,
                           service, stack.reference_url, stack.reference)
        warm_caches(on_cluster, numbers, args.workers, [create_url])
        primaries = [node.client() for node in cluster.nodes]
        scenario = Scenario(CLUSTER_ROW, create_url, ROOT / "bench" / "post.lua",
                            args.connections,
                            lambda: ["new", str(numbers.path), str(numbers.offset), "create",
                                     AUTH],
                            {"service": service.pid}, fresh_numbers=True, count_genesys=True)
        print(f"  {CLUSTER_ROW} c{args.connections} ...", file=sys.stderr, flush=True)
        result = measure(scenario, on_cluster, numbers, args, primaries[0],
                         [(n.pid, c) for n, c in zip(nodes, primaries, strict=True)])
        rig.stop(service)
        trips = None
        if args.round_trips > 0:
            print(f"  round trips on the cluster, {args.round_trips} requests per action",
                  file=sys.stderr, flush=True)
            cluster.flush()
            trips = roundtrips.measure(
                args.round_trips, directory=args.work / "roundtrips-cluster",
                pids=args.work / "pids",
                external=roundtrips.External(cluster.url, True, primaries))
        return ClusterRun(result, trips)
    finally:
        for proc in nodes:
            rig.stop(proc)


# -- the duplicate window with 1k and 1M pending callbacks --------------------------------


class _Deferred:
    """A transaction ``Store`` opens: its commands join the shared batch; execute is later."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def execute(self) -> list[Any]:
        return []


class BatchingClient:
    """Stands in for the Redis client under the product's ``Store``: every command it
    sends is queued on one pipeline, which the caller sends every few thousand commits."""

    def __init__(self, real: redis.Redis) -> None:
        self._real = real
        self.pipe = real.pipeline(transaction=False)

    def register_script(self, text: str) -> Any:
        # Loaded now, sent later by its hash on the batch (``evalsha``).
        self._real.script_load(text)
        return Script(self, text)

    def evalsha(self, sha: str, numkeys: int, *args: Any) -> None:
        self.pipe.execute_command("EVALSHA", sha, numkeys, *args)

    def pipeline(self, transaction: bool = True) -> _Deferred:
        return _Deferred(self.pipe)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@dataclass
class Entry:
    """What one pending callback of the fill is made of."""

    e164: str
    callback_id: str
    agent_id: str
    scheduled_ms: int
    acd_id: str
    token: str
    consent_id: str


def _uuid(rnd: random.Random) -> str:
    h = f"{rnd.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def entries(start: int, count: int, now_ms: int, agents: list[str],
            rnd: random.Random) -> Iterator[Entry]:
    """Pending callbacks for distinct numbers, due within the next 47 hours."""
    for i in range(start, start + count):
        yield Entry(f"+1{2000000000 + i * 7:010d}", _uuid(rnd), agents[i % len(agents)],
                    now_ms + rnd.randrange(5 * 60_000, 47 * 3_600_000), _uuid(rnd),
                    f"{rnd.getrandbits(128):032x}", _uuid(rnd))


def _values(entry: Entry, digest: str, now_ms: int) -> dict[str, str]:
    return {"shard": keys.shard_of(digest), "digest": digest,
            "callback_id": entry.callback_id, "agent_id": entry.agent_id,
            "acd_id": entry.acd_id, "token": entry.token, "consent_id": entry.consent_id,
            "e164": entry.e164, "scheduled_ms": str(entry.scheduled_ms),
            "created_ms": str(now_ms)}


@dataclass
class Template:
    """The commands ``Lifecycle.keep`` sent for one callback, as one RESP format
    string with the callback's values as placeholders: the bulk fill replays the product's
    own script (EVALSHA) without running its Python for every callback."""

    resp_format: str
    lengths: dict[str, int]  # every value must keep the sample's length (RESP $len prefixes)
    skipped: list[str]
    scripts: list[str]  # the scripts its EVALs carried, for SCRIPT LOAD before the replay

    @classmethod
    def record(cls, batch: BatchingClient, commit: Callable[[Entry], None], sample: Entry,
               digest: str, now_ms: int) -> Template:
        """Run the product's commit for ``sample`` into the batch and keep what it sent."""
        batch.pipe.reset()
        commit(sample)
        stack = [[str(a) for a in args] for args, _ in batch.pipe.command_stack]
        batch.pipe.reset()
        values = _values(sample, digest, now_ms)
        whole = ("scheduled_ms", "created_ms")  # numbers: only an argument equal to them
        # The shard's hash tag as it appears in a key once braces are escaped for format().
        tag = "{{s" + keys.shard_of(digest) + "}}"
        evidence = keys.events(digest)
        parts, skipped, scripts = [], [], []
        for sent in stack:
            args = sent
            if args[0].upper() in ("RPUSH", "EXPIRE") and args[1] == evidence:
                skipped.append(args[0].upper())  # the evidence list: measured apart
                continue
            if args[0].upper() == "EVALSHA" and evidence in args:
                # The commit script's evidence event: '' writes none (measured apart).
                args = ["" if a.startswith('{"') else a for a in args]
                skipped.append("the commit's evidence event")
            if args[0].upper() == "EVAL":
                # The same script by its hash: a million copies of its text would only
                # slow the pipe; Redis runs the one it caches either way.
                scripts.append(args[1])
                args = ["EVALSHA", hashlib.sha1(args[1].encode(),
                                                     usedforsecurity=False).hexdigest(), *args[2:]]
            parts.append(f"*{len(args)}\r\n")
            for text in args:
                fmt = text.replace("{", "{{").replace("}", "}}").replace(tag, "{{s{shard}}}")
                for name in whole:
                    if text == values[name]:
                        fmt = f"{{{name}}}"
                if not any(text == values[name] for name in whole):
                    for name, value in values.items():
                        # The shard is one character: only its hash tag, above, names it.
                        if name not in (*whole, "shard") and value and value in text:
                            fmt = fmt.replace(value, f"{{{name}}}")
                parts.append(f"${len(text.encode())}\r\n{fmt}\r\n")
        return cls("".join(parts), {k: len(v) for k, v in values.items()}, skipped, scripts)

    def resp(self, entry: Entry, digest: str, now_ms: int) -> bytes:
        """The RESP bytes of the commands for one more callback."""
        values = _values(entry, digest, now_ms)
        if any(len(v) != self.lengths[k] for k, v in values.items()):
            raise ValueError(f"bulk values must keep the sample's lengths: {values}")
        return self.resp_format.format(**values).encode()


@dataclass
class LookupRow:
    """p50/p99 in microseconds of the window's lookups at one ledger size."""

    pending: int
    duplicate: tuple[float, float]
    claimed: tuple[float, float]
    find: tuple[float, float]
    forks: int  # background saves or rewrites Redis started while they ran (0 expected)


@dataclass
class Ledger:
    """The duplicate window phase's results."""

    rows: list[LookupRow]
    bytes_per_callback_1m: float
    bytes_with_history_sample: float
    history_bytes: float
    usage: dict[str, float]
    fill_seconds: float
    skipped: list[str]
    shape_ok: str


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _settle_aof(client: redis.Redis) -> None:
    """Rewrite the AOF now and wait for it (3 min at most), so no rewrite runs during the
    timings: after a fill the file has grown far past its last rewrite, and Redis' own
    trigger (``auto-aof-rewrite-percentage``) would otherwise fork one at any moment, a
    child copying the whole dataset on the same two cores."""
    info = client.info("persistence")
    if not info.get("aof_rewrite_in_progress"):
        client.bgrewriteaof()
    for _ in range(360):
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.5)


def _forks(client: redis.Redis) -> int:
    return int(client.info("stats").get("total_forks", 0))


def shape_check(real: redis.Redis, product: str, bulk: list[str], agents: list[str],
                expected: int) -> str:
    """Whether the callbacks the fill replayed for the digests ``bulk`` are kept as the
    product kept its own for ``product``: the same record fields, in each number's shard
    (the packed record, the number's window, the shard's walk, the owner's count of that
    shard), read back through the product's store; whether the shards' walks hold
    ``expected`` callbacks in all; and whether keys drawn at random from the whole database
    are all of a kind ``keys.py`` names."""
    store = Store(real)
    walk_score = with_layer("return W_score(KEYS[1], ARGV[1])")
    found: list[tuple[str, dict[str, str]]] = []
    for digest in (product, *bulk):
        shard = keys.shard_of(digest)
        ids = [cid for cid, _ in store.pending_in_window((digest,), 2**48 - 1)]
        if not ids:
            return f"NO: the window of {digest} is empty"
        fields = store.callback(ids[0], shard)
        if not fields:
            return f"NO: the record of {ids[0]} is missing"
        record = LedgerRecord.from_fields(fields, ids[0])
        if record.digests != (digest,):
            return f"NO: {ids[0]} names digests {record.digests}, not {digest}"
        if real.eval(walk_score, 1, keys.pending_all(shard), ids[0]) is None:
            return f"NO: {ids[0]} is not in {keys.pending_all(shard)}"
        if record.agent_id not in agents or not int(
                real.hget(keys.owner_counts(shard), record.agent_id) or 0):
            return f"NO: {ids[0]}'s owner has no count in shard {shard}"
        found.append((ids[0], {k: v for k, v in fields.items() if k != "id"}))
    for cid, fields in found[1:]:
        if set(found[0][1]) != set(fields):
            return f"NO: {cid} fields {sorted(set(found[0][1]) ^ set(fields))}"
    held = sum(int(real.zcard(keys.pending_all(shard))) for shard in keys.SHARDS)
    if held != expected:
        return f"NO: the shards' pending sets hold {held} callbacks, not {expected}"
    drawn = [str(real.randomkey()) for _ in range(1000)]
    strays = sorted({k for k in drawn if kind_of(k) == "other"})
    if strays:
        return f"NO: keys of no kind keys.py names, e.g. {strays[:3]}"
    return "yes"


def ledger_phase(redis_port: int, args: argparse.Namespace) -> Ledger:
    """Fill the ledger with the product's Store code, time the window's lookups at 1k and at
    the full size, and measure Redis bytes per pending callback."""
    url = f"redis://127.0.0.1:{redis_port}/0"
    env = service_env(url, "http://127.0.0.1:9", "WARNING")
    config = Config.from_env(env)
    # The store's own client, as ``connect`` sets it up (standalone here).
    real = cast(redis.Redis, connect(url, 60.0).client())
    real.flushall()
    time.sleep(0.2)
    batch = BatchingClient(real)
    filler = build_services(config, redis_client=cast(redis.Redis, batch), http=new_session(),
                            clock=SystemClock())
    live = build_services(config, redis_client=connect(url, 5.0), http=new_session(),
                          clock=SystemClock())
    digest = NumberKeys(config.pii_keys).current  # the key names Store derives from a number

    rnd = random.Random(20261122)
    now_ms = int(time.time() * 1000)
    agents = [_uuid(rnd) for _ in range(1000)]

    def number(e164: str) -> CustomerNumber:
        return CustomerNumber(e164, "US", ("America/New_York",))

    def commit(entry: Entry) -> None:
        filler.lifecycle.keep(number(entry.e164), entry.token, LedgerRecord(
            callback_id=entry.callback_id, number_key="", scheduled_ms=entry.scheduled_ms,
            agent_id=entry.agent_id, queue_id=DEMO_QUEUE, state="PENDING",
            acd_id=entry.acd_id, request_token=entry.token, created_ms=now_ms,
            consent_id=entry.consent_id, e164=entry.e164))

    def lookups(filled: int) -> LookupRow:
        _settle_aof(real)
        forks = _forks(real)
        pick = random.Random(filled)
        with_pending = [f"+1{2000000000 + pick.randrange(filled) * 7:010d}"
                        for _ in range(args.lookups)]
        without = [f"+1{9000000000 + i * 13 + filled:010d}" for i in range(args.lookups)]
        deadline_s = 5.0
        times: dict[str, list[float]] = {"duplicate": [], "claimed": [], "find": []}
        warm = [f"+1{8000000000 + i * 13 + filled:010d}" for i in range(200)]
        for e164 in with_pending[:200] + warm:  # warm the client and the scripts
            live.lifecycle.claim(number(e164), uuid.uuid4().hex, Deadline(deadline_s))
        for e164 in with_pending:
            t = time.perf_counter()
            claim = live.lifecycle.claim(number(e164), uuid.uuid4().hex, Deadline(deadline_s))
            times["duplicate"].append((time.perf_counter() - t) * 1e6)
            if claim.existing is None:
                raise RuntimeError(f"{e164} has a pending callback but claim found none")
        for e164 in without:
            t = time.perf_counter()
            claim = live.lifecycle.claim(number(e164), uuid.uuid4().hex, Deadline(deadline_s))
            times["claimed"].append((time.perf_counter() - t) * 1e6)
            if not claim.claimed:
                raise RuntimeError(f"claim of a fresh number did not claim it: {claim}")
        for e164 in with_pending:
            t = time.perf_counter()
            found = live.lifecycle.pending(number(e164))
            times["find"].append((time.perf_counter() - t) * 1e6)
            if not found:
                raise RuntimeError(f"pending() found nothing for {e164}")
        # Every shard's claims: braces are plain characters to SCAN, "{s?}" is any shard.
        for key in real.scan_iter(match=keys.claim("?*"), count=5000):
            real.delete(key)
        return LookupRow(filled, _percentiles(times["duplicate"]),
                         _percentiles(times["claimed"]), _percentiles(times["find"]),
                         _forks(real) - forks)

    started = time.monotonic()
    memory_0 = int(real.info("memory")["used_memory"])
    first = min(1000, args.ledger)
    sample = next(entries(0, 1, now_ms, agents, random.Random(1)))
    stream = entries(0, first, now_ms, agents, rnd)
    for entry in stream:
        commit(entry)
    batch.pipe.execute()
    memory_1k = int(real.info("memory")["used_memory"])
    rows = [lookups(first)]

    # The evidence lists of the first 1k (the bulk fill does not write them).
    history_keys = [keys.events(digest(f"+1{2000000000 + i * 7:010d}")) for i in range(first)]
    history_usage = [int(real.memory_usage(k, samples=0) or 0) for k in history_keys[:200]]

    # The bulk: the same commands Store sent for a callback, replayed through redis-cli --pipe.
    template = Template.record(batch, commit, sample, digest(sample.e164), now_ms)
    # The fill is set-up, not measured: one fsync a second instead of one per write batch
    # (hundreds of thousands of them); the lookups below run with "always" again.
    real.config_set("appendfsync", "everysec")
    for script in template.scripts:
        real.script_load(script)
    pipe = subprocess.Popen(["redis-cli", "-p", str(redis_port), "--pipe"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    stdin, stdout = pipe.stdin, pipe.stdout
    if stdin is None or stdout is None:
        raise RuntimeError("redis-cli --pipe has no stdin/stdout")
    chunk: list[bytes] = []
    for entry in entries(first, args.ledger - first, now_ms, agents, rnd):
        chunk.append(template.resp(entry, digest(entry.e164), now_ms))
        if len(chunk) == 5000:
            stdin.write(b"".join(chunk))
            chunk = []
    stdin.write(b"".join(chunk))
    stdin.close()
    out = stdout.read().decode()
    pipe.wait(600)
    if "errors: 0," not in out:
        raise RuntimeError(f"bulk fill failed: {out[-1000:]}")
    real.config_set("appendfsync", "always")
    fill_seconds = time.monotonic() - started
    _settle_aof(real)
    memory_full = int(real.info("memory")["used_memory"])
    rows.append(lookups(args.ledger))

    # Same shape as Store wrote it? Compare a bulk record with a product-written one.
    # The last 32 bulk callbacks: numbers of most shards, far from the template's.
    shape_ok = shape_check(real, digest(f"+1{2000000000:010d}"), [
        digest(f"+1{2000000000 + i * 7:010d}")
        for i in range(max(first, args.ledger - 32), args.ledger)], agents, args.ledger)

    # MEMORY USAGE (with Redis' dictionary entries, as tests/memory.py counts them) of the
    # shards' record hashes, window hashes, walks and owner counts: each callback's share.
    def weighed(key: str) -> int:
        return key_bytes(real, key, int(real.ttl(key)))

    def share(name: Callable[[str], str]) -> float:
        return sum(weighed(name(s)) for s in keys.SHARDS) / args.ledger

    usage = {
        "share of the shards' records": share(keys.records),
        "share of the shards' windows": share(keys.windows),
        "share of the shards' pending sets": share(keys.pending_all),
        "share of the shards' owner counts": share(keys.owner_counts),
    }
    usage["total"] = sum(usage.values())

    # The history of the first 1k, deleted: what it weighed.
    before = int(real.info("memory")["used_memory"])
    real.delete(*history_keys)
    history_freed = (before - int(real.info("memory")["used_memory"])) / first
    return Ledger(
        rows=rows,
        bytes_per_callback_1m=(memory_full - memory_1k) / max(args.ledger - first, 1),
        bytes_with_history_sample=(memory_1k - memory_0) / first,
        history_bytes=history_freed if history_freed > 0 else statistics.mean(history_usage),
        usage=usage, fill_seconds=fill_seconds, skipped=template.skipped, shape_ok=shape_ok)


# -- what a callback keeps past the window ---------------------------------------------------

#: Bytes a callback may keep in Redis once past the window (evidence and consent).
KEPT_TARGET = 1536


def kept_phase(args: argparse.Namespace) -> memory.Report:
    """``tests/memory.py``'s workload and measure (creates, consents, cancels, a reschedule,
    revocations, worker rounds, then every ledger TTL passed) on its own redis-server and
    in-process simulator, as ``python -m tests.memory`` runs it."""
    clock = FixedClock(T0)
    simulator, server = _serve_sim(clock)
    redis_server = start_redis(args.work / "memory")
    with (args.work / "pids").open("a") as pids:
        pids.write(f"{redis_server.process.pid}\n")
    try:
        simulator.control("PUT", "ratelimit", {"perMinute": 100_000})
        the_rig = memory.build_rig(redis_server.url, simulator.url, clock, simulator.control)
        return memory.measure(the_rig, args.kept_numbers)
    finally:
        server.shutdown()
        server.server_close()
        redis_server.process.terminate()
        redis_server.process.wait(10)


# -- the report ------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_revision() -> str:
    """HEAD and whether the work tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "middleware", "schemas"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return head + (" + uncommitted changes in middleware/ or schemas/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _met(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _answers(result: WrkResult) -> str:
    names = ("created", "deferred", "duplicate", "found", "none", "rejected", "other", "non200",
             "wrapped")
    labels = {"deferred": "of which ASAP_DEFERRED", "non200": "non-200",
              "wrapped": "numbers reused"}
    parts = [f"{labels.get(n, n)} {result.counts[n]}" for n in names if result.counts.get(n)]
    if result.socket_errors and result.socket_errors != "connect 0, read 0, write 0, timeout 0":
        parts.append(f"socket errors: {result.socket_errors}")
    return ", ".join(parts) or "-"


def cluster_section(standalone: WrkResult, cluster: WrkResult,
                    trips: dict[str, roundtrips.Row] | None,
                    cluster_trips: dict[str, roundtrips.Row] | None,
                    connections: int) -> list[str]:
    """The create row on one primary and on the cluster, side by side."""
    lines = [
        "### create-callback: one primary and a three-primary Redis Cluster",
        "",
        "Same simulator, same gunicorn config and workers, fresh numbers; the cluster's "
        "service has REDIS_URL naming one node (`tests/redisservers.py` `start_cluster`: "
        "three durable primaries on loopback, no replicas). Round trips are counted "
        "in-process (`bench/roundtrips.py`) against the same Redis.",
        "",
        "| Redis | conn | req/s | p50 ms | p99 ms | Redis round trips per warm create "
        "(mean, max) | commands sent/create | commands run in Redis/create (HTTP row) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r, rows in (("one primary", standalone, trips),
                          ("Redis Cluster, 3 primaries", cluster, cluster_trips)):
        mean, most, sent, _ = _trips(rows)
        made = max(r.genesys_routes.get(CREATE_ROUTE, 0), 1)
        run = sum(r.redis_commands.values()) / made
        counted = f"{mean:.2f} ({most})" if rows is not None else "not measured"
        sent_text = f"{sent:.1f}" if rows is not None else ""
        lines.append(f"| {name} | {connections} | {r.rps:.0f} | {r.p50_ms:.2f} | "
                     f"{r.p99_ms:.2f} | {counted} | {sent_text} | {run:.1f} |")
    return lines


#: Single-connection create latency, as a multiple of the reference path's (same run, c1).
P50_RATIO_TARGET, P99_RATIO_TARGET = 1.3, 2.0


def _trips(rows: dict[str, roundtrips.Row] | None) -> tuple[float, int, float, float]:
    """A warm create's round trips (mean, max), commands sent and commands run in Redis."""
    if rows is None:
        return 0.0, 0, 0.0, 0.0
    create = rows["create-callback CREATED"]
    warm = create.round_trips or [0]
    return sum(warm) / len(warm), max(warm), create.per(create.sent), create.per(create.run)


def report(results: dict[str, WrkResult], ledger: Ledger | None,
           trips: dict[str, roundtrips.Row] | None, args: argparse.Namespace,
           started: datetime, elapsed_s: float, on_cluster: ClusterRun | None = None,
           kept: memory.Report | None = None) -> str:
    """The Markdown report."""
    ceiling = results["bare (ceiling) c" + str(args.connections)]
    reference = results[f"reference path c{args.connections}"]
    reference_c1 = results["reference path c1"]
    create = results[f"create-callback, new numbers c{args.connections}"]
    create_c1 = results["create-callback, new numbers c1"]
    p50_ratio = create_c1.p50_ms / max(reference_c1.p50_ms, 1e-9)
    p99_ratio = create_c1.p99_ms / max(reference_c1.p99_ms, 1e-9)
    rows = dict(results)
    if on_cluster is not None:
        # Printed right under the standalone row it is compared with.
        rows = {}
        for key, r in results.items():
            rows[key] = r
            if key == f"create-callback, new numbers c{args.connections}":
                rows[f"{CLUSTER_ROW} c{args.connections}"] = on_cluster.result
    created = max(create.counts.get("created", 0), 1)
    # Per Genesys create made (requests still in flight when wrk stops made theirs too).
    creates_made = max(create.genesys_routes.get(CREATE_ROUTE, 0), 1)
    calls_per_create = create.genesys_calls / creates_made
    lines = [
        "# bench/run",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M:%S UTC')} (run took {elapsed_s:.0f} s)",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{cpu_model()}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; product revision {git_revision()}",
        f"- service and reference app: `gunicorn -c python:middleware.gunicorn_conf -w "
        f"{args.workers}` (shipped config: gthread, 4 threads/worker, keep-alive); simulator: "
        "`gunicorn -w 1 -k gthread --threads 8 middleware.sim.wsgi:app`; redis-server with "
        "AOF appendfsync always, noeviction; all on 127.0.0.1, zero added latency",
        f"- **Genesys rate limits raised for the run**: SIM_RATE_LIMIT_PER_MIN={RATE_LIMIT} "
        f"(simulator) and GENESYS_RATE_LIMIT_PER_MIN={RATE_LIMIT} (the service's own call "
        "budget); the defaults (300/min) would cap a create at 5/s",
        f"- service LOG_LEVEL={args.log_level} (one JSON line per request to a file, as shipped)",
        f"- wrk: {args.warmup:g} s warm-up then {args.duration:g} s measured per row; "
        f"c{args.connections} = -t{WRK_THREADS} -c{args.connections}, c1 = -t1 -c1; wrk, the "
        "simulator and Redis share the same cores as the app under test",
        "",
        "## HTTP",
        "",
        "CPU ms/req is the app's gunicorn tree (master + workers, recycled workers included) "
        "per request; the simulator's is shown apart because it shares the cores. "
        "\"Other load\" is CPU used on the machine by processes outside this run, in cores.",
        "",
        "| scenario | conn | req/s | p50 ms | p99 ms | ratio to ceiling | app CPU ms/req "
        "| sim CPU ms/req | Genesys calls/req | Redis cmds/req | other load | answers | target "
        "| met? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        target, met = "", ""
        if key == f"create-callback, new numbers c{args.connections}":
            ratio = r.rps / reference.rps
            target, met = f"≥ 80% of reference path ({ratio:.0%})", _met(ratio >= 0.8)
        elif key == "create-callback, new numbers c1":
            target = (f"p50 ≤ {P50_RATIO_TARGET}x, p99 ≤ {P99_RATIO_TARGET:.0f}x reference "
                      f"path c1 ({p50_ratio:.2f}x, {p99_ratio:.2f}x)")
            met = _met(p50_ratio <= P50_RATIO_TARGET and p99_ratio <= P99_RATIO_TARGET)
        calls = f"{r.genesys_calls / max(r.requests, 1):.2f}" if r.genesys_counted else ""
        restarts = f" (workers recycled: {r.worker_restarts})" if r.worker_restarts else ""
        commands = sum(r.redis_commands.values()) / max(r.requests, 1)
        lines.append(
            f"| {r.name}{restarts} | {r.connections} | {r.rps:.0f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.rps / ceiling.rps:.1%} | {r.cpu_ms.get('service', 0):.2f} | "
            f"{r.cpu_ms.get('sim', 0):.2f} | {calls} | {commands:.1f} | "
            f"{r.other_load_cores:.2f} | {_answers(r)} | {target} | {met} |")
    if on_cluster is not None:
        lines += ["", *cluster_section(create, on_cluster.result, trips, on_cluster.trips,
                                       args.connections)]
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | met? |",
        "|---|---|---|",
        f"| create-callback ≥ 80% of the reference path's req/s (same run, "
        f"c{args.connections}) | {create.rps:.0f} / {reference.rps:.0f} = "
        f"{create.rps / reference.rps:.0%} | {_met(create.rps >= 0.8 * reference.rps)} |",
        f"| create-callback single connection p50 ≤ {P50_RATIO_TARGET}x the reference "
        f"path's (same run, c1) | {create_c1.p50_ms:.2f} / {reference_c1.p50_ms:.2f} ms = "
        f"{p50_ratio:.2f}x | {_met(p50_ratio <= P50_RATIO_TARGET)} |",
        f"| create-callback single connection p99 ≤ {P99_RATIO_TARGET:.0f}x the reference "
        f"path's (same run, c1) | {create_c1.p99_ms:.2f} / {reference_c1.p99_ms:.2f} ms = "
        f"{p99_ratio:.2f}x | {_met(p99_ratio <= P99_RATIO_TARGET)} |",
        f"| Genesys calls per create (warm) = 1 | {calls_per_create:.3f} "
        f"({create.genesys_calls} calls / {creates_made} Genesys creates, "
        f"c{args.connections} row) | {_met(abs(calls_per_create - 1) < 0.0005)} |",
    ]
    if trips is not None:
        mean, most, sent, run = _trips(trips)
        lines.append(
            f"| Redis round trips per warm create ≤ {roundtrips.CREATE_TARGET} (standalone) | "
            f"{mean:.2f} (max {most}, over {trips['create-callback CREATED'].requests} "
            f"creates, in-process); commands per create: {sent:.1f} sent, {run:.1f} run in "
            f"Redis (inside scripts included) | {_met(most <= roundtrips.CREATE_TARGET)} |")
    if kept is not None:
        lines.append(
            f"| ≤ {KEPT_TARGET / 1024:.1f} KB of Redis kept per callback past the window "
            f"(evidence, consent records and state) | {kept.per_kept:.0f} B "
            f"(`tests/memory.py` workload, {args.kept_numbers} numbers, "
            f"{kept.created} callbacks) | {_met(kept.per_kept <= KEPT_TARGET)} |")
    routes = "; ".join(f"{route} {n}" for route, n in sorted(
        create.genesys_routes.items(), key=lambda item: -item[1]))
    if ledger is not None:
        small, big = ledger.rows[0], ledger.rows[-1]
        drift = big.duplicate[0] / small.duplicate[0] - 1
        lines += [
            # The cost must not grow with the ledger; one faster at the full size is noise
            # of the machine (the small size is timed first), not a cost.
            f"| duplicate lookup p50 with {big.pending:,} pending at most 20% above "
            f"{small.pending:,} | {small.duplicate[0]:.0f} µs → {big.duplicate[0]:.0f} µs "
            f"({drift:+.0%}) | {_met(drift <= 0.2)} |",
            f"| ≤ 512 bytes of Redis per pending callback at {big.pending:,}, all its "
            f"indexes included | {ledger.bytes_per_callback_1m:.0f} B (INFO used_memory "
            f"delta / callback; MEMORY USAGE, each callback's share of the shards' records, "
            f"windows, walks and owner counts: {ledger.usage['total']:.0f} B) | "
            f"{_met(ledger.bytes_per_callback_1m <= 512)} |",
            "",
            "## Duplicate window lookups (product code: `Lifecycle.claim` and "
            "`Lifecycle.pending`)",
            "",
            f"p50 / p99 in µs over {args.lookups} calls each, one client, random numbers of "
            "the ledger; every callback due within 47 h, 1,000 owners.",
            "",
            "| pending callbacks | duplicate found (claim → DUPLICATE, record read) | "
            "no pending callback (claim → CLAIMED) | find-pending (pending → records) |",
            "|---|---|---|---|",
        ]
        for row in ledger.rows:
            lines.append(f"| {row.pending:,} | {row.duplicate[0]:.0f} / {row.duplicate[1]:.0f} "
                         f"| {row.claimed[0]:.0f} / {row.claimed[1]:.0f} | "
                         f"{row.find[0]:.0f} / {row.find[1]:.0f} |")
        usage = " + ".join(f"{k} {v:.0f}" for k, v in ledger.usage.items() if k != "total")
        forks = ", ".join(f"{row.forks} at {row.pending:,}" for row in ledger.rows)
        lines += [
            "",
            "Each size's AOF is rewritten first and the timings wait for it; background "
            f"rewrites or saves Redis started during the timings: {forks}.",
            "",
            "## Redis bytes per pending callback",
            "",
            "| measure | bytes |",
            "|---|---|",
            f"| ledger + indexes (the packed record, the number's window, its entry in "
            f"the shard's walk, the owner's count): INFO used_memory delta / callback, "
            f"{ledger.rows[-1].pending - 1000:,} callbacks | "
            f"{ledger.bytes_per_callback_1m:.0f} |",
            f"| MEMORY USAGE (dictionary entries included) of the shards' keys the "
            f"ledger is kept in, per callback: {usage} | {ledger.usage['total']:.0f} |",
            f"| the number's evidence list (one event; `Store.commit_callback` writes it too, "
            f"kept CONSENT_RETENTION_DAYS) | {ledger.history_bytes:.0f} |",
            f"| everything `Lifecycle.keep` writes, first 1,000 callbacks (small "
            f"indexes) | {ledger.bytes_with_history_sample:.0f} |",
            f"| everything a real create-callback left in Redis (consent record and state, "
            f"evidence, ledger, indexes, expiring claims), c{args.connections} row: "
            f"used_memory delta / created | "
            f"{create.counts.get('redis_bytes', 0) / created:.0f} |",
            "",
            f"Fill: the first 1,000 callbacks through `Lifecycle.keep` (the product's "
            f"code), the rest by replaying the exact commands it sent for one callback "
            f"(its commit script, sent as EVALSHA of the same script) through "
            f"`redis-cli --pipe`, each in its number's shard, without the evidence list's "
            f"commands ({', '.join(ledger.skipped) or 'none'}); {ledger.fill_seconds:.0f} s. "
            f"Bulk records shaped like the product's: {ledger.shape_ok}.",
        ]
    if kept is not None:
        lines += [
            "",
            f"## Redis bytes kept per callback past the window (`tests/memory.py`, "
            f"{args.kept_numbers} numbers)",
            "",
            f"The workload of `python -m tests.memory` in-process: {kept.created} callbacks "
            f"created, a quarter on a consent recorded first, some cancelled, one "
            f"rescheduled, some numbers revoked, worker rounds; then 10 days on the "
            f"product's clock (every ledger TTL passed) and the worker again. Per pending "
            f"callback before that: {kept.per_pending:.0f} B ("
            + ", ".join(f"{k} {v:.0f}" for k, v in kept.pending_bytes.items()) + ").",
            "",
            "| kind | bytes/callback |",
            "|---|---|",
            *(f"| {name} | {value:.0f} |" for name, value in kept.kept_bytes.items()),
            f"| **total** | **{kept.per_kept:.0f}** |",
        ]
    per_create = ", ".join(f"{name} {n / creates_made:.1f}" for name, n in sorted(
        create.redis_commands.items(), key=lambda item: -item[1]))
    per_reference = ", ".join(f"{name} {n / max(reference.requests, 1):.1f}" for name, n in sorted(
        reference.redis_commands.items(), key=lambda item: -item[1]))
    lines += ["", f"Genesys calls during the create-callback c{args.connections} row, by "
              f"route: {routes or 'none'}.", "",
              f"Redis commands per create (c{args.connections} row, commands inside scripts "
              f"included; multi/exec = transactions): {per_create}.", "",
              f"Redis commands per reference-path request: {per_reference}."]
    if trips is not None:
        lines += ["", roundtrips.section(trips).rstrip("\n")]
    if on_cluster is not None and on_cluster.trips is not None:
        lines += ["", "### The same, against the three-primary Redis Cluster", "",
                  roundtrips.table(on_cluster.trips, with_target=False).rstrip("\n")]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Parse the options, run everything, print and keep the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch directory")
    parser.add_argument("--duration", type=float, default=8, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per row")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY (Procfile: 2)")
    parser.add_argument("--ledger", type=int, default=1_000_000,
                        help="pending callbacks for the big lookup row")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--numbers", type=int, default=40_000,
                        help="fresh numbers generated for the create rows")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--no-ledger", action="store_true", help="skip the 1k/1M lookups")
    parser.add_argument("--round-trips", type=int, default=200,
                        help="fresh numbers per action for the round-trip counts (0: skip)")
    parser.add_argument("--no-cluster", action="store_true",
                        help="skip the create row on a three-primary Redis Cluster")
    parser.add_argument("--kept-numbers", type=int, default=400,
                        help="numbers of tests/memory.py's workload for the bytes a callback "
                        "keeps past the window (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "last-run.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (bench/run installs it with apt-get)")

    started, t0 = datetime.now(UTC), time.monotonic()
    rig = Rig(args.work)
    try:
        print("bench: starting redis-server, simulator, service, reference app",
              file=sys.stderr, flush=True)
        stack = start_stack(rig, args)
        numbers = Numbers(args.work / "numbers.txt", args.numbers)
        redis_client = redis.Redis(port=stack.redis_port, socket_timeout=30)
        warm_caches(stack, numbers, args.workers)
        print("bench: HTTP rows", file=sys.stderr, flush=True)
        results = http_scenarios(stack, numbers, args, redis_client)
        rig.stop(stack.reference)
        rig.stop(stack.service)
        on_cluster = None
        if not args.no_cluster:
            print("bench: create-callback on a three-primary Redis Cluster", file=sys.stderr,
                  flush=True)
            on_cluster = cluster_phase(rig, stack, numbers, args)
        rig.stop(stack.sim)
        trips = None
        if args.round_trips > 0:
            print(f"bench: Redis round trips, {args.round_trips} requests per action",
                  file=sys.stderr, flush=True)
            trips = roundtrips.measure(args.round_trips, directory=args.work / "roundtrips",
                                       pids=args.work / "pids")
        ledger = None
        if not args.no_ledger:
            print(f"bench: duplicate window with 1,000 and {args.ledger:,} pending callbacks",
                  file=sys.stderr, flush=True)
            ledger = ledger_phase(stack.redis_port, args)
        kept = None
        if args.kept_numbers > 0:
            print(f"bench: bytes kept past the window (tests/memory.py, {args.kept_numbers} "
                  "numbers)", file=sys.stderr, flush=True)
            kept = kept_phase(args)
    finally:
        rig.stop_all()
    text = report(results, ledger, trips, args, started, time.monotonic() - t0,
                  on_cluster, kept)
    print(text)
    args.out.write_text(text)
    shown = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"bench: report written to {shown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
