"""Shared test rig: a real redis-server on a free port, the Genesys simulator over HTTP,
the service in-process (with an injected clock) or under real gunicorn.

Nothing here patches the product: collaborators are passed through ``create_app``.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from zoneinfo import ZoneInfo

import falcon.testing
import pytest
import redis
import requests

from middleware.app import create_app
from middleware.clock import Clock, FixedClock, SystemClock
from middleware.config import Config
from middleware.genesys.client import new_session
from middleware.logs import JsonFormatter
from middleware.store import connect

# The suite and bench/ import the Redis starters from here too (hence the noqa).
from tests.redisservers import (  # noqa: F401
    RedisClusterServer,
    RedisServer,
    RedisStartError,
    StandaloneRedis,
    free_port,
    start_cluster,
    start_for_mode,
    start_redis,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-client-secret-value"
BASIC_USER, BASIC_PASSWORD = "genesys", "basic-secret-one"
BASIC_USER_2, BASIC_PASSWORD_2 = "genesys-next", "basic-secret-two"
API_KEY, API_KEY_2 = "api-key-current-0123456789", "api-key-next-9876543210"
PII_KEY = "pii-key-for-tests"
#: Every raw number the suite sends; none may appear in a Redis key name.
TEST_NUMBERS = ("4155552671", "2125550199", "3055550123", "6135550123", "2079460958")

DEMO_AGENT = "a1000000-0000-4000-8000-000000000001"
DEMO_QUEUE = "b1000000-0000-4000-8000-000000000001"
#: The epoch the tests are written against: a Monday, 18:00 UTC: 13:00 in New York, 10:00 in
#: San Francisco (the test numbers' zones), inside their calling hours and the demo agent's
#: (all-day) shifts.
DEFAULT_EPOCH = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def _epoch(raw: str) -> datetime:
    """The business "now" of this run: the first Monday 18:00 UTC at or after ``TEST_EPOCH``
    (an ISO date or instant), so the calendar moves while the weekday the tests and the demo
    org's weekly shifts are written for stays."""
    if not raw:
        return DEFAULT_EPOCH
    start = datetime.fromisoformat(raw)
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    monday = start.replace(hour=18, minute=0, second=0, microsecond=0)
    monday += timedelta(days=(-monday.weekday()) % 7)
    return monday if monday >= start else monday + timedelta(days=7)


#: This run's business "now" (``TEST_EPOCH``; the suite passes on any).
T0 = _epoch(os.environ.get("TEST_EPOCH", ""))
#: Whole weeks between the epoch the tests are written against and this run's.
SHIFT = T0 - DEFAULT_EPOCH
_WRITTEN = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}(?::\d{2}(?:\.(\d+))?)?))?"
                      r"(Z|[+-]\d{2}:\d{2})?")


def when(written: str, zone: str | None = None) -> str:
    """A date or time written against ``DEFAULT_EPOCH``, moved by ``SHIFT`` in the same
    notation (same precision; ``Z`` stays ``Z``, naive stays naive).

    Without ``zone`` an instant moves by whole weeks of UTC and keeps its written offset.
    With ``zone`` the time is what it means on the wall clock there (``14:30-05:00`` is
    14:30 in New York): that wall-clock time moves, and the offset is the zone's own on the
    new date, so a test stays true on either side of a DST change."""
    match = _WRITTEN.fullmatch(written)
    if match is None:
        raise ValueError(f"not a date or time: {written!r}")
    day, clock, fraction, offset = match.groups()
    if clock is None:
        return (date.fromisoformat(day) + SHIFT).isoformat()
    naive = datetime.fromisoformat(f"{day}T{clock}")
    if zone is None or offset is None:
        moved = naive + SHIFT
        suffix = offset or ""
    else:
        tz = ZoneInfo(zone)
        aware = naive.replace(tzinfo=UTC if offset == "Z" else datetime.fromisoformat(
            f"{day}T{clock}{offset}").tzinfo)
        wall = aware.astimezone(tz).replace(tzinfo=None) + SHIFT
        local_moment = wall.replace(tzinfo=tz)
        if offset == "Z":
            moved, suffix = local_moment.astimezone(UTC).replace(tzinfo=None), "Z"
        else:
            moved = wall
            suffix = local_moment.isoformat()[-6:]
    text = moved.strftime("%Y-%m-%dT%H:%M" + (":%S" if clock.count(":") == 2 else ""))
    if fraction is not None:
        text += "." + f"{moved.microsecond:06d}"[: len(fraction)]
    return text + suffix


def at_local(days: int, wall: str, zone: str) -> datetime:
    """The instant of wall-clock ``wall`` (``HH:MM``) in ``zone``, ``days`` after T0's date
    there: "Friday 18:00 New York" whatever the epoch and its DST."""
    tz = ZoneInfo(zone)
    local_day = T0.astimezone(tz).date() + timedelta(days=days)
    hours, minutes = (int(part) for part in wall.split(":"))
    return datetime(local_day.year, local_day.month, local_day.day, hours, minutes,
                    tzinfo=tz).astimezone(UTC)


def local(instant: str, zone: str) -> str:
    """``instant`` read in ``zone`` with its offset there (``2026-11-23T13:00:00-05:00``), the
    way answers spell local times: right on either side of a DST change."""
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return moment.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")


def utc_of_local(wall: str, zone: str) -> str:
    """The UTC instant (``…000Z``) of a wall-clock time in ``zone``."""
    moment = datetime.fromisoformat(wall).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until true, or fail the test after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if check():
                return
        except (OSError, redis.RedisError, requests.RequestException):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout_s}s")


# -- logs ------------------------------------------------------------------------------


def assert_no_numbers(text: str, where: str) -> None:
    """Fail if any full test number appears in ``text``."""
    leaked = [n for n in TEST_NUMBERS if n in text.replace(" ", "").replace("-", "")]
    assert not leaked, f"{where} holds full phone numbers: {leaked}"


@pytest.fixture(scope="session", autouse=True)
def log_capture() -> Iterator[io.StringIO]:
    """Every log line of the suite, formatted as production formats it, checked at the end."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    assert_no_numbers(stream.getvalue(), "the suite's log lines")


# -- Redis -----------------------------------------------------------------------------

#: The shape of the session's Redis (``TEST_REDIS``): ``standalone`` (the default) or
#: ``cluster``, three primaries on loopback, as SPEC §5 allows ``REDIS_URL`` to name.
TEST_REDIS = os.environ.get("TEST_REDIS", "")


def restart_redis(server: RedisServer) -> RedisServer:
    """Kill Redis abruptly (every node of a cluster) and start it again on the same ports
    and directories: the AOF brings the data back, ``nodes.conf`` the cluster."""
    return server.restart()


_Server = TypeVar("_Server", bound=RedisServer)


def serve_checked(server: _Server) -> Iterator[_Server]:
    """Yield ``server``, then stop it and fail if any key name on any primary holds a raw
    number."""
    try:
        yield server
        leaked = [k for k in server.key_names() if any(number in k for number in TEST_NUMBERS)]
    finally:
        server.stop()
    assert not leaked, f"Redis key names hold raw numbers: {leaked[:5]}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real Redis for the session (a cluster when ``TEST_REDIS=cluster``); its key
    names are checked at the end."""
    try:
        server = start_for_mode(TEST_REDIS, tmp_path_factory.mktemp("redis"))
    except RedisStartError as exc:
        pytest.fail(str(exc))
    yield from serve_checked(server)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> redis.Redis | redis.RedisCluster:
    """A client on an emptied Redis (every primary of a cluster), so tests start from
    nothing."""
    redis_server.flush()
    return redis_server.client()


# -- Genesys simulator -----------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when two gunicorn instances burst at it.
    request_queue_size = 256


@dataclass
class Simulator:
    """The simulator served over loopback HTTP, with helpers for its control API."""

    url: str

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a ``/sim`` control route and return its JSON."""
        resp = requests.request(method, f"{self.url}/sim/{path}", json=body, timeout=5)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def callbacks(self) -> list[dict[str, Any]]:
        """Every callback the simulator holds."""
        return list(self.control("GET", "callbacks")["callbacks"])

    def stats(self) -> dict[str, Any]:
        """Request counters by route, token fetches, 429s."""
        return dict(self.control("GET", "stats"))

    def creates(self) -> int:
        """How many create calls reached the simulator."""
        return int(self.stats()["requests"].get("POST /api/v2/conversations/callbacks", 0))


def _serve_sim(clock: Clock) -> tuple[Simulator, _ThreadingServer]:
    from middleware.sim.app import create_sim_app, load_org

    app = create_sim_app(load_org(None), clock=clock, rate_limit_per_min=100_000,
                         token_ttl_s=3600, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    server = make_server("127.0.0.1", free_port(), app, server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Simulator(f"http://127.0.0.1:{server.server_port}"), server


def assert_faithful(simulator: Simulator) -> None:
    """Fail naming the first request the product sent that a real org would refuse: a
    method and path the SDK lacks, a query value it does not allow, or a body that breaks
    its model (the simulator judged every one as it arrived)."""
    report = simulator.control("GET", "fidelity")
    departures = report["departures"]
    assert not departures, (f"{len(departures)} of {report['checked']} product requests "
                            f"depart from the SDK; first: {departures[0]}")


@pytest.fixture(scope="session")
def sim_server() -> Iterator[Simulator]:
    """The simulator on business time T0 (matching the in-process service's clock); at the
    end, every request the product sent it must have matched the SDK."""
    simulator, server = _serve_sim(FixedClock(T0))
    yield simulator
    try:
        assert_faithful(simulator)
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def live_sim_server() -> Iterator[Simulator]:
    """A simulator on the machine's clock, for the service running under real gunicorn;
    checked for fidelity like ``sim_server``."""
    simulator, server = _serve_sim(SystemClock())
    yield simulator
    try:
        assert_faithful(simulator)
    finally:
        server.shutdown()


def _reset(simulator: Simulator) -> Simulator:
    simulator.control("POST", "reset")
    simulator.control("PUT", "ratelimit", {"perMinute": 100_000})
    return simulator


@pytest.fixture
def sim(sim_server: Simulator) -> Simulator:
    """The simulator reset to its seeded org, with no callbacks, faults or counters."""
    return _reset(sim_server)


@pytest.fixture
def live_sim(live_sim_server: Simulator) -> Simulator:
    """The machine-clock simulator, reset."""
    return _reset(live_sim_server)


# -- the service -----------------------------------------------------------------------


def service_env(redis_url: str, sim_url: str, **overrides: str) -> dict[str, str]:
    """The environment the service reads, pointed at the test Redis and simulator."""
    env = {
        "REDIS_URL": redis_url,
        "GENESYS_API_URL": sim_url,
        "GENESYS_LOGIN_URL": sim_url,
        "GENESYS_CLIENT_ID": CLIENT_ID,
        "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
        "ACTION_BASIC_CREDENTIALS":
            f"{BASIC_USER}:{BASIC_PASSWORD},{BASIC_USER_2}:{BASIC_PASSWORD_2}",
        "ACTION_API_KEYS": f"{API_KEY},{API_KEY_2}",
        "PII_KEYS": PII_KEY,
        "LOG_LEVEL": "INFO",
    }
    env.update(overrides)
    return env


def basic_header(user: str = BASIC_USER, password: str = BASIC_PASSWORD) -> dict[str, str]:
    """An Authorization header for Basic credentials."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic_header()


@dataclass
class Service:
    """The app in-process, its clock, and the parts tests look at."""

    client: falcon.testing.TestClient
    clock: FixedClock
    config: Config
    redis: redis.Redis

    def action(self, name: str, body: dict[str, Any], headers: dict[str, str] | None = None
               ) -> falcon.testing.Result:
        """POST an action with valid credentials."""
        return self.client.simulate_post(f"/v1/actions/{name}", json=body,
                                         headers={**AUTH, **(headers or {})})


@pytest.fixture
def make_service(redis_client: redis.Redis, redis_server: RedisServer, sim: Simulator
                 ) -> Callable[..., Service]:
    """Build the app with settings overridden per test."""
    def build(**overrides: str) -> Service:
        config = Config.from_env(service_env(redis_server.url, sim.url, **overrides))
        clock = FixedClock(T0)
        app = create_app(config, redis_client=connect(config.redis_url, 1.0),
                         http=new_session(), clock=clock)
        return Service(falcon.testing.TestClient(app), clock, config, redis_client)
    return build


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    """The app with the default test settings."""
    return make_service()


def create_body(**fields: Any) -> dict[str, Any]:
    """A valid create-callback body for the demo agent, overridable field by field."""
    body: dict[str, Any] = {
        "customerNumber": "+1 415 555 2671",
        "customerName": "Grace Customer",
        "agentId": DEMO_AGENT,
        "queueId": DEMO_QUEUE,
        "requestedTime": when("2026-11-23T19:00:00Z"),
        "consentGiven": True,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


# -- gunicorn --------------------------------------------------------------------------


@dataclass
class Gunicorn:
    """The service under a real gunicorn master."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_gunicorn(env: dict[str, str], log: Path, workers: int = 2) -> Gunicorn:
    """Run the shipped gunicorn config on a free port and wait for /healthz."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:middleware.gunicorn_conf",
             "-w", str(workers), "-b", f"127.0.0.1:{port}", "middleware.wsgi:app"],
            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).ok, 20, "gunicorn")
    except TimeoutError:
        process.kill()
        raise AssertionError(f"gunicorn did not start:\n{log.read_text()[-3000:]}") from None
    return Gunicorn(url, process, log)


@pytest.fixture
def gunicorn_service(redis_client: redis.Redis, redis_server: RedisServer,
                     live_sim: Simulator, tmp_path: Path) -> Iterator[Gunicorn]:
    """One gunicorn instance (two workers) against the test Redis and the live simulator."""
    server = start_gunicorn(service_env(redis_server.url, live_sim.url),
                            tmp_path / "gunicorn.log")
    yield server
    server.process.terminate()
    server.process.wait(15)
    assert_no_numbers(server.log.read_text(), "gunicorn's log")


# -- reading the store's sharded indexes -------------------------------------------------


def pending_total(client: redis.Redis) -> int:
    """Entries of the worker's index of pending callbacks, over every shard."""
    from middleware.store import keys
    return sum(int(client.zcard(keys.pending_all(shard))) for shard in keys.SHARDS)


def outbox_schedule(client: redis.Redis) -> list[tuple[str, float]]:
    """Every outbox entry's ``(token, next attempt ms)``, over every shard."""
    from middleware.store import keys
    return [(str(token), float(score)) for shard in keys.SHARDS
            for token, score in client.zrange(keys.outbox(shard), 0, -1, withscores=True)]
