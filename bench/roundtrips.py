"""Redis round trips per request, counted on the client, for every action on the warm path.

A round trip is one write of the client to Redis followed by reading its replies: one
plain command, one pipeline or transaction ``execute``, one ``EVALSHA``. It is counted in
``send_packed_command`` of a redis-py connection class given to the client the product is
built with, so what is counted is what goes over the socket: a ``NOSCRIPT`` fallback shows
as its three writes (``EVALSHA``, ``SCRIPT LOAD``, ``EVALSHA``), a pipeline that carries
scripts as its extra ``SCRIPT EXISTS``, a connection health check as its ``PING``. The
product itself carries no bench code: the client is built here and passed to
``create_app`` as the tests do.

The product runs in-process (falcon's test client on ``create_app``) against a real
redis-server on a free port and the Genesys simulator over HTTP, both started here with the
test rig's helpers, on the test rig's fixed business clock. After a warm-up (caches, token,
scripts loaded), each action runs once for each of N fresh numbers, in this order:
create (CREATED), the same create again (DUPLICATE), find-pending-callbacks, reschedule,
cancel, record-consent, revoke-consent.

``.venv/bin/python -m bench.roundtrips [--numbers 200]`` prints the Markdown table;
``bench/run`` puts the same section in its report.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon.testing
import phonenumbers
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from middleware.app import create_app
from middleware.clock import FixedClock
from middleware.config import Config
from middleware.genesys.client import new_session
from middleware.store.client import Connection
from tests.conftest import (
    AUTH,
    DEMO_AGENT,
    DEMO_QUEUE,
    T0,
    _serve_sim,
    service_env,
    when,
)
from tests.redisservers import start_redis

#: issue 13, point 2: a warm create makes at most this many Redis round trips.
CREATE_TARGET = 3
#: Area codes in zones whose calling hours contain the requested times below (T0 + 1 h and
#: T0 + 2 h: early afternoon on the east coast, late morning on the west coast).
AREA_CODES = (212, 312, 415, 617, 713, 303, 206, 404)
RATE_LIMIT = 100_000_000  # per minute: the service's own Genesys budget out of the way
ACTIONS = ("create-callback CREATED", "create-callback DUPLICATE", "find-pending-callbacks",
           "reschedule-callback", "cancel-callback", "record-consent", "revoke-consent")


# -- the counter -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the counting connections sent: writes (round trips), commands, and per round
    trip a label (the command's name, or ``pipeline[n: names]`` / ``MULTI…EXEC[n: names]``)."""

    round_trips: int = 0
    commands: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    _pending: list[tuple[str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self.round_trips, self.commands = 0, 0
            self.labels.clear()
            self._pending.clear()

    def packed(self, label: str, commands: int) -> None:
        """Note what the next write carries (called while packing, before it is sent)."""
        with self._lock:
            self._pending.append((label, commands))

    def sent(self) -> None:
        """One write went to Redis: one round trip, carrying what was packed last."""
        with self._lock:
            label, commands = self._pending.pop() if self._pending else ("?", 0)
            self.round_trips += 1
            self.commands += commands
            self.labels[label] += 1


def counting_connection(tally: Tally) -> type[redis.Connection]:
    """A redis-py connection class that reports every write to ``tally``."""

    # redis-py's connection methods are untyped; the overrides keep their signatures.
    class CountingConnection(redis.Connection):
        def send_command(self, *args: Any, **kwargs: Any) -> None:
            tally.packed(str(args[0]).upper() if args else "?", 1)
            super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]

        def pack_commands(self, commands: Any) -> Any:
            listed = list(commands)
            names = [str(c[0]).upper() for c in listed if c]
            transaction = bool(names) and names[0] == "MULTI" and names[-1] == "EXEC"
            inside = sorted(set(names[1:-1] if transaction else names))
            tally.packed(f"{'MULTI…EXEC' if transaction else 'pipeline'}[{len(listed)}: "
                         f"{' '.join(inside)}]", len(listed))
            return super().pack_commands(listed)  # type: ignore[no-untyped-call]

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            # The health check (a PING when the connection sat idle) goes first, as in
            # redis-py, and counts as its own round trip; a first connect's handshake
            # likewise re-enters send_command once per command it sends.
            if check_health:
                self.check_health()  # type: ignore[no-untyped-call]
            tally.sent()
            super().send_packed_command(  # type: ignore[no-untyped-call]
                command, check_health=False)

    return CountingConnection


def counting_client(url: str, timeout_s: float, tally: Tally) -> redis.Redis:
    """A client set up as ``middleware.store.connect`` sets it up, counting into ``tally``."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1), health_check_interval=30, decode_responses=True,
        connection_class=counting_connection(tally))


def counting_cluster_client(url: str, timeout_s: float, tally: Tally) -> redis.RedisCluster:
    """A Redis Cluster client set up as ``middleware.store.connect`` sets one up, each
    node's connections counting into ``tally`` (a round trip is a write to any node)."""
    return redis.RedisCluster.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1), decode_responses=True,
        connection_class=counting_connection(tally))


# -- the run -----------------------------------------------------------------------------------


def fresh_numbers(count: int, start: int = 0) -> list[str]:
    """Distinct valid US numbers (E.164), in a fixed order so runs are comparable."""
    found: list[str] = []
    line = 1000 + start
    while len(found) < count:
        if line > 9999:
            raise ValueError(f"{count} numbers from line {start} exceed the fixed plan")
        for area in AREA_CODES:
            for exchange in (234, 345, 456, 567, 678, 789, 823, 932):
                candidate = f"+1{area}{exchange}{line:04d}"
                if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
                    found.append(candidate)
                    if len(found) == count:
                        return found
        line += 1
    return found


@dataclass
class Row:
    """One action measured over N requests."""

    action: str
    round_trips: list[int] = field(default_factory=list)
    sent: int = 0  # commands the client sent
    run: int = 0  # commands Redis ran (INFO commandstats: inside scripts included)
    genesys: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        """How many requests the row measured."""
        return len(self.round_trips)

    def per(self, total: int) -> float:
        """``total`` per request."""
        return total / max(self.requests, 1)


@dataclass
class Rig:
    """The product in-process over a counting client, and what it talks to."""

    client: falcon.testing.TestClient
    tally: Tally
    plain: list[redis.Redis]  # a plain client on each primary
    sim_stats: Callable[[], dict[str, Any]]


@dataclass
class External:
    """A Redis this module did not start: where the product connects, whether it is a
    cluster, and a plain client on each primary (for ``INFO commandstats``)."""

    url: str
    cluster: bool
    primaries: list[redis.Redis]


@contextlib.contextmanager
def rig(directory: Path, pids: Path | None = None,
        external: External | None = None) -> Iterator[Rig]:
    """redis-server (unless ``external``) and the simulator started, the app built on a
    counting client; what was started here is stopped on exit."""
    server = start_redis(directory / "redis") if external is None else None
    if server is not None and pids is not None:
        with pids.open("a") as out:
            out.write(f"{server.process.pid}\n")
    url = server.url if server is not None else external.url if external else ""
    primaries = [server.client()] if server is not None else \
        external.primaries if external else []
    simulator, sim_server = _serve_sim(FixedClock(T0))
    try:
        config = Config.from_env(service_env(url, simulator.url,
                                             GENESYS_RATE_LIMIT_PER_MIN=str(RATE_LIMIT)))
        tally = Tally()
        make = counting_cluster_client if external is not None and external.cluster \
            else counting_client
        app = create_app(config, redis_client=Connection("", 0, make(
            config.redis_url, config.redis_timeout_s, tally)), http=new_session(),
            clock=FixedClock(T0))
        yield Rig(falcon.testing.TestClient(app), tally, primaries, simulator.stats)
    finally:
        sim_server.shutdown()
        sim_server.server_close()
        if server is not None:
            server.process.terminate()
            server.process.wait(10)


def _genesys_calls(rig: Rig) -> int:
    return sum(int(n) for n in rig.sim_stats()["requests"].values())


def _server_commands(plain: list[redis.Redis]) -> int:
    return sum(int(s["calls"]) for primary in plain
               for name, s in primary.info("commandstats").items()
               if name not in ("cmdstat_info", "cmdstat_cluster"))


def _bodies(e164: str, ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    create = {"customerNumber": e164, "customerName": "Bench Customer", "agentId": DEMO_AGENT,
              "queueId": DEMO_QUEUE, "requestedTime": when("2026-11-23T19:00:00Z"),
              "consentGiven": True}
    callback = ids.get(e164, "")
    return [
        ("create-callback CREATED", "create-callback", create),
        ("create-callback DUPLICATE", "create-callback", create),
        ("find-pending-callbacks", "find-pending-callbacks", {"customerNumber": e164}),
        ("reschedule-callback", "reschedule-callback",
         {"callbackId": callback, "requestedTime": when("2026-11-23T20:00:00Z")}),
        ("cancel-callback", "cancel-callback", {"callbackId": callback}),
        ("record-consent", "record-consent",
         {"customerNumber": e164, "consentSource": "IVR_KEYPRESS"}),
        ("revoke-consent", "revoke-consent", {"customerNumber": e164}),
    ]


def run_actions(the_rig: Rig, numbers: list[str]) -> dict[str, Row]:
    """Each action once per number, action by action, each request's round trips counted."""
    rows = {name: Row(name) for name in ACTIONS}
    ids: dict[str, str] = {}
    for index, name in enumerate(ACTIONS):
        row = rows[name]
        genesys_before, run_before = _genesys_calls(the_rig), _server_commands(the_rig.plain)
        for e164 in numbers:
            label, action, body = _bodies(e164, ids)[index]
            the_rig.tally.reset()
            answer = the_rig.client.simulate_post(f"/v1/actions/{action}", json=body,
                                                  headers=AUTH)
            row.round_trips.append(the_rig.tally.round_trips)
            row.sent += the_rig.tally.commands
            row.labels.update(the_rig.tally.labels)
            media = answer.json if answer.status_code == 200 else {}
            outcome = str(media.get("outcome", f"HTTP {answer.status_code}"))
            row.answers[outcome] += 1
            if label == "create-callback CREATED" and media.get("callbackId"):
                ids[e164] = str(media["callbackId"])
        row.run = _server_commands(the_rig.plain) - run_before
        row.genesys = _genesys_calls(the_rig) - genesys_before
    return rows


def measure(numbers: int = 200, warm: int = 5, directory: Path | None = None,
            pids: Path | None = None, external: External | None = None) -> dict[str, Row]:
    """Warm the product up on ``warm`` numbers, then measure every action on ``numbers``
    fresh ones (against ``external`` when given, else a redis-server started here)."""
    with contextlib.ExitStack() as stack:
        where = directory or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        the_rig = stack.enter_context(rig(where, pids, external))
        run_actions(the_rig, fresh_numbers(warm, start=8000))
        return run_actions(the_rig, fresh_numbers(numbers))


# -- the report --------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "**NO**"


def table(rows: dict[str, Row], with_target: bool = True) -> str:
    """The Markdown section: one line per action, the issue-13 target beside the create
    (``with_target``: the target is one primary's; a cluster's table shows none)."""
    lines = [
        "| action | requests | Redis round trips/req (mean, min-max) | commands sent/req | "
        "commands run in Redis/req | Genesys calls/req | answers | target | met? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        trips = row.round_trips or [0]
        mean = sum(trips) / len(trips)
        target, met = "", ""
        if with_target and row.action == "create-callback CREATED":
            target = f"≤ {CREATE_TARGET} round trips per warm create (issue 13)"
            met = _met(max(trips) <= CREATE_TARGET)
        answers = ", ".join(f"{k} {n}" for k, n in row.answers.most_common())
        lines.append(
            f"| {row.action} | {row.requests} | {mean:.2f} ({min(trips)}-{max(trips)}) | "
            f"{row.per(row.sent):.1f} | {row.per(row.run):.1f} | "
            f"{row.per(row.genesys):.2f} | {answers} | {target} | {met} |")
    create = rows["create-callback CREATED"]
    by_kind = ", ".join(f"{label} {row_n / max(create.requests, 1):.2f}"
                        for label, row_n in create.labels.most_common())
    lines += ["", f"Round trips of a warm create, by what each carried (per create): "
              f"{by_kind}."]
    return "\n".join(lines) + "\n"


def section(rows: dict[str, Row]) -> str:
    """The section ``bench/run`` puts in its report."""
    create = rows["create-callback CREATED"]
    return "\n".join([
        "## Redis round trips per request (product code in-process, warm path)",
        "",
        f"Counted on the client (`bench/roundtrips.py`: one write to Redis and its replies = "
        f"one round trip), {create.requests} fresh numbers per action after a warm-up, on "
        f"the test rig's fixed clock; commands run in Redis include those inside scripts "
        f"(`INFO commandstats`).",
        "",
        table(rows),
    ])


def main() -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--numbers", type=int, default=200, help="fresh numbers per action")
    parser.add_argument("--warm", type=int, default=5, help="numbers of the warm-up")
    args = parser.parse_args()
    print(section(measure(args.numbers, args.warm)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
