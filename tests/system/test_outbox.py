"""Never lost: queued callbacks are delivered by the worker, found again rather than created
twice, moved when late, dead-lettered (and replayable) when Genesys refuses them."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from middleware.__main__ import run
from middleware.app import Services, build_duties, build_services
from middleware.deadline import Deadline
from middleware.genesys.client import new_session
from middleware.store import connect
from middleware.worker.outbox import RetryPolicy
from tests.conftest import RedisServer, Service, Simulator, create_body, service_env, when


def services_for(service: Service, redis_server: RedisServer, **env: str) -> Services:
    """The worker's collaborators, on the same Redis, simulator and clock as ``service``."""
    from middleware.config import Config
    config = Config.from_env(service_env(redis_server.url, service.config.genesys_api_url,
                                         OUTBOX_BACKOFF_BASE_MS="1", OUTBOX_BACKOFF_CAP_MS="1",
                                         **env))
    return build_services(config, redis_client=connect(redis_server.url, 1.0),
                          http=new_session(), clock=service.clock)


def deliver(services: Services, rounds: int = 1) -> int:
    [outbox] = [d for d in build_duties(services) if d.name == "outbox"]
    done = 0
    for _ in range(rounds):
        done += outbox.run(Deadline(10))
        time.sleep(0.01)
    return done


def queue_one(service: Service, sim: Simulator, **fields: Any) -> dict[str, Any]:
    sim.control("PUT", "faults", {"status": 503, "count": 1,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    answer = dict(service.action("create-callback", create_body(**fields)).json)
    assert answer["outcome"] == "QUEUED", answer
    return answer


def test_worker_delivers_queued_callback_once_genesys_is_back(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """The queued request becomes exactly one callback, with its consent, and the window now
    names it."""
    answer = queue_one(service, sim)
    service.clock.advance(timedelta(seconds=10))
    assert deliver(services_for(service, redis_server)) == 1
    [held] = sim.callbacks()
    assert held["data"]["consentId"] == answer["consentId"]
    assert held["callbackScheduledTime"] == when("2026-11-23T19:00:00.000Z")
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert (found["pendingCount"], found["callbackId"]) == (1, held["conversationId"])
    assert deliver(services_for(service, redis_server)) == 0
    assert len(sim.callbacks()) == 1


def test_create_that_may_have_run_is_found_not_repeated(
        make_service: Any, sim: Simulator, redis_server: RedisServer) -> None:
    """A create that timed out after Genesys got it is found by its request token: adopted,
    never created a second time."""
    service = make_service(REQUEST_DEADLINE_MS="800")
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1,
                                  "pathPrefix": "/api/v2/conversations/callbacks",
                                  "method": "POST"})
    answer = service.action("create-callback", create_body()).json
    assert answer["outcome"] == "QUEUED"
    time.sleep(1.2)  # the simulator finishes the slow create meanwhile
    assert len(sim.callbacks()) == 1
    service.clock.advance(timedelta(seconds=10))
    assert deliver(services_for(service, redis_server)) == 1
    assert len(sim.callbacks()) == 1
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert found["callbackId"] == sim.callbacks()[0]["conversationId"]


def test_late_queued_callback_moves_to_next_valid_time(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Delivered after its time passed, the callback is made at the next valid instant."""
    queue_one(service, sim, requestedTime=when("2026-11-23T18:30:00Z"))
    service.clock.advance(timedelta(hours=6))  # 00:00 UTC: 16:00 in San Francisco
    assert deliver(services_for(service, redis_server)) == 1
    [held] = sim.callbacks()
    assert held["callbackScheduledTime"] == when("2026-11-24T00:05:00.000Z")


def test_refused_create_is_dead_lettered_and_replayable(
        service: Service, sim: Simulator, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A 400 from Genesys is not retried: the entry is a dead letter, listed by the command,
    replayed later and delivered."""
    queue_one(service, sim)
    sim.control("PUT", "faults", {"status": 400, "count": 1,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    services = services_for(service, redis_server)
    service.clock.advance(timedelta(seconds=10))
    assert deliver(services) == 0
    assert [e.attempts for e in services.store.dead_letters()] == [1]
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert found["outcome"] == "NONE"
    env = service_env(redis_server.url, service.config.genesys_api_url)
    assert run(["dead-letters", "list"], env, service.clock, own_logging=False) == 0
    listed = capsys.readouterr().out
    assert "1 dead letter(s)" in listed and "400" in listed
    assert run(["dead-letters", "replay", "--all"], env, service.clock,
               own_logging=False) == 0
    assert "replayed 1 of 1" in capsys.readouterr().out
    assert deliver(services) == 1
    assert len(sim.callbacks()) == 1 and services.store.dead_letters() == []


def test_attempts_exhausted_go_to_dead_letters(service: Service, sim: Simulator,
                                               redis_server: RedisServer) -> None:
    """Genesys down for every attempt: after OUTBOX_MAX_ATTEMPTS the entry is a dead letter."""
    queue_one(service, sim)
    sim.control("PUT", "faults", {"status": 503,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    services = services_for(service, redis_server, OUTBOX_MAX_ATTEMPTS="3")
    for _ in range(3):
        service.clock.advance(timedelta(seconds=10))
        deliver(services)
    assert [e.attempts for e in services.store.dead_letters()] == [3]
    assert sim.callbacks() == []


def test_revoked_consent_cancels_a_queued_callback(service: Service, sim: Simulator,
                                                   redis_server: RedisServer) -> None:
    """Revoking before delivery cancels the queued request: the worker creates nothing."""
    queue_one(service, sim)
    revoked = service.action("revoke-consent", {"customerNumber": "+14155552671"}).json
    assert revoked["cancelledCount"] == 1
    service.clock.advance(timedelta(seconds=10))
    assert deliver(services_for(service, redis_server)) == 0
    assert sim.callbacks() == []


def test_backoff_is_capped_full_jitter_respecting_retry_after() -> None:
    """Delays lie in [0, min(cap, base*2^n)], and never under Retry-After."""
    policy = RetryPolicy(10, timedelta(seconds=1), timedelta(seconds=30))
    for attempt in range(12):
        delay = policy.next_delay(attempt, None).total_seconds()
        assert 0 <= delay <= min(30, 2 ** attempt)
    assert policy.next_delay(0, 42).total_seconds() == 42


def _journal_only(services: Services, token: str, create_in_genesys: bool) -> None:
    """What a worker process leaves behind when killed between journal and outcome."""
    from middleware.actions.answers import create_command
    from middleware.ledger.lifecycle import epoch_ms
    from middleware.ledger.records import LedgerRecord
    from middleware.rules.number import normalise
    number = normalise("+14155552671", "US")
    assert number is not None
    now = services.clock.now()
    scheduled = now + timedelta(hours=1)
    command = create_command(
        {"queueId": "b1000000-0000-4000-8000-000000000001"}, number,
        "a1000000-0000-4000-8000-000000000001", scheduled.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        token, "c0")
    services.lifecycle.journal(number, token, LedgerRecord(
        callback_id=f"queued-{token}", number_key="", scheduled_ms=epoch_ms(scheduled),
        agent_id="a1000000-0000-4000-8000-000000000001",
        queue_id="b1000000-0000-4000-8000-000000000001", state="CREATING", acd_id="",
        request_token=token, created_ms=epoch_ms(now), consent_id="c0", e164=number.e164),
        payload={"command": command, "ledgerId": f"queued-{token}", "e164": number.e164,
                 "mayHaveRun": True, "acceptedMs": epoch_ms(now)},
        resolve_after_ms=epoch_ms(now) + 10_000)
    if create_in_genesys:
        services.genesys.create_callback(command, Deadline(5))


def test_crash_after_genesys_created_is_adopted_not_repeated(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """A process killed after Genesys created the callback but before recording it: the
    window stays held, and the worker adopts that callback instead of creating another."""
    services = services_for(service, redis_server)
    _journal_only(services, "a" * 32, create_in_genesys=True)
    busy = service.action("create-callback", create_body(requestedTime=None)).json
    assert busy["outcome"] != "CREATED"
    service.clock.advance(timedelta(seconds=15))
    assert deliver(services) == 1
    assert len(sim.callbacks()) == 1
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert found["callbackId"] == sim.callbacks()[0]["conversationId"]


def test_crash_before_genesys_saw_it_is_created_once(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Killed before the create left: the worker finds nothing and creates it, once."""
    services = services_for(service, redis_server)
    _journal_only(services, "b" * 32, create_in_genesys=False)
    service.clock.advance(timedelta(seconds=15))
    assert deliver(services) == 1
    assert len(sim.callbacks()) == 1
    assert sim.callbacks()[0]["data"]["requestToken"] == "b" * 32
