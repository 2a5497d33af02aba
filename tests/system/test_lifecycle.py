"""A callback's life under operations that meet: each test reproduces one way a customer was
called after revoking, called twice, or left without the callback they were promised."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from middleware.__main__ import run
from middleware.app import Services, build_duties, build_services
from middleware.config import Config
from middleware.deadline import Deadline
from middleware.genesys.client import new_session
from middleware.store import SHARDS, connect
from tests.conftest import (
    AUTH,
    T0,
    TEST_REDIS,
    RedisServer,
    Service,
    Simulator,
    create_body,
    service_env,
    when,
)
from tests.faultproxy import FaultProxy

NUMBER = "+14155552671"
ADA, BOB = (f"a1000000-0000-4000-8000-0000000000{n:02d}" for n in (1, 2))
CALLBACKS = "/api/v2/conversations/callbacks"


def worker(service: Service, redis_server: RedisServer, **env: str) -> Services:
    """The worker's collaborators on the service's Redis, simulator and clock."""
    config = Config.from_env(service_env(redis_server.url, service.config.genesys_api_url,
                                         OUTBOX_BACKOFF_BASE_MS="1", OUTBOX_BACKOFF_CAP_MS="1",
                                         **env))
    return build_services(config, redis_client=connect(redis_server.url, 1.0),
                          http=new_session(), clock=service.clock)


def duty(services: Services, name: str) -> Callable[[], int]:
    [found] = [d for d in build_duties(services) if d.name == name]
    return lambda: found.run(Deadline(10))


def live(sim: Simulator) -> list[dict[str, Any]]:
    return [c for c in sim.callbacks() if c["state"] == "scheduled"]


def pending_count(service: Service, number: str = NUMBER) -> int:
    found = service.action("find-pending-callbacks", {"customerNumber": number}).json
    return int(found.get("pendingCount") or 0)


def revoke(service: Service, number: str = NUMBER) -> dict[str, Any]:
    return dict(service.action("revoke-consent", {"customerNumber": number}).json)


def dead_letter_one(service: Service, sim: Simulator, services: Services) -> None:
    """A create queued in an outage, then refused by Genesys: a dead letter."""
    sim.control("PUT", "faults", {"status": 503, "count": 1, "pathPrefix": CALLBACKS})
    assert service.action("create-callback", create_body()).json["outcome"] == "QUEUED"
    sim.control("PUT", "faults", {"status": 400, "count": 1, "pathPrefix": CALLBACKS})
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    assert len(services.store.dead_letters()) == 1


def replay_all(service: Service, redis_server: RedisServer) -> None:
    env = service_env(redis_server.url, service.config.genesys_api_url)
    assert run(["dead-letters", "replay", "--all"], env, service.clock, own_logging=False) == 0


def test_revoke_during_create_leaves_no_live_callback(service: Service, sim: Simulator) -> None:
    """#1 A revoke answered while a create is past its consent check: the create does not
    leave a live callback."""
    sim.control("PUT", "faults", {"latencyMs": 700, "count": 1, "method": "GET",
                                  "pathPrefix": "/api/v2/routing/queues"})
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(
        dict(service.action("create-callback", create_body()).json)))
    thread.start()
    time.sleep(0.35)
    assert revoke(service)["outcome"] == "REVOKED"
    thread.join()
    assert answers[0]["outcome"] not in ("CREATED", "QUEUED"), answers[0]
    assert answers[0]["reason"] == "CONSENT_REVOKED"
    assert live(sim) == []


def test_revoke_that_could_not_disconnect_is_finished_by_the_worker(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """#1 Genesys is down when the revocation answers: the worker disconnects the callback
    it left, so the revoked number keeps none."""
    assert service.action("create-callback", create_body()).json["outcome"] == "CREATED"
    sim.control("PUT", "faults", {"status": 503, "count": 1000,
                                  "pathPrefix": f"{CALLBACKS}/bulk/disconnect"})
    answer = revoke(service)
    assert (answer["outcome"], answer["reason"]) == ("REVOKED", "UPSTREAM_UNAVAILABLE"), answer
    assert len(live(sim)) == 1
    sim.control("DELETE", "faults")
    duty(worker(service, redis_server), "reconcile")()
    assert live(sim) == []
    assert pending_count(service) == 0


def test_a_revoked_callback_genesys_still_holds_is_not_rescheduled_nor_doubled(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariants 1-3: Genesys is down when the revocation answers. The callback it could
    not disconnect is cancelled here at once: a reschedule by its id answers NOT_FOUND
    (never RESCHEDULED for a callback the worker will disconnect), find-pending shows none,
    and after a new consent no second callback is created beside it until the worker's
    disconnect lands; then a create works, and the number has one live callback."""
    created = service.action("create-callback", create_body()).json
    assert created["outcome"] == "CREATED"
    sim.control("PUT", "faults", {"status": 503, "count": 1000,
                                  "pathPrefix": f"{CALLBACKS}/bulk/disconnect"})
    answer = revoke(service)
    assert (answer["outcome"], answer["reason"]) == ("REVOKED", "UPSTREAM_UNAVAILABLE"), answer
    moved = service.action("reschedule-callback", {
        "callbackId": created["callbackId"], "requestedTime": when("2026-11-23T20:00:00Z")}).json
    assert (moved["outcome"], moved["reason"]) == ("REJECTED", "NOT_FOUND"), moved
    assert pending_count(service) == 0
    service.clock.advance(timedelta(seconds=1))
    assert service.action("record-consent", {
        "customerNumber": NUMBER, "consentSource": "IVR_KEYPRESS"}).json["outcome"] == "RECORDED"
    blocked = service.action("create-callback", create_body()).json
    assert (blocked["outcome"], blocked["reason"]) == ("REJECTED", "UPSTREAM_UNAVAILABLE")
    assert len(live(sim)) == 1
    sim.control("DELETE", "faults")
    duty(worker(service, redis_server), "reconcile")()
    assert live(sim) == []
    again = service.action("create-callback", create_body()).json
    assert again["outcome"] == "CREATED", again
    assert [c["conversationId"] for c in live(sim)] == [again["callbackId"]]


def test_consent_stored_before_a_revocation_never_lifts_it(service: Service,
                                                           sim: Simulator) -> None:
    """#2 A consent stating a capture time a little ahead, then a revocation: a create is
    refused (revocations are ordered by when they were stored)."""
    ahead = (T0 + timedelta(minutes=3)).isoformat()
    recorded = service.action("record-consent", {
        "customerNumber": NUMBER, "consentCapturedAt": ahead, "consentSource": "IVR_KEYPRESS",
        "consentText": "Press 1 to be called back"}).json
    assert recorded["outcome"] == "RECORDED"
    revoke(service)
    answer = service.action("create-callback", create_body()).json
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "CONSENT_REVOKED")
    assert sim.callbacks() == []


def test_replayed_dead_letter_after_revoke_is_not_created(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """#3 A dead letter replayed after the customer revoked: nothing is created."""
    services = worker(service, redis_server)
    dead_letter_one(service, sim, services)
    revoke(service)
    replay_all(service, redis_server)
    [kept] = services.store.dead_letters()
    assert "CONSENT_REVOKED" in kept.error
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    assert live(sim) == []
    assert pending_count(service) == 0


def test_replayed_dead_letter_passes_the_duplicate_check(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """#4 A new callback was made after the dead letter left the window: replaying it does
    not make a second one."""
    services = worker(service, redis_server)
    dead_letter_one(service, sim, services)
    assert service.action("create-callback", create_body()).json["outcome"] == "CREATED"
    replay_all(service, redis_server)
    [kept] = services.store.dead_letters()
    assert "DUPLICATE_PENDING" in kept.error
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    assert pending_count(service) == 1
    assert len(live(sim)) == 1


def test_owner_move_whose_replacement_is_queued_keeps_the_old_callback(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """#6 The replacement create of an owner move hits an outage: the old callback is not
    disconnected before the replacement exists, and if the replacement dead-letters the
    customer still has the old one."""
    first = service.action("create-callback", create_body(
        agentId=BOB, requestedTime=when("2026-11-23T19:00:00Z"))).json
    assert first["outcome"] == "CREATED"
    sim.control("POST", "timeoff", {"userId": BOB, "date": when("2026-11-23"),
                                    "status": "APPROVED"})
    services = worker(service, redis_server)
    sim.control("PUT", "faults", {"status": 503, "count": 1, "method": "POST",
                                  "pathPrefix": CALLBACKS})
    duty(services, "reassign")()
    duty(services, "reassign")()
    assert [c["conversationId"] for c in live(sim)] == [first["callbackId"]]
    sim.control("PUT", "faults", {"status": 400, "count": 1, "method": "POST",
                                  "pathPrefix": CALLBACKS})
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    duty(services, "reassign")()
    assert len(live(sim)) == 1


@pytest.mark.parametrize("slow", ["move", "reschedule"])
def test_reschedule_racing_an_owner_move_ends_as_one_callback_at_the_answered_time(
        slow: str, service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """#5 A reschedule meets the worker's owner move of the same callback (the move's create
    slow, or the reschedule's PATCH slow): one live callback, at the time the answer names."""
    first = service.action("create-callback", create_body(
        agentId=BOB, requestedTime=when("2026-11-23T19:00:00Z"))).json
    assert first["outcome"] == "CREATED"
    sim.control("POST", "timeoff", {"userId": BOB, "date": when("2026-11-23"),
                                    "status": "APPROVED"})
    services = worker(service, redis_server)
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1, "pathPrefix": CALLBACKS,
                                  "method": "POST" if slow == "move" else "PATCH"})
    answers: list[dict[str, Any]] = []

    def reschedule() -> None:
        answers.append(service.action("reschedule-callback", {
            "callbackId": first["callbackId"],
            "requestedTime": when("2026-11-24T19:00:00Z")}).json)

    racing = threading.Thread(target=duty(services, "reassign") if slow == "move"
                              else reschedule)
    racing.start()
    time.sleep(0.5)
    (reschedule if slow == "move" else duty(services, "reassign"))()
    racing.join()
    duty(services, "reassign")()
    [answer] = answers
    assert answer["outcome"] == "RESCHEDULED", answer
    [held] = live(sim)
    assert held["callbackScheduledTime"][:19] == answer["scheduledTimeUtc"][:19], (
        held, answer)
    assert held["conversationId"] == answer["callbackId"]
    assert pending_count(service) == 1


def test_pii_key_rotation_keeps_one_window(make_service: Callable[..., Service],
                                           sim: Simulator) -> None:
    """#7 Instances on the old and on the new PII_KEYS list see the same window and the same
    daily count."""
    old = make_service(PII_KEYS="old-pii-key", MAX_CALLBACKS_PER_NUMBER_PER_DAY="2")
    new = make_service(PII_KEYS="new-pii-key,old-pii-key",
                       MAX_CALLBACKS_PER_NUMBER_PER_DAY="2")
    first = new.action("create-callback", create_body()).json
    assert first["outcome"] == "CREATED"
    assert pending_count(new) == pending_count(old) == 1
    assert old.action("create-callback", create_body()).json["outcome"] == "DUPLICATE"
    assert old.action("cancel-callback", {"callbackId": first["callbackId"]}).json[
        "outcome"] == "CANCELLED"
    assert old.action("create-callback", create_body()).json["outcome"] == "CREATED"
    assert pending_count(new) == 1
    [held] = live(sim)
    assert new.action("cancel-callback", {"callbackId": held["conversationId"]}).json[
        "outcome"] == "CANCELLED"
    third = new.action("create-callback", create_body()).json
    assert third["reason"] == "TOO_MANY_REQUESTS_FOR_NUMBER", third


def test_pii_key_rotation_keeps_a_revocation(make_service: Callable[..., Service],
                                            sim: Simulator) -> None:
    """#7 A revocation stored by an instance on the old list is not lifted, on the new
    list, by a consent captured before it."""
    old = make_service(PII_KEYS="old-pii-key")
    new = make_service(PII_KEYS="new-pii-key,old-pii-key")
    assert revoke(old)["outcome"] == "REVOKED"
    earlier = (T0 - timedelta(minutes=5)).isoformat()
    assert new.action("record-consent", {
        "customerNumber": NUMBER, "consentCapturedAt": earlier,
        "consentSource": "IVR_KEYPRESS"}).json["outcome"] == "RECORDED"
    answer = new.action("create-callback", create_body()).json
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "CONSENT_REVOKED"), answer
    assert sim.callbacks() == []


def test_cancel_by_the_old_id_after_a_move_cancels_the_replacement(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """#8 The caller holds the id from before the worker moved the callback: cancel acts on
    the replacement."""
    first = service.action("create-callback", create_body(
        agentId=BOB, requestedTime=when("2026-11-23T19:00:00Z"))).json
    sim.control("POST", "timeoff", {"userId": BOB, "date": when("2026-11-23"),
                                    "status": "APPROVED"})
    services = worker(service, redis_server)
    assert duty(services, "reassign")() == 1
    answer = service.action("cancel-callback", {"callbackId": first["callbackId"]}).json
    assert answer["outcome"] == "CANCELLED", answer
    assert live(sim) == []
    assert pending_count(service) == 0


def test_cancel_whose_disconnect_landed_unanswered_answers_cancelled(
        service: Service, sim: Simulator) -> None:
    """Invariants 3 and 4: the disconnect reached Genesys but its answer was lost; the
    cancel does not answer "unchanged" for a callback that is gone."""
    first = service.action("create-callback", create_body()).json
    assert first["outcome"] == "CREATED"
    sim.control("PUT", "faults", {"status": 504, "count": 1, "phase": "after",
                                  "pathPrefix": f"{CALLBACKS}/bulk/disconnect"})
    answer = service.action("cancel-callback", {"callbackId": first["callbackId"]}).json
    assert answer["outcome"] == "CANCELLED", answer
    assert live(sim) == []
    assert pending_count(service) == 0


def test_reschedule_whose_patch_landed_unanswered_answers_the_time_genesys_holds(
        service: Service, sim: Simulator) -> None:
    """Invariant 3: the PATCH reached Genesys but its answer was lost; the reschedule does
    not answer "unchanged" while Genesys holds the new time."""
    first = service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T19:00:00Z"))).json
    assert first["outcome"] == "CREATED"
    sim.control("PUT", "faults", {"status": 504, "count": 1, "phase": "after",
                                  "method": "PATCH", "pathPrefix": CALLBACKS})
    answer = service.action("reschedule-callback", {
        "callbackId": first["callbackId"], "requestedTime": when("2026-11-23T20:00:00Z")}).json
    assert answer["outcome"] == "RESCHEDULED", answer
    [held] = live(sim)
    assert held["callbackScheduledTime"][:19] == answer["scheduledTimeUtc"][:19]
    found = service.action("find-pending-callbacks", {"customerNumber": NUMBER}).json
    assert found["scheduledTimeUtc"] == answer["scheduledTimeUtc"], found


def test_cancel_in_doubt_that_the_worker_sees_ended_stays_a_cancel(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariant 4: Genesys stays unreachable after a disconnect that landed unanswered; once
    reconciliation sees the callback gone, the caller's cancel by its id answers CANCELLED,
    not NOT_FOUND."""
    first = service.action("create-callback", create_body()).json
    # Every call lands and every answer is lost, until the request's deadline.
    sim.control("PUT", "faults", {"status": 504, "count": 1000, "phase": "after",
                                  "pathPrefix": "/api/v2/conversations"})
    assert service.action("cancel-callback", {"callbackId": first["callbackId"]}).json[
        "outcome"] == "REJECTED"
    assert live(sim) == []
    sim.control("DELETE", "faults")
    duty(worker(service, redis_server), "reconcile")()
    answer = service.action("cancel-callback", {"callbackId": first["callbackId"]}).json
    assert answer["outcome"] == "CANCELLED", answer


def test_moved_through_the_outbox_the_old_id_still_works(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """#8 A replacement that went through the outbox: the old id's link names the real
    replacement, and cancel by the old id cancels it."""
    first = service.action("create-callback", create_body(
        agentId=BOB, requestedTime=when("2026-11-23T19:00:00Z"))).json
    sim.control("POST", "timeoff", {"userId": BOB, "date": when("2026-11-23"),
                                    "status": "APPROVED"})
    services = worker(service, redis_server)
    sim.control("PUT", "faults", {"status": 503, "count": 1, "method": "POST",
                                  "pathPrefix": CALLBACKS})
    duty(services, "reassign")()
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    duty(services, "reassign")()
    assert len(live(sim)) == 1 and live(sim)[0]["ownerAgentId"] == ADA
    answer = service.action("cancel-callback", {"callbackId": first["callbackId"]}).json
    assert answer["outcome"] == "CANCELLED", answer
    assert live(sim) == []


def test_derived_key_does_not_replay_an_ended_callback(service: Service,
                                                       sim: Simulator) -> None:
    """#9 Create, cancel, create again in the same conversation: a new callback, not a
    replay of the cancelled one."""
    body = create_body(conversationId="c0ffee00-0000-4000-8000-000000000001")
    first = service.action("create-callback", body).json
    assert first["outcome"] == "CREATED"
    service.action("cancel-callback", {"callbackId": first["callbackId"]})
    again = service.action("create-callback", body).json
    assert again["outcome"] == "CREATED" and not again.get("replayed"), again
    assert [c["conversationId"] for c in live(sim)] == [again["callbackId"]]


def test_derived_key_does_not_replay_a_callback_completed_before_reconciliation(
        service: Service, sim: Simulator) -> None:
    """#9 The callback was completed in Genesys and no reconciliation ran since: the same
    conversation asking again gets a new callback, not the ended one replayed."""
    body = create_body(conversationId="c0ffee00-0000-4000-8000-000000000002")
    first = service.action("create-callback", body).json
    assert first["outcome"] == "CREATED"
    sim.control("PATCH", f"callbacks/{first['callbackId']}", {"state": "completed"})
    again = service.action("create-callback", body).json
    assert again["outcome"] == "CREATED" and not again.get("replayed"), again
    assert [c["conversationId"] for c in live(sim)] == [again["callbackId"]]


def test_derived_key_does_not_replay_when_genesys_cannot_say_whether_it_ended(
        service: Service, sim: Simulator) -> None:
    """Invariant 6: the callback was completed in Genesys, and Genesys cannot be read when
    the same conversation asks again: the answer is not a replay of the ended callback (the
    request runs afresh, and the window still guards against a second callback)."""
    body = create_body(conversationId="c0ffee00-0000-4000-8000-000000000003")
    first = service.action("create-callback", body).json
    assert first["outcome"] == "CREATED"
    sim.control("PATCH", f"callbacks/{first['callbackId']}", {"state": "completed"})
    sim.control("PUT", "faults", {"status": 503, "count": 1, "method": "GET",
                                  "pathPrefix": f"{CALLBACKS}/{first['callbackId']}"})
    again = service.action("create-callback", body).json
    assert not again.get("replayed"), again
    assert len(live(sim)) <= 1


def test_slow_create_that_lands_late_is_not_a_second_callback(
        make_service: Callable[..., Service], sim: Simulator,
        redis_server: RedisServer) -> None:
    """#10 A create slower than the read timeout that lands after the worker's retry: the
    number ends with one live callback, and revoke leaves none."""
    service = make_service(REQUEST_DEADLINE_MS="1500", GENESYS_READ_TIMEOUT_MS="500")
    sim.control("PUT", "faults", {"latencyMs": 2500, "count": 1, "method": "POST",
                                  "pathPrefix": CALLBACKS})
    assert service.action("create-callback", create_body()).json["outcome"] == "QUEUED"
    services = worker(service, redis_server, GENESYS_READ_TIMEOUT_MS="500")
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    time.sleep(2.5)  # the first create lands meanwhile
    service.clock.advance(timedelta(minutes=5))
    for name in ("outbox", "reconcile", "reassign"):
        duty(services, name)()
    assert len(live(sim)) == 1
    revoke(service)
    assert live(sim) == []


def test_one_unreadable_callback_does_not_stop_reconciliation(
        make_service: Callable[..., Service], sim: Simulator,
        redis_server: RedisServer) -> None:
    """#11 A callback whose Genesys read keeps failing: reconciliation still reaches the
    later ones."""
    service = make_service()
    stuck = service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T19:00:00Z"))).json
    later = service.action("create-callback", create_body(
        customerNumber="+12125550199", requestedTime=when("2026-11-23T20:00:00Z"))).json
    sim.control("PUT", "faults", {"status": 500, "count": 1000, "method": "GET",
                                  "pathPrefix": f"{CALLBACKS}/{stuck['callbackId']}"})
    services = worker(service, redis_server)
    services.genesys.disconnect_callback(later["callbackId"], "", Deadline(5))
    for _ in range(3):
        duty(services, "reconcile")()
    assert pending_count(service, "+12125550199") == 0


def test_lookahead_reassignment_gets_past_its_first_batch(
        make_service: Callable[..., Service], sim: Simulator,
        redis_server: RedisServer) -> None:
    """#11 With a batch of one, the second callback due soon still gets its move."""
    service = make_service(RECONCILE_BATCH_SIZE="1")
    service.action("create-callback", create_body(agentId=ADA,
                                                  requestedTime=when("2026-11-23T19:00:00Z")))
    moved = service.action("create-callback", create_body(
        agentId=BOB, customerNumber="+12125550199",
        requestedTime=when("2026-11-23T19:30:00Z"))).json
    sim.control("POST", "timeoff", {"userId": BOB, "date": when("2026-11-23"),
                                    "status": "APPROVED"})
    services = worker(service, redis_server, RECONCILE_BATCH_SIZE="1")
    for _ in range(3):
        duty(services, "reassign")()
    owners = {c["ownerAgentId"] for c in live(sim)}
    assert BOB not in owners, moved


@pytest.fixture
def stalled_redis(tmp_path: Any, redis_server: RedisServer) -> Any:
    proxy = FaultProxy(redis_server.port).start()
    yield proxy
    proxy.close()


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the fault proxy fronts one node; a "
                    "cluster client follows redirects to the real ports")
def test_idempotency_key_is_not_left_in_flight_after_a_redis_stall(
        redis_client: Any, redis_server: RedisServer, sim: Simulator,
        stalled_redis: FaultProxy) -> None:
    """#12 A request that met a Redis stall answered 503: its retry after Retry-After is
    served, not 409."""
    import falcon.testing

    from middleware.app import create_app
    from middleware.clock import FixedClock
    config = Config.from_env(service_env(
        f"redis://127.0.0.1:{stalled_redis.port}/0", sim.url, REQUEST_DEADLINE_MS="1000",
        REDIS_TIMEOUT_MS="200"))
    app = create_app(config, redis_client=connect(config.redis_url, 0.2),
                     http=new_session(), clock=FixedClock(T0))
    client = falcon.testing.TestClient(app)
    headers = {**AUTH, "Idempotency-Key": "stall-1"}
    sim.control("PUT", "faults", {"latencyMs": 400, "count": 1, "method": "GET",
                                  "pathPrefix": "/api/v2/routing/queues"})
    threading.Timer(0.2, lambda: setattr(stalled_redis, "blackhole", True)).start()
    first = client.simulate_post("/v1/actions/create-callback", json=create_body(),
                                 headers=headers)
    assert first.status_code == 503
    stalled_redis.blackhole = False
    stalled_redis.reset_all()
    wait, statuses = float(first.headers["Retry-After"]), []
    # A retry may meet the pool's cut connections again on a loaded machine (200 ms Redis
    # timeouts): a caller then retries after Retry-After once more; none may see 409.
    for _ in range(3):
        time.sleep(wait)
        again = client.simulate_post("/v1/actions/create-callback", json=create_body(),
                                     headers=headers)
        statuses.append(again.status_code)
        if again.status_code != 503:
            break
        wait = float(again.headers.get("Retry-After", "1"))
    assert again.status_code == 200 and 409 not in statuses, (statuses, again.text)
    assert again.json["outcome"] == "CREATED"



def test_an_end_seen_late_never_rewrites_the_first(service: Service, sim: Simulator,
                                                   redis_server: RedisServer) -> None:
    """A close of a callback that already ended (reconciliation reading a callback just
    cancelled) keeps the first end: a retried cancel still answers CANCELLED."""
    lifecycle = worker(service, redis_server).lifecycle
    created = service.action("create-callback", create_body()).json
    assert created["outcome"] == "CREATED"
    record = lifecycle.record(created["callbackId"])
    assert record is not None
    cancel = {"callbackId": created["callbackId"]}
    assert service.action("cancel-callback", cancel).json["outcome"] == "CANCELLED"
    lifecycle.close(record, "DISCONNECTED")
    again = lifecycle.record(created["callbackId"])
    assert again is not None and again.state == "CANCELLED"
    assert service.action("cancel-callback", cancel).json["outcome"] == "CANCELLED"


def test_a_create_cancelled_while_queued_is_not_kept_as_a_dead_letter(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """The outbox giving up on a create cancelled meanwhile drops it: no dead letter is
    kept, so no replay can bring back a callback the caller cancelled."""
    services = worker(service, redis_server, OUTBOX_MAX_ATTEMPTS="1")
    sim.control("PUT", "faults", {"status": 503, "count": 1, "pathPrefix": CALLBACKS})
    queued = service.action("create-callback", create_body()).json
    assert queued["outcome"] == "QUEUED"
    [entry] = [e for shard in SHARDS for e in services.store.lease_outbox(shard, 2**62, 1, 10)]
    record = services.lifecycle.record(str(entry.payload["ledgerId"]))
    assert record is not None
    services.lifecycle.cancel(record)
    assert not services.lifecycle.dead_letter(entry, record, "refused")
    assert services.store.dead_letters() == []
    replay_all(service, redis_server)
    duty(services, "outbox")()
    assert live(sim) == [] and pending_count(service) == 0

