"""A seeded, randomized, concurrent workload with faults, and a checker of SPEC §4 Lifecycle.

``run_seed(seed)`` starts its own redis-server and Genesys simulator, builds two service
instances on that Redis with ``create_app`` (optionally mid-way through a ``PII_KEYS``
rotation: ``[old, new]`` and ``[new, old]``), runs the worker as a separate process, and for a
few seconds lets client threads send every action on four numbers through either instance
while a nemesis switches simulator faults, gives owners time off, deactivates them, completes
callbacks as if the customer was called, replays dead letters, kills the worker and restarts
Redis. Then it brings the system to quiescence (faults off, the outbox drained, dead letters
replayed, reconciliation run) and ``check`` compares every recorded answer, both instances'
``find-pending-callbacks`` and the simulator's callbacks against invariants 1-7.

Everything is observed through the public contract (actions, ``/metrics``, ``/sim/``), except
the two worker entry points in "The worker and the dead-letter command" below, which are what
the ``worker`` process and the ``dead-letters replay --all`` command run, with the workload's
clock. Business time runs with the machine's clock from T0 while requests are in flight (so
timeouts and Genesys latency keep their real proportions) and jumps ahead only at quiescence.

Decisions depend only on the seed; which answer a request gets depends on thread scheduling,
so a seed reproduces the same workload and faults, not always the same interleaving.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import multiprocessing
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from wsgiref.simple_server import make_server

import falcon.testing
import redis
import requests

from middleware.app import Services, build_duties, build_services, create_app
from middleware.config import Config
from middleware.deadline import Deadline
from middleware.genesys.client import new_session
from middleware.rules.number import NumberKeys
from middleware.rules.time import parse_instant
from middleware.store import connect
from middleware.worker.loop import run_loop
from middleware.worker.outbox import replay_dead_letters
from tests.conftest import (
    AUTH,
    CLIENT_ID,
    CLIENT_SECRET,
    DEMO_QUEUE,
    T0,
    RedisServer,
    _QuietHandler,
    _ThreadingServer,
    free_port,
    restart_redis,
    service_env,
    start_redis,
)
from tests.ledger_check import ledger_problems

#: The numbers the workload calls, each as E.164 and as callers may type it.
NUMBERS: Final = (
    ("+14155552671", ("+1 415 555 2671", "tel:+14155552671", "(415) 555-2671")),
    ("+12125550199", ("+1 212 555 0199", "tel:+12125550199", "212-555-0199")),
    ("+13055550123", ("+1 305 555 0123", "tel:+13055550123", "(305) 555-0123")),
    ("+16135550123", ("+1 613 555 0123", "tel:+16135550123", "613 555 0123")),
)
#: New York owners of the demo org's first team: Ada (round the clock), Bob (office hours),
#: Oscar (offline, which matters only for callbacks due soon) and Olivia (out of office, so
#: her callbacks are reassigned at once); their lead takes over when no teammate can.
AGENTS: Final = (
    "a1000000-0000-4000-8000-000000000001",
    "a1000000-0000-4000-8000-000000000002",
    "a1000000-0000-4000-8000-000000000011",
    "a1000000-0000-4000-8000-000000000007",
)
ACCEPTED: Final = frozenset({"CREATED", "QUEUED", "RESCHEDULED"})
LIVE_STATES: Final = frozenset({"scheduled", "connected"})
READ_TIMEOUT_MS: Final = 400
#: Short timeouts, a quick worker, and a daily cap the workload can reach.
SOAK_SETTINGS: Final = {
    "GENESYS_READ_TIMEOUT_MS": str(READ_TIMEOUT_MS),
    "GENESYS_CONNECT_TIMEOUT_MS": "300",
    "REQUEST_DEADLINE_MS": "1500",
    "REDIS_TIMEOUT_MS": "500",
    "GENESYS_RATE_LIMIT_PER_MIN": "100000",
    "OUTBOX_INTERVAL_SECONDS": "1",
    "OUTBOX_MAX_ATTEMPTS": "4",
    "OUTBOX_BACKOFF_BASE_MS": "200",
    "OUTBOX_BACKOFF_CAP_MS": "2000",
    "RECONCILE_INTERVAL_SECONDS": "1",
    "CACHE_TTL_SECONDS": "1",
    "MAX_CALLBACKS_PER_NUMBER_PER_DAY": "8",
    "LOG_LEVEL": "WARNING",
}
TRACE_LINES: Final = 25
CAP: Final = int(SOAK_SETTINGS["MAX_CALLBACKS_PER_NUMBER_PER_DAY"])
PII_OLD, PII_NEW = "pii-key-soak-old", "pii-key-soak-new"


@dataclass(frozen=True)
class Plan:
    """How long and how hard one seed runs."""

    clients: int = 4
    ops_per_client: int = 60
    active_s: float = 8.0
    nemesis_events: int = 12
    quiesce_rounds: int = 20


# -- time ------------------------------------------------------------------------------


class RunningClock:
    """Business time: T0 plus the machine's monotonic time since ``origin``, plus jumps.

    ``time.monotonic`` is one clock for every process of the machine, so the worker process
    builds the same clock from the same origin and agrees with the instances.
    """

    def __init__(self, base: datetime, origin: float) -> None:
        self._base = base
        self._origin = origin
        self._jumped = 0.0

    def now(self) -> datetime:
        """The current business instant."""
        return self._base + timedelta(seconds=time.monotonic() - self._origin + self._jumped)

    def jump(self, delta: timedelta) -> None:
        """Move business time ahead (only at quiescence, when nothing else reads it)."""
        self._jumped += delta.total_seconds()


def seeded(seed: int, *stream: object) -> random.Random:
    """An independent generator per seed and stream, so one stream never shifts another."""
    return random.Random("/".join(map(str, (seed, *stream))))  # noqa: S311 (workload, not keys)


def utc(instant: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.000Z``, to the minute: what the workload asks for."""
    return instant.replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# -- the history -----------------------------------------------------------------------


@dataclass
class Call:
    """One request and its answer, or one nemesis step, with real and business times."""

    seq: int
    actor: str
    instance: str
    action: str
    body: dict[str, Any]
    e164: str
    started: float
    at: datetime
    ended: float = 0.0
    at_end: datetime | None = None
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """The answer's outcome, or the HTTP status when there was none."""
        return str(self.answer.get("outcome") or f"HTTP{self.status}")

    def get(self, name: str) -> str:
        """One answer field as text ('' when absent)."""
        value = self.answer.get(name)
        return "" if value is None else str(value)

    def line(self, origin: float) -> str:
        """A one-line trace of the call, numbers shown by their last four digits."""
        shown = {k: v for k, v in self.body.items()
                 if k in ("callbackId", "requestedTime", "conversationId", "idempotencyKey",
                          "consentCapturedAt", "consentId", "userId", "state", "kind")}
        answer = " ".join(f"{k}={self.get(k)}" for k in (
            "reason", "callbackId", "previousCallbackId", "existingCallbackId",
            "scheduledTimeUtc", "pendingCount", "cancelledCount", "replayed", "detail")
            if self.get(k) not in ("", "False", "0"))
        return (f"#{self.seq:<4} {self.started - origin:6.2f}-{self.ended - origin:6.2f}s "
                f"{self.instance:<7} {self.action:<22} …{self.e164[-4:] if self.e164 else '----'}"
                f" {shown} -> {self.outcome} {answer}")


class History:
    """Every call of the run, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []

    def begin(self, actor: str, instance: str, action: str, body: dict[str, Any], e164: str,
              clock: RunningClock) -> Call:
        """Record a call as started."""
        with self._lock:
            call = Call(len(self.calls), actor, instance, action, dict(body), e164,
                        time.monotonic(), clock.now())
            self.calls.append(call)
        return call

    @staticmethod
    def end(call: Call, status: int, answer: dict[str, Any], clock: RunningClock) -> None:
        """Record the answer."""
        call.status, call.answer = status, answer
        call.ended, call.at_end = time.monotonic(), clock.now()


# -- the rig ---------------------------------------------------------------------------


class _SocketHandler(_QuietHandler):
    """Hands the client socket to the simulator, so its ``drop`` fault can cut it."""

    def get_environ(self) -> dict[str, Any]:
        environ = dict(super().get_environ())
        environ["gunicorn.socket"] = self.connection
        return environ

    def get_stderr(self) -> io.StringIO:
        # A dropped connection makes the server's own write fail; that is the point.
        return io.StringIO()


@dataclass
class Rig:
    """Redis, the simulator and two service instances for one seed."""

    redis: RedisServer
    sim_url: str
    sim_server: _ThreadingServer
    clock: RunningClock
    origin: float
    envs: dict[str, dict[str, str]]
    instances: dict[str, falcon.testing.TestClient]
    worker_env: dict[str, str]
    rotation: bool

    def sim(self, method: str, path: str, body: Any = None) -> Any:
        """Call a ``/sim/`` route and return its JSON."""
        resp = requests.request(method, f"{self.sim_url}/sim/{path}", json=body, timeout=5)
        resp.raise_for_status()
        return resp.json() if resp.content else None


@contextlib.contextmanager
def rig(directory: Path, rotation: bool) -> Iterator[Rig]:
    """Start everything for one seed; stop it all on exit."""
    from middleware.sim.app import create_sim_app, load_org

    origin = time.monotonic()
    clock = RunningClock(T0, origin)
    server = start_redis(directory / "redis")
    sim_app = create_sim_app(load_org(None), clock=clock, rate_limit_per_min=100_000,
                             token_ttl_s=3600, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    sim_server = make_server("127.0.0.1", free_port(), sim_app, server_class=_ThreadingServer,
                             handler_class=_SocketHandler)
    threading.Thread(target=sim_server.serve_forever, daemon=True).start()
    sim_url = f"http://127.0.0.1:{sim_server.server_port}"
    keys = {"A": f"{PII_OLD},{PII_NEW}", "B": f"{PII_NEW},{PII_OLD}"} if rotation \
        else {"A": PII_OLD, "B": PII_OLD}
    envs = {name: service_env(server.url, sim_url, **SOAK_SETTINGS, PII_KEYS=key)
            for name, key in keys.items()}
    instances = {}
    for name, env in envs.items():
        config = Config.from_env(env)
        app = create_app(config, redis_client=connect(config.redis_url, config.redis_timeout_s),
                         http=new_session(), clock=clock)
        instances[name] = falcon.testing.TestClient(app)
    the_rig = Rig(server, sim_url, sim_server, clock, origin, envs, instances,
                  envs["B" if rotation else "A"], rotation)
    try:
        yield the_rig
    finally:
        sim_server.shutdown()
        sim_server.server_close()
        the_rig.redis.process.kill()
        the_rig.redis.process.wait(10)


# -- the worker and the dead-letter command --------------------------------------------


def worker_process(env: dict[str, str], origin: float) -> None:
    """The ``worker`` process's loop, on the workload's clock (run in a child process)."""
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.CRITICAL)
    config = Config.from_env(env)
    services = build_services(config, redis_client=connect(config.redis_url,
                                                           config.redis_timeout_s),
                              http=new_session(), clock=RunningClock(T0, origin))
    run_loop(build_duties(services), threading.Event(), batch_budget_s=5.0)


def start_worker(the_rig: Rig) -> multiprocessing.process.BaseProcess:
    """A fresh worker process."""
    process = multiprocessing.get_context("spawn").Process(
        target=worker_process, args=(the_rig.worker_env, the_rig.origin), daemon=True)
    process.start()
    return process


def local_services(the_rig: Rig) -> Services:
    """The collaborators the worker and the commands build, in this process."""
    config = Config.from_env(the_rig.worker_env)
    return build_services(config, redis_client=connect(config.redis_url, 1.0),
                          http=new_session(), clock=the_rig.clock)


def replay_all(services: Services) -> list[str]:
    """What ``dead-letters replay --all`` does; returns the tokens (``requestToken``s)."""
    tokens = [entry.token for entry in services.store.dead_letters()]
    replay_dead_letters(services.store, services.lifecycle, services.consents, tokens,
                        services.clock)
    return tokens


# -- the workload ----------------------------------------------------------------------

FAULTS: Final[dict[str, dict[str, Any]]] = {
    # A create slower than the read timeout that still lands.
    "slow-create": {"latencyMs": 2 * READ_TIMEOUT_MS + 100, "method": "POST",
                    "pathPrefix": "/api/v2/conversations/callbacks"},
    # A create that lands, then its answer is lost (connection cut or a 502).
    "landed-drop": {"mode": "drop", "phase": "after", "method": "POST",
                    "pathPrefix": "/api/v2/conversations/callbacks"},
    "landed-502": {"status": 502, "phase": "after", "method": "POST",
                   "pathPrefix": "/api/v2/conversations/callbacks"},
    "create-503": {"status": 503, "method": "POST",
                   "pathPrefix": "/api/v2/conversations/callbacks"},
    "drop": {"mode": "drop"},
    "all-500": {"status": 500},
    "read-500": {"status": 500, "method": "GET"},
    "429": {"status": 429, "retryAfter": 1},
}
NEMESIS: Final = {**dict.fromkeys(FAULTS, 3), "clear": 3, "time-off": 2, "deactivate": 2,
                  "reactivate": 1, "complete": 2, "replay": 2}
OPS: Final = {"create": 34, "resend": 8, "cancel": 12, "reschedule": 12, "record": 9,
              "revoke": 5, "find": 10}


class Workload:
    """Client threads, the nemesis and the worker for one seed, writing one history."""

    def __init__(self, seed: int, the_rig: Rig, plan: Plan) -> None:
        self.seed = seed
        self.rig = the_rig
        self.plan = plan
        self.history = History()
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._id_number: dict[str, str] = {}
        self._consents: dict[str, list[str]] = defaultdict(list)
        self._creates: list[tuple[str, dict[str, Any]]] = []
        self._until = 0.0
        self.worker: multiprocessing.process.BaseProcess | None = None
        self.dead_lettered: set[str] = set()
        self.errors: list[str] = []
        self.services = local_services(the_rig)

    # - requests -

    def call(self, actor: str, instance: str, action: str, body: dict[str, Any],
             e164: str) -> Call:
        """Send one action through one instance and record it."""
        call = self.history.begin(actor, instance, action, body, e164, self.rig.clock)
        result = self.rig.instances[instance].simulate_post(
            f"/v1/actions/{action}", json=body, headers=AUTH)
        answer = result.json if isinstance(result.json, dict) else {}
        History.end(call, result.status_code, answer, self.rig.clock)
        self._learn(call)
        return call

    def _learn(self, call: Call) -> None:
        e164 = call.get("customerNumberE164") or call.e164
        with self._lock:
            for name in ("callbackId", "previousCallbackId", "existingCallbackId"):
                callback_id = call.get(name)
                if callback_id and callback_id not in self._id_number:
                    self._ids.append(callback_id)
                    self._id_number[callback_id] = e164
            if call.outcome == "RECORDED":
                self._consents[e164].append(call.get("consentId"))

    def _held_id(self, rng: random.Random) -> tuple[str, str]:
        with self._lock:
            if not self._ids:
                return "", ""
            callback_id = rng.choice(self._ids)
            return callback_id, self._id_number[callback_id]

    def _time(self, rng: random.Random) -> str:
        return utc(self.rig.clock.now() + timedelta(minutes=rng.randrange(20, 180)))

    def _request(self, op: str, rng: random.Random) -> tuple[str, dict[str, Any], str] | None:
        index = rng.randrange(len(NUMBERS))
        e164, spellings = NUMBERS[index]
        number = rng.choice(spellings)
        if op == "create":
            body: dict[str, Any] = {
                "customerNumber": number, "customerName": "Soak Customer",
                "agentId": rng.choice(AGENTS), "queueId": DEMO_QUEUE,
                "requestedTime": self._time(rng), "consentGiven": True}
            if rng.random() < 0.5:
                body["conversationId"] = f"conv-{index}-{rng.randrange(3)}"
            if rng.random() < 0.3:
                body["idempotencyKey"] = f"key-{self.seed}-{rng.randrange(10**9)}"
            with self._lock:
                consents = list(self._consents[e164])
            if consents and rng.random() < 0.4:
                body["consentId"] = rng.choice(consents)
            else:
                body["consentSource"] = "IVR_KEYPRESS"
            with self._lock:
                self._creates.append((e164, body))
            return "create-callback", body, e164
        if op == "resend":
            with self._lock:
                if not self._creates:
                    return None
                e164, body = rng.choice(self._creates)
            return "create-callback", body, e164
        if op in ("cancel", "reschedule"):
            callback_id, e164 = self._held_id(rng)
            if not callback_id:
                return None
            if op == "cancel":
                return "cancel-callback", {"callbackId": callback_id}, e164
            return "reschedule-callback", {"callbackId": callback_id,
                                           "requestedTime": self._time(rng)}, e164
        if op == "record":
            body = {"customerNumber": number, "consentSource": "AGENT_VERBAL",
                    "consentText": "soak script v1", "agentId": AGENTS[0]}
            if rng.random() < 0.2:
                # A capture time a little ahead (within the skew) or a while back.
                shift = rng.choice((3, -30))
                body["consentCapturedAt"] = utc(self.rig.clock.now() + timedelta(minutes=shift))
            return "record-consent", body, e164
        if op == "revoke":
            return "revoke-consent", {"customerNumber": number, "cancelPending": True}, e164
        return "find-pending-callbacks", {"customerNumber": number}, e164

    def client(self, index: int) -> None:
        """One caller: a seeded sequence of actions through either instance."""
        rng = seeded(self.seed, "client", index)
        for _ in range(self.plan.ops_per_client):
            if time.monotonic() > self._until:
                return
            request = self._request(rng.choices(list(OPS), list(OPS.values()))[0], rng)
            instance = rng.choice("AB")
            if request is not None:
                self._guard(f"client {index}", lambda r=request, i=instance: self.call(
                    f"c{index}", i, *r))
            # Spread the calls over the active phase, so every fault meets some of them.
            time.sleep(rng.uniform(0, 2 * self.plan.active_s / self.plan.ops_per_client))

    def _guard(self, who: str, step: Callable[[], Any]) -> None:
        try:
            step()
        except Exception as exc:  # a crash of the harness itself is reported, never hidden
            self.errors.append(f"{who}: {type(exc).__name__}: {exc}")

    # - the nemesis -

    def nemesis(self) -> None:
        """Seeded faults at seeded instants, plus at most one worker kill and Redis restart."""
        rng = seeded(self.seed, "nemesis")
        span = self.plan.active_s
        events = [(rng.uniform(0.3, span - 0.5), rng.choices(list(NEMESIS),
                                                             list(NEMESIS.values()))[0])
                  for _ in range(self.plan.nemesis_events)]
        if rng.random() < 0.7:
            events.append((rng.uniform(1.0, span - 1.5), "kill-worker"))
        if rng.random() < 0.5:
            events.append((rng.uniform(1.0, span - 1.5), "restart-redis"))
        start = time.monotonic()
        for at, kind in sorted(events):
            time.sleep(max(0.0, start + at - time.monotonic()))
            self._guard(f"nemesis {kind}", lambda k=kind: self._strike(k, rng))

    def _strike(self, kind: str, rng: random.Random) -> None:
        call = self.history.begin("nemesis", "nemesis", kind, {"kind": kind}, "",
                                  self.rig.clock)
        body = call.body
        answer: dict[str, Any] = {"outcome": "DONE"}
        if kind in FAULTS:
            fault = {**FAULTS[kind], "count": rng.randrange(1, 6)}
            body.update(fault)
            self.rig.sim("PUT", "faults", fault)
        elif kind == "clear":
            self.rig.sim("DELETE", "faults")
        elif kind in ("time-off", "deactivate", "reactivate"):
            agent = rng.choice(AGENTS)
            body["userId"] = agent
            if kind == "time-off":
                self.rig.sim("POST", "timeoff", {"userId": agent, "daysFromToday": 0})
            else:
                state = "inactive" if kind == "deactivate" else "active"
                self.rig.sim("PATCH", f"users/{agent}", {"state": state})
        elif kind == "complete":
            live = [c for c in self.rig.sim("GET", "callbacks")["callbacks"]
                    if c["state"] in LIVE_STATES]
            if live:
                target = rng.choice(live)
                body["callbackId"] = target["conversationId"]
                call.e164 = target["callbackNumbers"][0]
                self.rig.sim("PATCH", f"callbacks/{target['conversationId']}",
                             {"state": "completed"})
        elif kind == "replay":
            tokens = replay_all(self.services)
            self.dead_lettered.update(tokens)
            answer["detail"] = f"{len(tokens)} replayed"
        elif kind == "kill-worker":
            if self.worker is not None and self.worker.pid is not None:
                self.worker.kill()
                self.worker.join(5)
            time.sleep(rng.uniform(0.2, 1.0))
            self.worker = start_worker(self.rig)
        elif kind == "restart-redis":
            self.rig.redis = restart_redis(self.rig.redis)
        History.end(call, 200, answer, self.rig.clock)

    # - the run -

    def run(self) -> None:
        """The active phase, then quiescence."""
        self.worker = start_worker(self.rig)
        self._until = time.monotonic() + self.plan.active_s
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                   for i in range(self.plan.clients)]
        threads.append(threading.Thread(target=self.nemesis, daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.plan.active_s + 30)
        self.quiesce()

    def quiesce(self) -> None:
        """Faults off, worker stopped, outbox drained here, dead letters replayed once."""
        self.rig.sim("DELETE", "faults")
        if self.worker is not None:
            self.worker.terminate()
            self.worker.join(5)
            if self.worker.is_alive():
                self.worker.kill()
                self.worker.join(5)
        # Let every create still travelling (slow faults) land before time jumps.
        time.sleep(FAULTS["slow-create"]["latencyMs"] / 1000 + 0.2)
        duties = build_duties(self.services)
        replayed = False
        for _ in range(self.plan.quiesce_rounds):
            self.rig.clock.jump(timedelta(seconds=15))
            for duty in duties:
                self._guard(f"quiescence {duty.name}", lambda d=duty: d.run(Deadline(10)))
            depth, dead = self.outbox_gauges()
            if depth == 0 and dead and not replayed:
                self.dead_lettered.update(replay_all(self.services))
                replayed = True
            elif depth == 0:
                break
        for _ in range(3):
            self.rig.clock.jump(timedelta(seconds=15))
            for duty in duties:
                if duty.name == "reconcile":
                    self._guard("quiescence reconcile", lambda d=duty: d.run(Deadline(10)))

    def outbox_gauges(self) -> tuple[float, float]:
        """Outbox depth and dead letters, as ``/metrics`` shows them."""
        text = self.rig.instances["A"].simulate_get("/metrics", headers=AUTH).text
        gauges = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("cbm_outbox_depth", "cbm_dead_letters"):
                gauges[name] = float(value)
        return gauges.get("cbm_outbox_depth", 0.0), gauges.get("cbm_dead_letters", 0.0)

    def observe(self) -> Observation:
        """Genesys' callbacks and both instances' view of every number."""
        views: dict[str, dict[str, Call]] = {}
        for instance in ("A", "B"):
            views[instance] = {e164: self.call("observer", instance, "find-pending-callbacks",
                                               {"customerNumber": e164}, e164)
                               for e164, _ in NUMBERS}
        # The order the service stored consents and revocations in (only needed where a
        # record-consent and a revoke-consent overlapped, so real time cannot order them).
        stored: dict[str, tuple[int, datetime | None]] = {}
        for call in self.history.calls:
            consent_id = call.get("consentId")
            if call.action in ("record-consent", "revoke-consent") and consent_id:
                raw = self.services.store.consent(NumberKeys.shard(call.e164), consent_id) or {}
                stored[consent_id] = (int(raw.get("seq") or 0), _instant(raw.get("capturedAt")))
        client = redis.Redis.from_url(self.rig.redis.url, decode_responses=True)
        try:
            problems = ledger_problems(client)
        finally:
            client.close()
        return Observation(self.rig.sim("GET", "callbacks")["callbacks"], views,
                           self.dead_lettered, self.rig.rotation, self.errors, stored,
                           problems)


@dataclass
class Observation:
    """What quiescence shows."""

    callbacks: list[dict[str, Any]]
    views: dict[str, dict[str, Call]]
    replayed_tokens: set[str]
    rotation: bool
    errors: list[str]
    #: consentId → (store order, capture instant) of every consent and revocation answered.
    stored: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)
    #: What ``tests.ledger_check`` found inconsistent in the packed ledger.
    ledger: list[str] = field(default_factory=list)


# -- the checker -----------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with the calls that show it."""

    invariant: str
    e164: str
    message: str
    trace: tuple[str, ...]

    def render(self, seed: int) -> str:
        """The violation as the soak prints it."""
        lines = [f"seed {seed}: invariant {self.invariant} on …{self.e164[-4:]}: {self.message}"]
        return "\n".join(lines + [f"    {line}" for line in self.trace])


def _instant(text: str | None) -> datetime | None:
    return parse_instant(text) if text else None


def _in_doubt(call: Call) -> bool:
    """A change Genesys did not confirm in time, answered as possibly made."""
    return call.get("reason") == "UPSTREAM_UNAVAILABLE" and "did not confirm" in call.get("message")


class Checker:
    """Invariants 1-7 of SPEC §4 Lifecycle, as far as each is visible from outside."""

    def __init__(self, history: list[Call], seen: Observation, origin: float) -> None:
        self.calls = [c for c in history if c.ended and c.actor != "observer"]
        self.seen = seen
        self.origin = origin
        self.live: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_id = {c["conversationId"]: c for c in seen.callbacks}
        for callback in seen.callbacks:
            if callback["state"] in LIVE_STATES:
                self.live[callback["callbackNumbers"][0]].append(callback)
        self.violations: list[Violation] = []

    def of(self, e164: str, *actions: str) -> list[Call]:
        """The number's calls of these actions (all when none named)."""
        return [c for c in self.calls if c.e164 == e164 and (not actions or c.action in actions)]

    def flag(self, invariant: str, e164: str, message: str, *, extra: list[str] | None = None,
             focus: tuple[Call, ...] = ()) -> None:
        """Record a violation: the calls it names, then the number's recent history."""
        key = [f"key {c.line(self.origin)}" for c in focus]
        calls = self.of(e164)
        if focus:
            first, last = min(c.started for c in focus), max(c.ended for c in focus)
            calls = [c for c in calls if first - 0.5 <= c.started <= last + 0.5]
        recent = [c.line(self.origin) for c in calls if c not in focus][-TRACE_LINES:]
        self.violations.append(Violation(invariant, e164, message,
                                         tuple((extra or []) + key + recent)))

    def check(self) -> list[Violation]:
        """Every violation, number by number."""
        for e164, _ in NUMBERS:
            self.one_live(e164)
            self.revocation(e164)
            self.accepted_end_live(e164)
            self.held_ids(e164)
            self.derived_keys(e164)
            self.instances_agree(e164)
        for problem in self.seen.ledger:
            self.flag("ledger", "-", problem)
        return self.violations

    def _live_lines(self, e164: str) -> list[str]:
        return [f"live in Genesys: {c['conversationId']} at {c['callbackScheduledTime']} owner "
                f"{c['ownerAgentId']} created {c['createdAt']} token "
                f"{c['data'].get('requestToken', '')}" for c in self.live[e164]]

    def _replayed(self, e164: str) -> bool:
        return any(c["data"].get("requestToken") in self.seen.replayed_tokens
                   for c in self.live[e164])

    # (1) at most one live callback per number.
    def one_live(self, e164: str) -> None:
        """Invariant 1 (5 when a replayed dead letter made the second)."""
        if len(self.live[e164]) > 1:
            self.flag("5" if self._replayed(e164) else "1", e164,
                      f"{len(self.live[e164])} live callbacks", extra=self._live_lines(e164))

    # (2) a revocation holds until a later record-consent captured after it.
    def _lifts(self, record: Call, revoke: Call) -> bool:
        if record.outcome != "RECORDED" or record.ended <= revoke.started:
            return False
        if record.started < revoke.ended:
            # They overlapped: either order is possible, and the one the service stored
            # them in is the one that counts (SPEC §4 Lifecycle 2).
            mine = self.seen.stored.get(record.get("consentId"))
            theirs = self.seen.stored.get(revoke.get("consentId"))
            if mine is None or theirs is None or mine[1] is None or theirs[1] is None:
                return False
            return mine[0] > theirs[0] and mine[1] > theirs[1]
        captured = _instant(record.body.get("consentCapturedAt")) or record.at_end
        # Captured within the revocation's own request time: cannot tell; give it the benefit.
        return captured is not None and captured > revoke.at

    def revocation(self, e164: str) -> None:
        """Invariant 2: no live callback and no accepted create after an unlifted revoke."""
        records = self.of(e164, "record-consent")
        for revoke in self.of(e164, "revoke-consent"):
            if revoke.outcome != "REVOKED":
                continue
            lifts = [r for r in records if self._lifts(r, revoke)]
            for create in self.of(e164, "create-callback"):
                if (create.outcome in ("CREATED", "QUEUED") and create.started > revoke.ended
                        and not create.answer.get("replayed")
                        # A consent overlapping the create may be the one it saw.
                        and not any(r.started < create.ended for r in lifts)):
                    self.flag("2", e164, f"create #{create.seq} answered {create.outcome} after "
                              f"revoke #{revoke.seq} answered REVOKED, with no later consent",
                              focus=(revoke, create))
            for callback in self.live[e164]:
                created = _instant(callback["createdAt"])
                if created is not None and not any(created > r.at for r in lifts):
                    self.flag("5" if self._replayed(e164) else "2", e164,
                              f"callback {callback['conversationId']} live after revoke "
                              f"#{revoke.seq} and not created after a later consent",
                              extra=self._live_lines(e164), focus=(revoke, *lifts))

    # (3) accepted answers end as exactly one live callback at the answered time.
    def _ends(self, e164: str) -> list[Call]:
        # A cancel Genesys did not confirm may have landed (the answer says so): like any
        # operation of unknown outcome, it may or may not have taken effect.
        return [c for c in self.calls if c.e164 == e164 and (
            (c.action == "revoke-consent" and c.outcome == "REVOKED")
            or (c.action == "cancel-callback" and c.outcome == "CANCELLED")
            or (c.action == "cancel-callback" and _in_doubt(c))
            or (c.action == "complete" and c.body.get("callbackId")))]

    def accepted_end_live(self, e164: str) -> None:
        """Invariant 3, and the service's view against Genesys'."""
        accepted = [c for c in self.of(e164, "create-callback", "reschedule-callback")
                    if c.outcome in ACCEPTED and not c.answer.get("replayed")]
        ends = self._ends(e164)

        def ended(answer: Call) -> bool:
            return any(e.ended > answer.started and (e.action == "revoke-consent"
                                                     or e.started > answer.started)
                       for e in ends)

        standing = [a for a in accepted if not ended(a)]
        latest = [a for a in standing if not any(b.started > a.ended for b in accepted)]
        live = self.live[e164]
        if latest and not live:
            self.flag("3", e164, "accepted " + ", ".join(f"#{a.seq} {a.outcome}" for a in latest)
                      + " but no live callback", focus=tuple(latest))
        elif latest and len(live) == 1:
            at = _instant(live[0]["callbackScheduledTime"])
            # A reschedule Genesys did not confirm may have moved it (the answer says so).
            doubted = [_instant(r.body.get("requestedTime")) for r in self.of(
                e164, "reschedule-callback") if _in_doubt(r)
                and r.ended > min(a.started for a in latest)]
            if at not in doubted and not any(
                    _instant(a.get("scheduledTimeUtc")) == at for a in latest):
                self.flag("3", e164, f"live callback at {live[0]['callbackScheduledTime']}, "
                          "answered " + ", ".join(f"#{a.seq} {a.get('scheduledTimeUtc')}"
                                                  for a in latest),
                          extra=self._live_lines(e164), focus=tuple(latest))
        for later in accepted:
            if later.action != "create-callback":
                continue
            # A dead-lettered QUEUED request legitimately ends without a callback.
            open_before = [f for f in accepted if f.outcome != "QUEUED"
                           and later.started > f.ended
                           and not any(e.ended > f.started and e.started < later.ended
                                       for e in ends)]
            if open_before:
                self.flag("3", e164, f"#{later.seq} answered {later.outcome} while the "
                          f"callback of #{open_before[-1].seq} was never cancelled, revoked or "
                          "completed (two callbacks, or one lost)",
                          focus=(open_before[-1], later))
        view = self.seen.views["A"][e164]
        count = int(view.answer.get("pendingCount") or 0)
        shown = view.get("callbackId")
        if len(live) == 1 and (count != 1 or shown != live[0]["conversationId"]):
            self.flag("3", e164, f"Genesys holds {live[0]['conversationId']}; the service "
                      f"shows pendingCount={count} callbackId={shown or '-'}",
                      extra=self._live_lines(e164))
        if not live and count:
            self.flag("3", e164, f"the service shows pendingCount={count} ({shown}) that "
                      "Genesys does not hold live")

    # (4) ids a caller holds keep working after a replacement.
    def held_ids(self, e164: str) -> None:
        """Invariant 4: cancel and reschedule by a held id act on its replacement."""
        producers = {}
        for call in self.calls:
            for name in ("callbackId", "previousCallbackId", "existingCallbackId"):
                if call.get(name) and call.get(name) not in producers:
                    producers[call.get(name)] = call
        ends = self._ends(e164)
        for call in self.of(e164, "cancel-callback", "reschedule-callback"):
            callback_id = str(call.body["callbackId"])
            if call.outcome == "CANCELLED":
                held = self.by_id.get(callback_id)
                if held is not None and held["state"] in LIVE_STATES:
                    self.flag("4", e164, f"cancel #{call.seq} answered CANCELLED but "
                              f"{callback_id} is still live", focus=(call,))
            source = producers.get(callback_id)
            if call.get("reason") != "NOT_FOUND" or source is None:
                continue
            # A callback Genesys completed before the service reconciled it may still be
            # handed out (a DUPLICATE names it until reconciliation reads the end): its end
            # counts whenever it came, as long as it came before this answer.
            completed = any(e.action == "complete" and e.body.get("callbackId") == callback_id
                            and e.started < call.ended for e in ends)
            if not completed and not any(e is not call and e.ended > source.started
                                         and e.started < call.ended for e in ends):
                self.flag("4", e164, f"#{call.seq} {call.action} by {callback_id} (held from "
                          f"#{source.seq}) answered NOT_FOUND, yet nothing ended it",
                          focus=(source, call))

    # (6) keys derived from conversationId never replay an ended callback.
    def derived_keys(self, e164: str) -> None:
        """Invariant 6."""
        for call in self.of(e164, "create-callback"):
            if (not call.answer.get("replayed") or "idempotencyKey" in call.body
                    or "conversationId" not in call.body):
                continue
            callback = self.by_id.get(call.get("callbackId")) or {}
            ended_at = _instant(callback.get("endedAt"))
            if ended_at is not None and ended_at < call.at:
                self.flag("6", e164, f"#{call.seq} replayed {call.outcome} "
                          f"{call.get('callbackId')}, which ended at {callback['endedAt']}",
                          focus=(call,))

    # (7) two instances mid-rotation see the same claims, window and daily count.
    def instances_agree(self, e164: str) -> None:
        """Invariant 7 (and the daily cap, which a rotation must not reset)."""
        label = "7" if self.seen.rotation else "view"
        fields = ("outcome", "pendingCount", "callbackId", "scheduledTimeUtc")
        a, b = self.seen.views["A"][e164], self.seen.views["B"][e164]
        if [a.get(f) for f in fields] != [b.get(f) for f in fields]:
            self.flag(label, e164, "instances disagree: A " + " ".join(a.get(f) for f in fields)
                      + " / B " + " ".join(b.get(f) for f in fields))
        created = [c for c in self.of(e164, "create-callback")
                   if c.outcome in ("CREATED", "QUEUED") and not c.answer.get("replayed")]
        day = timedelta(hours=24)
        if len(created) > CAP and created[CAP].at - created[0].at < day:
            self.flag("7" if self.seen.rotation else "cap", e164,
                      f"{len(created)} creates accepted in a day; the cap is {CAP}")


# -- one seed --------------------------------------------------------------------------


@dataclass
class Result:
    """One seed's outcome."""

    seed: int
    rotation: bool
    violations: list[Violation]
    calls: int
    errors: list[str]
    seconds: float

    def report(self) -> str:
        """Every violation, then harness errors."""
        lines = [v.render(self.seed) for v in self.violations]
        lines += [f"seed {self.seed}: harness error: {e}" for e in self.errors]
        return "\n".join(lines)


def run_seed(seed: int, plan: Plan | None = None, directory: Path | None = None) -> Result:
    """Run one seed from nothing to a checked quiescence."""
    plan = plan or Plan()
    started = time.monotonic()
    rotation = seeded(seed, "rotation").random() < 0.5
    work = directory or Path(tempfile.mkdtemp(prefix=f"soak-{seed}-"))
    try:
        with rig(work, rotation) as the_rig:
            workload = Workload(seed, the_rig, plan)
            try:
                workload.run()
                seen = workload.observe()
            finally:
                if workload.worker is not None and workload.worker.is_alive():
                    workload.worker.kill()
                    workload.worker.join(5)
            violations = Checker(workload.history.calls, seen, the_rig.origin).check()
            return Result(seed, rotation, violations, len(workload.history.calls),
                          seen.errors, time.monotonic() - started)
    finally:
        if directory is None:
            shutil.rmtree(work, ignore_errors=True)



# -- the command (bench/soak) ----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run seeds in order; print ``violations: 0`` or the first seed that breaks."""
    parser = argparse.ArgumentParser(prog="bench/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=1, help="the first seed")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every seed and summarise, instead of stopping at the first")
    args = parser.parse_args(argv)
    # Product log lines would drown the report; the violations say what happened.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.CRITICAL)
    broken: dict[int, Result] = {}
    for seed in range(args.start, args.start + args.seeds):
        result = run_seed(seed)
        kinds = Counter(v.invariant for v in result.violations)
        print(f"seed {seed}: {len(result.violations)} violation(s) {dict(sorted(kinds.items()))}"
              f" in {result.calls} calls, rotation={result.rotation}, {result.seconds:.1f}s"
              + (f", {len(result.errors)} harness error(s)" if result.errors else ""),
              flush=True)
        if result.violations or result.errors:
            broken[seed] = result
            if not args.keep_going:
                break
            # Interleavings do not replay from the seed: what broke is shown as it happens.
            print(result.report(), flush=True)
    if not broken:
        print("violations: 0")
        return 0
    first = min(broken)
    print(f"\nfirst seed that breaks: {first}\n{broken[first].report()}")
    if args.keep_going:
        total = Counter(v.invariant for r in broken.values() for v in r.violations)
        seeds_by = {inv: sorted(s for s, r in broken.items()
                                if any(v.invariant == inv for v in r.violations))
                    for inv in total}
        print(f"\nbroken seeds: {len(broken)} of {args.seeds}")
        for invariant, count in sorted(total.items()):
            print(f"invariant {invariant}: {count} violation(s) in seeds {seeds_by[invariant]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
