"""Interleavings and inputs a third adversarial review found breaking SPEC §4 (Lifecycle,
Duplicates, the Worker) and the create answer's contract, after the ledger went to 16
shards and the warm create path. Each is forced deterministically where it can be (the app
in-process, simulator latency and faults, threads, the worker's duties run by hand); those
that broke are fixed; each test names the invariant it guards."""

from __future__ import annotations

import threading
from typing import Any

from middleware.ledger.lifecycle import epoch_ms
from middleware.rules.number import NumberKeys
from middleware.store import keys
from tests.conftest import (
    PII_KEY,
    T0,
    RedisServer,
    Service,
    Simulator,
    create_body,
    wait_for,
    when,
)
from tests.system.test_lifecycle import BOB, CALLBACKS, NUMBER, duty, live, worker


def _in_window(sim: Simulator) -> list[dict[str, Any]]:
    window_end = when("2026-11-25T18:00:00Z")[:16]
    return [c for c in live(sim) if str(c["callbackScheduledTime"])[:16] <= window_end]


def test_reschedule_into_the_window_beside_a_pending_callback_makes_two(
        service: Service, sim: Simulator) -> None:
    """Invariant 1 (a number has at most one live callback in Genesys in the window): a
    callback three days ahead (beyond the 48 h window) does not block a create for this
    evening, which is CREATED. Rescheduling the far one to tomorrow is answered RESCHEDULED:
    the number now has two live callbacks in the window.

    Input: create at T0+3d; create at T0+1h; reschedule the first to T0+1d."""
    far = service.action("create-callback", create_body(
        requestedTime=when("2026-11-26T19:00:00Z"))).json
    assert far["outcome"] == "CREATED", far
    near = service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T19:00:00Z"))).json
    assert near["outcome"] == "CREATED", near
    moved = service.action("reschedule-callback", {
        "callbackId": far["callbackId"], "requestedTime": when("2026-11-24T19:00:00Z")}).json
    assert len(_in_window(sim)) <= 1, ("two live callbacks in the window", moved)


def _concurrently(service: Service, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send the creates at once, each in its own thread; their answers in order."""
    answers: list[dict[str, Any]] = [{} for _ in bodies]

    def send(i: int) -> None:
        answers[i] = dict(service.action("create-callback", bodies[i]).json)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_a_concurrent_duplicate_names_the_consent_the_pending_callback_relies_on(
        service: Service, sim: Simulator) -> None:
    """The create answer's ``consentId`` is "the consent record this callback relies on";
    a DUPLICATE answer is about the pending callback (``callbackId`` is the existing one's).
    Two creates for one number, each giving consent inline, pass the number facts before
    either journals (Genesys slow on the owner read). The first journals and is CREATED;
    the second's warm transaction stores its own consent record "whatever the answer",
    finds the first's journal (DUPLICATE) and falls back to the claim, which answers
    DUPLICATE with ``consentId`` set to that second consent: a record no callback relies
    on, and one a sequential duplicate would not name (it answers ``""``). A flow that
    stores the answer's ``consentId`` as the callback's evidence stores the wrong one.

    Interleaving: 800 ms latency on the next two GETs of /api/v2/users; two creates at
    once."""
    sequential = service.action("create-callback", create_body(
        customerNumber="+1 212 555 0199")).json
    again = service.action("create-callback", create_body(
        customerNumber="+1 212 555 0199")).json
    assert (sequential["outcome"], again["outcome"]) == ("CREATED", "DUPLICATE")
    sim.control("PUT", "faults", {"latencyMs": 800, "count": 2, "method": "GET",
                                  "pathPrefix": "/api/v2/users"})
    answers = _concurrently(service, [create_body(agentId=BOB), create_body(agentId=BOB)])
    sim.control("DELETE", "faults")
    outcomes = sorted(a["outcome"] for a in answers)
    assert outcomes == ["CREATED", "DUPLICATE"], answers
    [created] = [a for a in answers if a["outcome"] == "CREATED"]
    [duplicate] = [a for a in answers if a["outcome"] == "DUPLICATE"]
    assert duplicate["existingCallbackId"] == created["callbackId"]
    # As a sequential duplicate answers (empty), or the consent the pending one relies on.
    assert duplicate["consentId"] in (again["consentId"], created["consentId"]), (
        duplicate["consentId"], created["consentId"], again["consentId"])


WALTER = "a1000000-0000-4000-8000-000000000010"
#: A number of a later shard (6) than ``NUMBER`` (3).
OTHER = "+12125550199"


def _digest(number: str = NUMBER) -> str:
    return NumberKeys((PII_KEY.encode(),)).current(number)


def far_callback_and_a_day_off(service: Service, sim: Simulator) -> tuple[dict[str, Any], str]:
    """Bob's callback three days ahead (CREATED), and a day in the window he then takes off,
    so a reschedule to it needs an owner move."""
    far = service.action("create-callback", create_body(
        agentId=BOB, requestedTime=when("2026-11-26T19:00:00Z"))).json
    assert far["outcome"] == "CREATED", far
    new_day = when("2026-11-24T19:00:00Z")
    sim.control("POST", "timeoff", {"userId": BOB, "date": new_day[:10],
                                    "status": "APPROVED"})
    return far, new_day


def test_reschedule_with_a_new_owner_while_a_create_holds_the_claim_keeps_its_answer(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariant 3 (every RESCHEDULED answer ends as exactly one live callback at the
    answered time): Bob's callback three days ahead is rescheduled to a day he has off, so
    the owner rule moves it to a teammate (a disconnect plus a new create). Meanwhile a
    create for the same number (this evening, Walter of the other team) holds the number's window
    claim while its owner read is slow: it took the usual claim path because a stale entry
    was indexed pending in the window (an index that outlived its record, which the claim
    drops). The move's journal is guarded by the claim and refuses ("LOST"); before the fix
    ``replace_owner`` took that for "queued" and the reschedule answered RESCHEDULED "the new
    callback is queued and its id follows" while nothing was queued. Now the reschedule
    either lands or is refused, and the callback stays where the answer says.

    Interleaving: stale index entry; create (relying on a recorded consent, so its first
    step reads the number and it claims before its owner read) with 2 s latency on GET
    /api/v2/users; once the claim is held, the reschedule; then outbox and reassign
    duties."""
    far, new_day = far_callback_and_a_day_off(service, sim)
    digest = _digest()
    service.redis.zadd(keys.pending(digest), {"a-record-long-gone": epoch_ms(T0) + 3_600_000})
    consent_id = service.action("record-consent", {
        "customerNumber": "+1 415 555 2671", "consentSource": "IVR_KEYPRESS"}).json["consentId"]
    sim.control("PUT", "faults", {"latencyMs": 2000, "count": 1, "method": "GET",
                                  "pathPrefix": "/api/v2/users"})
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(dict(service.action(
        "create-callback", create_body(agentId=WALTER, customerName="Another",
                                       consentId=consent_id)).json)))
    thread.start()
    wait_for(lambda: bool(service.redis.exists(keys.claim(digest))), 5,
             "the create's claim")
    moved = service.action("reschedule-callback", {
        "callbackId": far["callbackId"], "requestedTime": new_day}).json
    thread.join()
    sim.control("DELETE", "faults")
    services = worker(service, redis_server)
    for name in ("outbox", "reassign", "reconcile"):
        duty(services, name)()
    at_new_time = [c for c in live(sim)
                   if str(c["callbackScheduledTime"])[:16] == new_day[:16]]
    if moved["outcome"] == "RESCHEDULED":
        assert len(at_new_time) == 1, ("RESCHEDULED, yet nothing at the answered time",
                                       moved, answers, live(sim))
    else:
        # Refused: the other create took the window first, or it said to retry; the
        # callback stays where it was.
        assert moved["reason"] in ("DUPLICATE_PENDING", "UPSTREAM_UNAVAILABLE"), moved
        assert at_new_time == [], live(sim)
        assert far["callbackId"] in [c["conversationId"] for c in live(sim)], live(sim)
    assert len(_in_window(sim)) <= 1, live(sim)


def test_one_refused_move_does_not_stop_the_lookahead_in_later_shards(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """SPEC §4 Worker: "before a callback falls due (REASSIGN_LOOKAHEAD_MINUTES) moves
    ownership away from an owner who has since become unavailable". Bob owns two callbacks
    due within the lookahead, for numbers of shard 3 (at +1 h 30) and shard 6 (at +1 h),
    then takes today off. Genesys refuses (403) every read of the first callback. The
    reassign duty walks the shards in order: in shard 3 ``replace_owner`` reads that
    callback, gets ``UpstreamRejected``, and the whole run stops ("reassignment paused"),
    so shard 6 is never reached; its cursor resets on the short page, and every later run
    stops at the same place. The callback due first, whose move Genesys would take, stays
    with an owner on time off until it falls due (a time-ordered walk would have moved it
    first).

    Input: the two creates; Bob's time off; 403 on GET of the first callback; the reassign
    duty, three runs."""
    assert NumberKeys.shard(NUMBER) < NumberKeys.shard(OTHER)
    blocked = service.action("create-callback", create_body(
        agentId=BOB, requestedTime=when("2026-11-23T19:30:00Z"))).json
    due = service.action("create-callback", create_body(
        agentId=BOB, customerNumber=OTHER, requestedTime=when("2026-11-23T19:00:00Z"))).json
    assert (blocked["outcome"], due["outcome"]) == ("CREATED", "CREATED"), (blocked, due)
    sim.control("POST", "timeoff", {"userId": BOB, "date": when("2026-11-23"),
                                    "status": "APPROVED"})
    sim.control("PUT", "faults", {"status": 403, "count": 1000, "method": "GET",
                                  "pathPrefix": f"{CALLBACKS}/{blocked['callbackId']}"})
    services = worker(service, redis_server)
    for _ in range(3):
        duty(services, "reassign")()
    sim.control("DELETE", "faults")
    owners = {str(c.get("ownerAgentId")) for c in live(sim)
              if OTHER in str(c.get("callbackNumbers"))}
    assert owners and BOB not in owners, ("the due callback stays with Bob, on time off",
                                          owners)
