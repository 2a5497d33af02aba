"""A dead letter replayed like a new request (SPEC §4 Lifecycle 5 and Worker): its consent,
the number's window and its daily cap are checked again, and one that cannot be put back
stays a dead letter with the reason, never skipped in silence."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from middleware.__main__ import run
from middleware.deadline import Deadline
from middleware.ledger.lifecycle import FORGET_AFTER
from tests.conftest import RedisServer, Service, Simulator, create_body, service_env
from tests.ledger_check import ledger_problems
from tests.memory import expire_after
from tests.system.test_lifecycle import (
    CALLBACKS,
    NUMBER,
    dead_letter_one,
    duty,
    live,
    worker,
)


def replay_cli(service: Service, redis_server: RedisServer) -> int:
    env = service_env(redis_server.url, service.config.genesys_api_url)
    return run(["dead-letters", "replay", "--all"], env, service.clock, own_logging=False)


def test_a_dead_letter_replayed_after_its_consent_went_stale_is_refused_and_kept(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """A new request relying on a consent captured more than CONSENT_MAX_AGE_HOURS ago is
    CONSENT_STALE (SPEC §4 Consent), and so is a dead letter replayed that late: nothing is
    created, it stays a dead letter saying why, and a new create with fresh consent goes
    through as the number's one callback."""
    services = worker(service, redis_server)
    dead_letter_one(service, sim, services)
    service.clock.advance(timedelta(hours=service.config.consent_max_age_hours + 1))
    assert replay_cli(service, redis_server) == 0
    [kept] = services.store.dead_letters()
    assert "CONSENT_STALE" in kept.error, kept.error
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    assert live(sim) == []
    fresh = service.action("create-callback", create_body(requestedTime=None)).json
    assert fresh["outcome"] == "CREATED", fresh
    assert len(live(sim)) == 1
    assert ledger_problems(service.redis) == []


def test_a_replayed_dead_letter_counts_towards_the_daily_cap(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """At most MAX_CALLBACKS_PER_NUMBER_PER_DAY callbacks are created for a number in any
    24 hours (SPEC §4 Number), a replay included: one replayed two days after it was
    accepted (its own count aged out) counts again, so only two more creates go through
    that day, not three."""
    services = worker(service, redis_server)
    dead_letter_one(service, sim, services)
    service.clock.advance(timedelta(days=2))
    assert replay_cli(service, redis_server) == 0
    assert services.store.dead_letters() == []
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    [replayed] = live(sim)
    assert service.action("cancel-callback", {"callbackId": replayed["conversationId"]}
                          ).json["outcome"] == "CANCELLED"
    outcomes = []
    for _ in range(3):
        service.clock.advance(timedelta(minutes=10))
        answer = service.action("create-callback", create_body(
            requestedTime=None, conversationId=str(uuid.uuid4()))).json
        outcomes.append((answer["outcome"], answer["reason"]))
        if answer["outcome"] == "CREATED":
            assert service.action("cancel-callback", {"callbackId": answer["callbackId"]}
                                  ).json["outcome"] == "CANCELLED"
    assert outcomes == [("CREATED", "OK")] * 2 + [("REJECTED", "TOO_MANY_REQUESTS_FOR_NUMBER")]


def test_a_dead_letter_whose_record_is_gone_is_refused_and_kept(
        service: Service, sim: Simulator, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A dead letter whose record has expired (its time and FORGET_AFTER passed, on Redis'
    clock, simulated here) cannot be put back: the replay says why and keeps it, rather
    than skipping it in silence and failing."""
    services = worker(service, redis_server)
    dead_letter_one(service, sim, services)
    elapsed = FORGET_AFTER + timedelta(days=30)
    service.clock.advance(elapsed)
    expire_after(service.redis, elapsed)
    assert replay_cli(service, redis_server) == 0
    assert "refused, stays a dead letter: GONE" in capsys.readouterr().out
    [kept] = services.store.dead_letters()
    assert "GONE" in kept.error
    assert live(sim) == []


def test_the_token_search_of_a_create_accepted_weeks_ago_is_one_genesys_takes(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """The search for a create that may have run (by its request token) asks Genesys for at
    most the 31 days the details query takes with a filter, however long ago the create
    was accepted: a longer interval is refused (400) on every attempt."""
    services = worker(service, redis_server)
    now = service.clock.now()
    assert services.genesys.find_callback_by_token(
        NUMBER, uuid.uuid4().hex, now - timedelta(days=40), now, Deadline(5)) is None


def created_and_cancelled(service: Service) -> None:
    answer = service.action("create-callback", create_body(
        requestedTime=None, conversationId=str(uuid.uuid4()))).json
    assert answer["outcome"] == "CREATED", answer
    assert service.action("cancel-callback", {"callbackId": answer["callbackId"]}
                          ).json["outcome"] == "CANCELLED"


def test_a_replay_within_24h_is_not_blocked_by_its_own_count(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """A dead letter replayed within a day of its acceptance holds its one slot of the daily
    cap already (the same token): after two more creates the number has three counted and
    two callbacks made, and the replay goes through as the third, not refused as a
    fourth; the cap then still holds."""
    services = worker(service, redis_server)
    dead_letter_one(service, sim, services)
    for _ in range(2):
        service.clock.advance(timedelta(minutes=10))
        created_and_cancelled(service)
    service.clock.advance(timedelta(minutes=10))
    assert replay_cli(service, redis_server) == 0
    left = services.store.dead_letters()
    assert left == [], [d.error for d in left]
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    assert len(live(sim)) == 1
    # And still capped: three tokens in 24 h.
    answer = service.action("create-callback", create_body(
        requestedTime=None, conversationId=str(uuid.uuid4()))).json
    assert answer["reason"] in ("TOO_MANY_REQUESTS_FOR_NUMBER", "DUPLICATE_PENDING"), answer


ANALYTICS = "/api/v2/analytics/conversations/details/query"


def test_a_refused_search_does_not_drop_a_revoked_request_whose_create_landed(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Once revoke-consent has answered, nothing leaves a live callback (SPEC §4 Lifecycle
    2), a create in flight included: a queued create whose attempt landed unanswered (504
    after) is revoked while queued, the worker next reaches it after its watch has ended,
    and the token search is refused once (400). The entry is kept and searched again, and
    what landed is disconnected; the round does not stop at it."""
    services = worker(service, redis_server)
    sim.control("PUT", "faults", {"status": 503, "count": 1, "pathPrefix": CALLBACKS})
    assert service.action("create-callback", create_body()).json["outcome"] == "QUEUED"
    sim.control("PUT", "faults", {"status": 504, "count": 1, "phase": "after",
                                  "method": "POST", "pathPrefix": CALLBACKS})
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    assert len(live(sim)) == 1  # it landed; the worker does not know
    assert service.action("revoke-consent", {"customerNumber": "+14155552671"}
                          ).json["outcome"] == "REVOKED"
    service.clock.advance(timedelta(minutes=20))
    sim.control("PUT", "faults", {"status": 400, "count": 1, "pathPrefix": ANALYTICS})
    duty(services, "outbox")()
    for _ in range(3):
        service.clock.advance(timedelta(minutes=2))
        duty(services, "outbox")()
        duty(services, "reconcile")()
    assert live(sim) == [], live(sim)
