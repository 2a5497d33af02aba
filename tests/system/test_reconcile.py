"""Reconciliation at size: callbacks that ended in Genesys leave the window through the
analytics interval query, at a cost that does not grow with the pending count."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any, cast

import redis
from redis.commands.core import Script

from middleware.app import Services, build_services
from middleware.deadline import Deadline
from middleware.genesys.client import new_session
from middleware.ledger.records import LedgerRecord
from middleware.rules.number import CustomerNumber
from middleware.store import SHARDS
from tests.conftest import (
    DEMO_AGENT,
    DEMO_QUEUE,
    T0,
    RedisServer,
    Service,
    Simulator,
    create_body,
    pending_total,
    when,
)
from tests.system.test_lifecycle import duty, pending_count, worker

PENDING_AT_SIZE = 100_000
ENDED = ("+14155550101", "+14155550102", "+14155550103", "+14155550104", "+14155550105")


class _Deferred:
    """A transaction the store opens: its commands join the shared batch."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def execute(self) -> list[Any]:
        return []


class _Batching:
    """The Redis client under the product's store for the fill: every command it sends is
    queued on one pipeline, sent every few thousand records."""

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


def fill(service: Service, redis_server: RedisServer, count: int) -> None:
    """``count`` pending callbacks in the ledger, written by ``Lifecycle.keep`` in big
    pipelines (Genesys never heard of them: only the ledger's size matters here)."""
    real = redis_server.client()
    batch = _Batching(real)
    filler = build_services(service.config, redis_client=cast(redis.Redis, batch),
                            http=new_session(), clock=service.clock)
    rnd = random.Random(13)  # noqa: S311 (fill data, not keys)
    now_ms = int(service.clock.now().timestamp() * 1000)
    for i in range(count):
        e164 = f"+1{2000000000 + i * 7:010d}"
        callback_id = f"{rnd.getrandbits(128):032x}"
        filler.lifecycle.keep(CustomerNumber(e164, "US", ("America/New_York",)), callback_id,
                              LedgerRecord(
            callback_id=callback_id, number_key="", agent_id=DEMO_AGENT, queue_id=DEMO_QUEUE,
            scheduled_ms=now_ms + rnd.randrange(5 * 60_000, 47 * 3_600_000), state="PENDING",
            acd_id=callback_id, request_token=callback_id, created_ms=now_ms, e164=e164))
        if len(batch.pipe) >= 20_000:
            batch.pipe.execute()
    batch.pipe.execute()
    assert pending_total(real) >= count


def genesys_requests(sim: Simulator) -> int:
    """Every request the simulator counted (token fetches included)."""
    return sum(int(n) for n in sim.stats()["requests"].values())


def callback_reads(sim: Simulator) -> int:
    """How many single-callback GETs the simulator counted."""
    return sum(int(n) for route, n in sim.stats()["requests"].items()
               if route.startswith("GET /api/v2/conversations/callbacks/{"))


def ended_in_genesys(service: Service, sim: Simulator, numbers: tuple[str, ...],
                     at: str | None = None) -> None:
    """Create a callback for each number, then end it in Genesys (at ``at``, or now)."""
    for number in numbers:
        created = service.action("create-callback", create_body(
            customerNumber=number, requestedTime=when("2026-11-23T19:00:00Z"))).json
        assert created["outcome"] == "CREATED", created
        sim.control("PATCH", f"callbacks/{created['callbackId']}",
                    {"state": "completed", **({"at": at} if at else {})})


def test_ended_callbacks_leave_the_window_at_100k_pending_within_budget(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """With 100,000 pending callbacks, the handful that ended in Genesys leave the window
    within two rounds, and the rounds use at most a quarter of the rate budget."""
    started = time.monotonic()
    fill(service, redis_server, PENDING_AT_SIZE)
    ended_in_genesys(service, sim, ENDED)
    services = worker(service, redis_server)
    reconcile = duty(services, "reconcile")
    before = genesys_requests(sim)
    rounds = 0
    while any(pending_count(service, n) for n in ENDED) and rounds < 2:
        reconcile()
        rounds += 1
        service.clock.advance(timedelta(seconds=services.config.reconcile_interval_s))
    used = genesys_requests(sim) - before
    for number in ENDED:
        found = service.action("find-pending-callbacks", {"customerNumber": number}).json
        assert found["outcome"] == "NONE", found
    config = services.config
    budget = config.genesys_rate_limit_per_min * rounds * config.reconcile_interval_s / 60
    assert used <= budget / 4, (used, budget)
    # Everything else stays pending: nothing was closed that Genesys did not end.
    assert pending_total(service.redis) == PENDING_AT_SIZE
    print(f"\n100k pending: {rounds} round(s), {used} Genesys requests "
          f"(quarter budget {budget / 4:.0f}), {time.monotonic() - started:.1f} s")


def test_a_restart_resumes_from_the_cursor_kept_in_redis(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """A pass that needs more requests than a round allows stops where it is; a new worker
    (a restart) goes on from there, and the pass's end moves the cursor."""
    numbers = tuple(f"+1415555{n:04d}" for n in range(1000, 1004))
    ended_in_genesys(service, sim, numbers)
    first = worker(service, redis_server, RECONCILE_BATCH_SIZE="1")
    duty(first, "reconcile")()  # one request: the older piece of the interval (no hits)
    progress = first.store.reconcile_pass()
    assert progress is not None and len(progress["todo"]) == 1, progress
    assert all(pending_count(service, n) == 1 for n in numbers)
    before = genesys_requests(sim)
    again = worker(service, redis_server, RECONCILE_BATCH_SIZE="1")
    assert duty(again, "reconcile")() == len(numbers)
    assert genesys_requests(sim) - before == 1  # only the piece left, not a new pass
    assert all(pending_count(service, n) == 0 for n in numbers)
    overlap_ms = 15 * 60_000
    assert again.store.reconcile_pass() == {
        "floorMs": int(T0.timestamp() * 1000) - overlap_ms, "todo": []}


def test_a_conversation_ended_before_the_cursor_is_not_read_again(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Once a pass saw ends up to now, a conversation whose end lies further back than the
    overlap is not read again: the pages stop at the cursor, round after round."""
    services = worker(service, redis_server)
    reconcile = duty(services, "reconcile")
    ended_in_genesys(service, sim, ("+14155553001",))
    assert reconcile() == 1
    floor = services.store.reconcile_pass()
    assert floor is not None
    # Ended three hours ago, seen only now (an ingestion delay beyond the overlap).
    late = (T0 - timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    ended_in_genesys(service, sim, ("+14155553002",), at=late)
    for _ in range(3):
        before = genesys_requests(sim)
        assert reconcile() == 0
        assert genesys_requests(sim) - before == 2  # one page of each piece, never more
    assert pending_count(service, "+14155553002") == 1
    assert services.store.reconcile_pass() == floor


def test_an_ended_conversation_the_ledger_does_not_hold_is_ignored(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """A callback on our queue that ended in Genesys but that the ledger does not hold
    (created by someone else), or holds closed already, changes nothing."""
    services = worker(service, redis_server)
    ended_in_genesys(service, sim, ("+14155553101",))
    foreign = services.genesys.call("POST", "/api/v2/conversations/callbacks", Deadline(5),
                                    body={"routingData": {"queueId": DEMO_QUEUE},
                                          "callbackNumbers": ["+14155553102"]})
    sim.control("PATCH", f"callbacks/{foreign['conversation']['id']}", {"state": "completed"})
    reconcile = duty(services, "reconcile")
    assert reconcile() == 1
    assert reconcile() == 0  # both read again within the overlap: left alone
    assert services.lifecycle.record(foreign["conversation"]["id"]) is None


def test_a_reschedule_whose_patch_never_answered_takes_the_time_genesys_holds(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """The PATCH landed, every answer was lost until the deadline: the ledger keeps the old
    time, flagged in doubt; the worker's one-by-one read takes the time Genesys holds."""
    created = service.action("create-callback", create_body()).json
    sim.control("PUT", "faults", {"status": 504, "count": 1000, "phase": "after",
                                  "method": "PATCH", "pathPrefix": "/api/v2/conversations"})
    answer = service.action("reschedule-callback", {
        "callbackId": created["callbackId"],
        "requestedTime": when("2026-11-23T20:00:00Z")}).json
    assert answer["outcome"] == "REJECTED", answer
    sim.control("DELETE", "faults")
    [held] = [c for c in sim.callbacks() if c["conversationId"] == created["callbackId"]]
    services = worker(service, redis_server)
    record = services.lifecycle.record(created["callbackId"])
    assert record is not None and record.reschedule_asked_ms > 0
    service.clock.advance(timedelta(seconds=30))
    duty(services, "reconcile")()
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert found["scheduledTimeUtc"][:19] == held["callbackScheduledTime"][:19], found
    # Read back again for a while (a PATCH Genesys holds may land later), then settled.
    assert in_doubt_due(services, 2**62) == [created["callbackId"]]
    service.clock.advance(timedelta(minutes=3))
    duty(services, "reconcile")()
    record = services.lifecycle.record(created["callbackId"])
    assert record is not None and record.reschedule_asked_ms == 0
    assert in_doubt_due(services, 2**62) == []


def in_doubt_due(services: Services, now_ms: int) -> list[str]:
    """The in-doubt callbacks due for a read by ``now_ms``, over every shard."""
    return [cid for shard in SHARDS for cid in services.store.in_doubt_due(shard, now_ms, 10)]


def test_in_doubt_reads_stay_within_their_share(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Many changes in doubt at once: a round reads at most a third of its budget of them
    one by one, the rest next rounds."""
    services: Services = worker(service, redis_server, RECONCILE_BATCH_SIZE="9")
    ids = []
    for n in range(6):
        created = service.action("create-callback", create_body(
            customerNumber=f"+1415555{4000 + n:04d}")).json
        ids.append(created["callbackId"])
        record = services.lifecycle.record(created["callbackId"])
        assert record is not None
        services.lifecycle.ask_reschedule(record)
    service.clock.advance(timedelta(seconds=30))
    before = callback_reads(sim)
    duty(services, "reconcile")()
    assert callback_reads(sim) - before == 3
    # The three read are due again later (still watched); the other three are due now.
    assert len(in_doubt_due(services, int(service.clock.now().timestamp() * 1000))) == 3
