"""Faults, Jepsen-style: a bounded workload through real gunicorn while a nemesis breaks
Genesys, Redis and the service's own workers; then a checker reads the simulator.

Nemesis, one phase each: Genesys 5xx bursts, Genesys slower than the read timeout (through
a TCP fault proxy), Genesys 429 bursts, a lost Redis reply to the claim, ``kill -9`` of a
gunicorn worker mid-load, ``kill -9`` of Redis mid-load (restarted from its AOF).

Checker, after the worker has drained the outbox:
* every CREATED answer names a callback the simulator holds, scheduled;
* every QUEUED answer's number ends with exactly one scheduled callback;
* every DUPLICATE answer that names a callback names one of its number's callbacks;
* a number that only ever got refusals has no callback;
* no number has two scheduled callbacks (all requests fall inside one window);
* every answer arrived within the deadline (plus scheduling slack).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from middleware.store import _CLAIM_WINDOW
from tests.conftest import (
    AUTH,
    ROOT,
    Gunicorn,
    RedisServer,
    Simulator,
    create_body,
    free_port,
    outbox_schedule,
    service_env,
    start_gunicorn,
    start_redis,
    wait_for,
)
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.gunicorn

DEADLINE_S = 2.0
SLACK_S = 1.0
PHASES = 8
PER_PHASE = 16
#: Fresh numbers each phase, so every fault meets first requests and not only duplicates.
NUMBERS = [f"+1212555{3100 + i:04d}" for i in range(PHASES * 4)]


@dataclass
class Op:
    """One request of the history: what was asked, what came back, how long it took."""

    phase: str
    number: str
    elapsed: float
    status: int | None
    outcome: str = ""
    callback_id: str = ""


@dataclass
class Rig:
    """Everything the nemesis can break."""

    redis: RedisServer
    redis_proxy: FaultProxy
    genesys_proxy: FaultProxy
    service: Gunicorn
    sim: Simulator
    tmp: Path


@pytest.fixture
def rig(tmp_path: Path, live_sim: Simulator) -> Iterator[Rig]:
    """Redis, the service under gunicorn behind fault proxies, and the worker process."""
    redis = start_redis(tmp_path / "redis")
    redis_proxy = FaultProxy(redis.port).start()
    genesys_proxy = FaultProxy(int(live_sim.url.rsplit(":", 1)[1])).start()
    proxied = f"http://127.0.0.1:{genesys_proxy.port}"
    service = start_gunicorn(service_env(
        f"redis://127.0.0.1:{redis_proxy.port}/0", proxied,
        REQUEST_DEADLINE_MS=str(int(DEADLINE_S * 1000)), GENESYS_READ_TIMEOUT_MS="800",
        GENESYS_CONNECT_TIMEOUT_MS="400", REDIS_TIMEOUT_MS="300", CACHE_TTL_SECONDS="600",
    ), tmp_path / "gunicorn.log")
    worker_env = service_env(redis.url, live_sim.url, OUTBOX_INTERVAL_SECONDS="1",
                             OUTBOX_BACKOFF_BASE_MS="200", OUTBOX_BACKOFF_CAP_MS="1000",
                             GENESYS_READ_TIMEOUT_MS="800", RECONCILE_INTERVAL_SECONDS="3600",
                             WORKER_METRICS_PORT=str(free_port()))
    with (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "middleware", "worker"], cwd=ROOT,
                                  env={**os.environ, **worker_env}, stdout=out,
                                  stderr=subprocess.STDOUT)
    rig = Rig(redis, redis_proxy, genesys_proxy, service, live_sim, tmp_path)
    yield rig
    for process in (service.process, worker):
        process.terminate()
        process.wait(20)
    redis_proxy.close()
    genesys_proxy.close()
    rig.redis.process.terminate()
    rig.redis.process.wait(10)


def send(rig: Rig, phase: str, number: str) -> Op:
    started = time.monotonic()
    try:
        resp = requests.post(
            f"{rig.service.url}/v1/actions/create-callback", timeout=10,
            json=create_body(customerNumber=number, requestedTime=None),
            headers={**AUTH, "Idempotency-Key": os.urandom(8).hex()})
    except requests.RequestException:
        return Op(phase, number, time.monotonic() - started, None)
    elapsed = time.monotonic() - started
    if resp.status_code != 200:
        return Op(phase, number, elapsed, resp.status_code)
    body = resp.json()
    return Op(phase, number, elapsed, 200, body["outcome"],
              body["callbackId"] or body["existingCallbackId"])


def run_phase(rig: Rig, index: int, phase: str, rng: random.Random,
              during: Callable[[], None] | None = None) -> list[Op]:
    """Send the phase's requests spread over about a second; ``during`` strikes mid-way."""
    pool_numbers = NUMBERS[index * 4:(index + 1) * 4]
    numbers = [rng.choice(pool_numbers) for _ in range(PER_PHASE)]

    def paced(i: int, number: str) -> Op:
        time.sleep(i * 0.06)
        return send(rig, phase, number)

    with ThreadPoolExecutor(PER_PHASE) as pool:
        futures = [pool.submit(paced, i, n) for i, n in enumerate(numbers)]
        if during is not None:
            time.sleep(0.3)
            during()
        return [f.result() for f in futures]



def gunicorn_workers(master: int) -> list[int]:
    """Child pids of the gunicorn master, read from /proc (no ps needed)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            children.append(int(stat.parent.name))
    return children


def test_accepted_requests_survive_faults(rig: Rig) -> None:
    """Every accepted request ends as exactly one callback, refusals leave none, no number
    gets two, and every answer comes within the deadline, whatever the nemesis does."""
    rng = random.Random(7)  # noqa: S311 (a reproducible workload, not security)
    sim, history = rig.sim, []
    history += run_phase(rig, 0, "steady", rng)

    sim.control("PUT", "faults", {"status": 503, "count": 6, "method": "POST",
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    history += run_phase(rig, 1, "genesys-5xx", rng)
    sim.control("DELETE", "faults")

    rig.genesys_proxy.delay_s = 0.6
    history += run_phase(rig, 2, "genesys-slow", rng)
    rig.genesys_proxy.delay_s = 0.0

    sim.control("PUT", "faults", {"status": 429, "retryAfter": 1, "count": 6,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    history += run_phase(rig, 3, "genesys-429", rng)
    sim.control("DELETE", "faults")

    rig.redis_proxy.drop_reply_to(hashlib.sha1(_CLAIM_WINDOW.encode()).hexdigest().encode())  # noqa: S324
    history += run_phase(rig, 4, "redis-lost-reply", rng)

    def kill_a_worker() -> None:
        pids = gunicorn_workers(rig.service.process.pid)
        assert pids, "no gunicorn worker to kill"
        os.kill(pids[0], signal.SIGKILL)

    history += run_phase(rig, 5, "kill-gunicorn-worker", rng, kill_a_worker)
    wait_for(lambda: len(gunicorn_workers(rig.service.process.pid)) == 2, 15,
             "gunicorn worker respawn")

    def kill_redis() -> None:
        port, directory = rig.redis.port, rig.redis.directory
        rig.redis.process.kill()
        rig.redis.process.wait(10)
        time.sleep(0.5)
        rig.redis = start_redis(directory, port=port)

    killer = threading.Thread(target=kill_redis)
    history += run_phase(rig, 6, "kill-redis", rng, killer.start)
    killer.join()
    history += run_phase(rig, 7, "after", rng)

    # Let the worker drain the outbox and resolve anything a killed process left journaled.
    client = rig.redis.client()

    def drained() -> bool:
        open_states = [client.hget(k, "st") for k in client.scan_iter("cbm:{s*}:cb:queued-*")]
        return not outbox_schedule(client) and not [
            s for s in open_states if s in ("QUEUED", "CREATING")]

    wait_for(drained, 60, "outbox drained")
    check(history, sim)


def check(history: list[Op], sim: Simulator) -> None:
    held: dict[str, list[str]] = defaultdict(list)
    for callback in sim.callbacks():
        if callback["state"] == "scheduled":
            held[callback["callbackNumbers"][0]].append(callback["conversationId"])
    late = [op for op in history if op.elapsed > DEADLINE_S + SLACK_S]
    assert not late, f"answers past the deadline: {late[:3]}"
    for number, ids in held.items():
        assert len(ids) == 1, f"{number[-4:]} has {len(ids)} scheduled callbacks"
    accepted = defaultdict(list)
    for op in history:
        if op.outcome == "CREATED":
            assert op.callback_id in held[op.number], f"CREATED {op} has no callback"
        if op.outcome in ("CREATED", "QUEUED"):
            accepted[op.number].append(op)
        if op.outcome == "QUEUED":
            assert len(held[op.number]) == 1, f"QUEUED {op} did not become one callback"
        if op.outcome == "DUPLICATE" and op.callback_id:
            assert op.callback_id in held[op.number], f"DUPLICATE {op} names a stranger"
    for number in NUMBERS:
        ops = [op for op in history if op.number == number]
        if ops and all(op.status is not None and op.outcome in ("", "REJECTED")
                       for op in ops):
            assert not held[number], f"{number[-4:]} was only refused but has a callback"
    phases = {op.phase for op in history}
    assert {"kill-redis", "kill-gunicorn-worker", "genesys-slow"} <= phases
    statuses = {op.status for op in history}
    assert 200 in statuses


def _in_process(redis_url: str, genesys_url: str) -> Any:
    import falcon.testing

    from middleware.app import create_app
    from middleware.clock import FixedClock
    from middleware.config import Config
    from middleware.genesys.client import new_session
    from middleware.store import connect
    from tests.conftest import T0
    config = Config.from_env(service_env(redis_url, genesys_url, REQUEST_DEADLINE_MS="2000",
                                         REDIS_TIMEOUT_MS="300"))
    return falcon.testing.TestClient(create_app(
        config, redis_client=connect(redis_url, config.redis_timeout_s), http=new_session(),
        clock=FixedClock(T0)))


def test_blackholed_genesys_is_queued_within_the_deadline(redis_client: Any,
                                                          redis_server: RedisServer,
                                                          sim: Simulator) -> None:
    """Genesys accepts connections but never answers at the create: the checks' reads were
    answered (cached from a first request by the same app), so the create is QUEUED in time."""
    proxy = FaultProxy(int(sim.url.rsplit(":", 1)[1])).start()
    try:
        client = _in_process(redis_server.url, f"http://127.0.0.1:{proxy.port}")
        warm = client.simulate_post("/v1/actions/create-callback", json=create_body(
            customerNumber="+12125550101"), headers=AUTH).json
        assert warm["outcome"] == "CREATED", warm
        proxy.blackhole = True
        started = time.monotonic()
        answer = client.simulate_post("/v1/actions/create-callback", json=create_body(),
                                      headers=AUTH).json
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert (answer["outcome"], answer["reason"]) == ("QUEUED", "UPSTREAM_UNAVAILABLE"), answer
    assert elapsed <= DEADLINE_S + SLACK_S


def test_blackholed_redis_is_a_fast_503(redis_server: RedisServer, sim: Simulator) -> None:
    """Redis accepts connections but never answers: 503 with Retry-After, well within the
    deadline, and nothing accepted."""
    proxy = FaultProxy(redis_server.port).start()
    proxy.blackhole = True
    try:
        client = _in_process(f"redis://127.0.0.1:{proxy.port}/0", sim.url)
        started = time.monotonic()
        result = client.simulate_post("/v1/actions/create-callback", json=create_body(),
                                      headers=AUTH)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert result.status_code == 503 and result.headers["Retry-After"]
    assert elapsed <= DEADLINE_S
    assert sim.creates() == 0
