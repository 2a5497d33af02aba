"""The right owner: every unavailability reason and fallback step, driven through the
simulator's seeded org; the reassignment order; the shared Genesys call budget; the worker
moving a callback whose owner went on time off."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from middleware.app import build_duties, build_services
from middleware.deadline import Deadline
from middleware.genesys.client import new_session
from middleware.store import connect
from tests.conftest import DEMO_QUEUE, T0, RedisServer, Service, Simulator, create_body, when

ADA, BOB, CHLOE, DEV = (f"a1000000-0000-4000-8000-0000000000{n:02d}" for n in (1, 2, 3, 4))
TOM, OLIVIA, IAN, NORA = (f"a1000000-0000-4000-8000-0000000000{n:02d}" for n in (6, 7, 8, 9))
OSCAR, GRACE, HENRY = (f"a1000000-0000-4000-8000-0000000000{n:02d}" for n in (11, 90, 91))

MONDAY_19Z = when("2026-11-23T19:00:00Z")      # 14:00 New York, 19:00 London, 00:30 Kolkata
TUESDAY_04Z = when("2026-11-24T04:00:00Z")     # 09:30 Kolkata: only Henry Lead works in Orient
WEDNESDAY_10Z = when("2026-11-25T10:00:00Z")   # Tom Holiday's approved day off (T0 + 2 days)
SATURDAY_16Z = when("2026-11-28T16:00:00Z")    # Bob works Monday to Friday


def resolve(service: Service, agent: str, when: str, **fields: Any) -> dict[str, Any]:
    result = service.action("resolve-callback-owner", {
        "agentId": agent, "queueId": DEMO_QUEUE, "requestedTime": when, **fields})
    assert result.status_code == 200, result.text
    return dict(result.json)


def create(service: Service, **fields: Any) -> dict[str, Any]:
    result = service.action("create-callback", create_body(**fields))
    assert result.status_code == 200, result.text
    return dict(result.json)


def test_available_owner_keeps_the_callback(service: Service, sim: Simulator) -> None:
    """An active queue member on shift, in office and online owns it."""
    answer = resolve(service, BOB, MONDAY_19Z)
    assert (answer["outcome"], answer["available"], answer["assignedAgentId"]) == (
        "AVAILABLE", True, BOB)


@pytest.mark.parametrize(("agent", "when", "reason", "new_owner"), [
    (IAN, MONDAY_19Z, "AGENT_INACTIVE", ADA),
    (NORA, TUESDAY_04Z, "AGENT_NOT_IN_QUEUE", HENRY),
    (TOM, WEDNESDAY_10Z, "AGENT_ON_TIME_OFF", DEV),
    (OLIVIA, MONDAY_19Z, "AGENT_OUT_OF_OFFICE", ADA),
    (BOB, SATURDAY_16Z, "AGENT_OFF_SHIFT", ADA),
])
def test_each_unavailability_reason_moves_ownership(service: Service, sim: Simulator,
                                                    agent: str, when: str, reason: str,
                                                    new_owner: str) -> None:
    """Each reason of SPEC §3.8 is detected and the rule picks the documented stand-in."""
    answer = resolve(service, agent, when)
    assert (answer["outcome"], answer["reassignReason"], answer["assignedAgentId"]) == (
        "REASSIGNED", reason, new_owner)
    assert answer["reassigned"] is True and answer["available"] is False


def test_offline_owner_matters_only_for_immediate_callbacks(service: Service,
                                                             sim: Simulator) -> None:
    """Oscar is offline: a callback due in 10 minutes moves, one due in an hour stays."""
    soon = (T0 + timedelta(minutes=10)).isoformat()
    later = (T0 + timedelta(hours=1)).isoformat()
    moved = resolve(service, OSCAR, soon)
    assert (moved["reassignReason"], moved["assignedAgentId"]) == ("AGENT_OFFLINE", ADA)
    assert resolve(service, OSCAR, later)["outcome"] == "AVAILABLE"


def test_teammate_in_other_zone_outside_hours_is_skipped(service: Service,
                                                         sim: Simulator) -> None:
    """At 19:00 London, Chloe (London, 09-17) is the only teammate left but does not work
    then: she is skipped and the manager (New York, 08-18) takes it."""
    sim.control("PATCH", f"users/{ADA}", {"state": "inactive"})
    sim.control("PATCH", f"users/{BOB}", {"outOfOffice": {"active": True, "indefinite": True}})
    sim.control("PATCH", f"users/{OSCAR}", {"queueIds": []})
    answer = resolve(service, IAN, MONDAY_19Z)
    assert answer["assignedAgentId"] == GRACE
    assert resolve(service, IAN, when("2026-11-24T15:00:00Z"))["assignedAgentId"] == CHLOE


def test_fewest_pending_owned_callbacks_wins(service: Service, sim: Simulator) -> None:
    """Two eligible teammates with 3 and 1 pending owned callbacks: the second is chosen."""
    sim.control("PATCH", f"users/{OSCAR}", {"queueIds": []})
    numbers = ["+12125550101", "+12125550102", "+12125550103", "+12125550104"]
    for number, agent in zip(numbers, (ADA, ADA, ADA, BOB), strict=True):
        assert create(service, agentId=agent, customerNumber=number,
                      requestedTime=MONDAY_19Z)["assignedAgentId"] == agent
    assert resolve(service, IAN, MONDAY_19Z)["assignedAgentId"] == BOB


def test_manager_when_no_teammate_can(service: Service, sim: Simulator) -> None:
    """No Orient teammate works at 09:30 Kolkata; Henry Lead, the manager, does."""
    answer = resolve(service, NORA, TUESDAY_04Z)
    assert (answer["outcome"], answer["assignedAgentId"]) == ("REASSIGNED", HENRY)


def test_queue_when_nobody_can(service: Service, sim: Simulator) -> None:
    """Nobody of Orient nor Henry works at 00:30 Kolkata: the queue takes it, no owner."""
    answer = resolve(service, NORA, MONDAY_19Z)
    assert (answer["outcome"], answer["reason"], answer["assignedAgentId"]) == (
        "NO_OWNER", "OK", "")
    assert answer["reassigned"] is True


def test_reject_fallback_refuses(make_service: Callable[..., Service], sim: Simulator) -> None:
    """With REASSIGN_FALLBACK=reject the same case is NO_AVAILABLE_OWNER."""
    answer = resolve(make_service(REASSIGN_FALLBACK="reject"), NORA, MONDAY_19Z)
    assert (answer["outcome"], answer["reason"]) == ("NO_OWNER", "NO_AVAILABLE_OWNER")


def test_unknown_agent_is_rejected(service: Service, sim: Simulator) -> None:
    """An id Genesys does not know is UNKNOWN_AGENT."""
    answer = resolve(service, "00000000-0000-4000-8000-000000000000", MONDAY_19Z)
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "UNKNOWN_AGENT")


# -- inside create-callback ------------------------------------------------------------


def test_create_reassigns_and_genesys_gets_the_new_owner(service: Service,
                                                         sim: Simulator) -> None:
    """An inactive owner: CREATED for the stand-in, and the simulator shows that owner."""
    answer = create(service, agentId=IAN, customerNumber="+12125550199",
                    requestedTime=MONDAY_19Z)
    assert (answer["outcome"], answer["reason"], answer["reassigned"]) == ("CREATED", "OK", True)
    assert (answer["ownerAgentId"], answer["assignedAgentId"], answer["reassignReason"]) == (
        IAN, ADA, "AGENT_INACTIVE")
    assert sim.callbacks()[0]["ownerAgentId"] == ADA


def test_create_queue_fallback_sends_no_owner_fields(service: Service, sim: Simulator) -> None:
    """When the queue takes it, the create carries no scored agent and no owned flag."""
    sim.control("PATCH", f"users/{ADA}", {"outOfOffice": {"active": True, "indefinite": True}})
    answer = create(service, agentId=IAN, customerNumber="+12125550199",
                    requestedTime=SATURDAY_16Z)
    assert (answer["outcome"], answer["assignedAgentId"], answer["reassigned"]) == (
        "CREATED", "", True)
    routing = sim.callbacks()[0]["request"]["routingData"]
    assert routing == {"queueId": DEMO_QUEUE}


def test_create_without_reassignment_refuses(service: Service, sim: Simulator) -> None:
    """allowReassignment=false and an unavailable owner: NO_AVAILABLE_OWNER, nothing made."""
    answer = create(service, agentId=IAN, customerNumber="+12125550199",
                    requestedTime=MONDAY_19Z, allowReassignment=False)
    assert (answer["outcome"], answer["reason"], answer["reassignReason"]) == (
        "REJECTED", "NO_AVAILABLE_OWNER", "AGENT_INACTIVE")
    assert sim.creates() == 0
    assert not list(service.redis.scan_iter("*claim*"))


def test_reschedule_to_owners_day_off_moves_ownership(service: Service,
                                                      sim: Simulator) -> None:
    """Rescheduling Bob's callback to a Saturday re-creates it for a working teammate."""
    first = create(service, agentId=BOB, customerNumber="+12125550199",
                   requestedTime=MONDAY_19Z)
    moved = service.action("reschedule-callback", {"callbackId": first["callbackId"],
                                                   "requestedTime": SATURDAY_16Z}).json
    assert (moved["outcome"], moved["assignedAgentId"], moved["reassignReason"]) == (
        "RESCHEDULED", ADA, "AGENT_OFF_SHIFT")
    assert moved["previousCallbackId"] == first["callbackId"] != moved["callbackId"]
    states = {c["conversationId"]: (c["state"], c["ownerAgentId"]) for c in sim.callbacks()}
    assert states == {first["callbackId"]: ("disconnected", BOB),
                      moved["callbackId"]: ("scheduled", ADA)}


# -- the worker, ahead of time ---------------------------------------------------------


def test_worker_moves_callback_when_owner_takes_time_off(service: Service, sim: Simulator,
                                                         redis_server: RedisServer) -> None:
    """Bob books the day off after the callback was made: the worker hands it to Ada before
    it falls due, and the simulator shows the new owner."""
    first = create(service, agentId=BOB, customerNumber="+12125550199",
                   requestedTime=MONDAY_19Z)
    assert first["assignedAgentId"] == BOB
    sim.control("POST", "timeoff",
                {"userId": BOB, "date": when("2026-11-23"), "status": "APPROVED"})
    services = build_services(service.config, redis_client=connect(redis_server.url, 1.0),
                              http=new_session(), clock=service.clock)
    [reassign] = [d for d in build_duties(services) if d.name == "reassign"]
    assert reassign.run(Deadline(10)) == 1
    held = {c["conversationId"]: c for c in sim.callbacks()}
    assert held[first["callbackId"]]["state"] == "disconnected"
    [new] = [c for c in held.values() if c["state"] == "scheduled"]
    assert (new["ownerAgentId"], new["callbackScheduledTime"]) == (
        ADA, when("2026-11-23T19:00:00.000Z"))
    assert new["data"]["consentId"] == first["consentId"]
    found = service.action("find-pending-callbacks", {"customerNumber": "+12125550199"}).json
    assert (found["callbackId"], found["agentId"]) == (new["conversationId"], ADA)
    assert reassign.run(Deadline(10)) == 0


# -- one shared budget for Genesys calls -----------------------------------------------


def test_burst_never_draws_a_429_from_genesys(make_service: Callable[..., Service],
                                              sim: Simulator) -> None:
    """Genesys allows 60 calls a minute; 100 creates at once draw no 429: what the shared
    budget cannot serve in time is refused retryably (a check's read) or QUEUED (the create)."""
    sim.control("PUT", "ratelimit", {"perMinute": 60})
    service = make_service(GENESYS_RATE_LIMIT_PER_MIN="60", REQUEST_DEADLINE_MS="1500")
    bodies = [create_body(customerNumber=f"+1212555{1000 + i:04d}") for i in range(100)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: service.action("create-callback", b).json, bodies))
    outcomes = {(a["outcome"], a["reason"], a["retryable"]) for a in answers}
    assert outcomes <= {("CREATED", "OK", False), ("REJECTED", "UPSTREAM_UNAVAILABLE", True),
                        ("QUEUED", "UPSTREAM_UNAVAILABLE", False)}
    assert ("CREATED", "OK", False) in outcomes
    stats = sim.stats()
    assert stats["rateLimited"] == 0, stats
