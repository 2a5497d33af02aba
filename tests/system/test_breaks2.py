"""Interleavings a second adversarial review found breaking SPEC §4 Lifecycle (and the
README's Lifecycle promises), each forced deterministically: simulator latency and faults,
threads, the app in-process and the worker's duties run by hand; they hold now."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from tests.conftest import RedisServer, Service, Simulator, create_body, wait_for, when
from tests.system.test_lifecycle import CALLBACKS, NUMBER, duty, live, worker


def _in_flight(sim: Simulator, route: str, before: int) -> bool:
    return int(sim.stats()["requests"].get(route, 0)) > before


def test_derived_key_run_afresh_makes_no_second_callback_beyond_the_window(
        service: Service, sim: Simulator) -> None:
    """SPEC §4 Duplicates (a repeated key with the same body replays the first answer) and
    the README's promise under Lifecycle 6 ("when Genesys cannot say, the request runs
    afresh, and the window still stops a second callback"): a create with a
    ``conversationId`` and no key, scheduled three days ahead (beyond the 48 h window), is
    CREATED. The same conversation sends the same body again while Genesys answers the GET
    of that callback with 503: ``_ended`` says "unknown, so ended", the key is taken over,
    the request runs afresh, the claim finds nothing pending *in the window* and a second
    callback is created for the same number, conversation and time.

    Interleaving: create; 503 on GET of the callback once; the same create again."""
    body = create_body(conversationId="c0ffee00-0000-4000-8000-00000000b201",
                       requestedTime=when("2026-11-26T19:00:00Z"))
    first = service.action("create-callback", body).json
    assert first["outcome"] == "CREATED", first
    sim.control("PUT", "faults", {"status": 503, "count": 1, "method": "GET",
                                  "pathPrefix": f"{CALLBACKS}/{first['callbackId']}"})
    again = service.action("create-callback", body).json
    sim.control("DELETE", "faults")
    assert len(live(sim)) == 1, ("one conversation's one request made two callbacks", again)


def _scheduled(sim: Simulator, callback_id: str) -> str:
    [held] = [c for c in sim.callbacks() if c["conversationId"] == callback_id]
    return str(held["callbackScheduledTime"])[:16]


def test_reschedule_patch_landing_after_the_in_doubt_read_is_still_adopted(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariant 1 (and the README's "the worker reads such callbacks back and takes the
    time Genesys holds"): a callback three days ahead (beyond the 48 h window) is
    rescheduled to this evening; Genesys holds each PATCH 12 s before running it, so the
    request answers REJECTED UPSTREAM_UNAVAILABLE "may have been made". The worker's
    in-doubt read comes DOUBT_AFTER (10 s) after the ask, sees the old time (the PATCH has
    not run yet), finds nothing to adopt and settles the doubt (``rx`` cleared, out of the
    in-doubt set). The PATCH then runs: Genesys calls the customer this evening while the
    ledger says three days ahead. Nothing reads it again; a new create for the number finds
    nothing pending in the window and is CREATED: two live callbacks in the window.

    Interleaving: PATCH latency 12 s (phase before, so it lands late); clock +11 s;
    reconcile while the PATCH is held; wait for it to land; reconcile again; create."""
    first = service.action("create-callback", create_body(
        requestedTime=when("2026-11-26T19:00:00Z"))).json
    assert first["outcome"] == "CREATED", first
    callback_id = str(first["callbackId"])
    old = _scheduled(sim, callback_id)
    services = worker(service, redis_server)
    sim.control("PUT", "faults", {"latencyMs": 12_000, "count": 3, "method": "PATCH",
                                  "pathPrefix": CALLBACKS})
    started = time.monotonic()
    moved = service.action("reschedule-callback", {
        "callbackId": callback_id, "requestedTime": when("2026-11-23T20:00:00Z")}).json
    assert moved["outcome"] == "REJECTED", moved
    service.clock.advance(timedelta(seconds=11))
    duty(services, "reconcile")()
    assert time.monotonic() - started < 11.5, "the in-doubt read came after the PATCH ran"
    wait_for(lambda: _scheduled(sim, callback_id) != old, 20, "the held PATCH to run")
    time.sleep(4)  # a second, retried PATCH lands too
    sim.control("DELETE", "faults")
    service.clock.advance(timedelta(seconds=30))
    duty(services, "reconcile")()
    second = service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T21:00:00Z"))).json
    window_end = when("2026-11-25T18:00:00Z")[:16]
    in_window = [c for c in live(sim) if str(c["callbackScheduledTime"])[:16] < window_end]
    assert len(in_window) <= 1, ("two live callbacks in the window", second, in_window)


def test_revoke_during_an_owner_move_leaves_no_replacement_live(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariant 2: the worker's lookahead move holds the old callback's change lock while it
    creates the replacement (Genesys slow, 3.5 s) and disconnects the old one (slow again).
    revoke-consent reads the number's pending callbacks while the create is at Genesys: the
    old one, and the journaled replacement (CREATING). It waits for the old one's lock until
    its deadline; meanwhile the replacement is delivered (the old one still PENDING, so
    ``_DELIVER``'s guard lets it through) and the journal record it read is deleted. The
    lock wait runs out: ``cancel_later`` marks the old one cancelled and the revoke finishes
    its disconnect; the stale CREATING entry is "cancelled" as a no-op. Nothing raised
    ``Superseded``, so the number is not read again: the revoke answers REVOKED and the
    replacement, which it never saw, stays scheduled for the revoked customer.

    Interleaving: agent on time off; POST latency 3.5 s on the next two callback POSTs (the
    move's create and its disconnect), worker read timeout 8 s; the reassign duty in a
    thread; revoke once the create is at Genesys."""
    bob = "a1000000-0000-4000-8000-000000000002"
    first = service.action("create-callback", create_body(agentId=bob)).json
    assert first["outcome"] == "CREATED", first
    sim.control("POST", "timeoff", {"userId": bob, "date": first["scheduledTimeUtc"][:10],
                                    "status": "APPROVED"})
    services = worker(service, redis_server, GENESYS_READ_TIMEOUT_MS="8000")
    route = f"POST {CALLBACKS}"
    before = int(sim.stats()["requests"].get(route, 0))
    sim.control("PUT", "faults", {"latencyMs": 3500, "count": 2, "method": "POST",
                                  "pathPrefix": CALLBACKS})
    moved: list[int] = []
    thread = threading.Thread(target=lambda: moved.append(duty(services, "reassign")()))
    thread.start()
    wait_for(lambda: _in_flight(sim, route, before), 5, "the move's create at Genesys")
    revoked = dict(service.action("revoke-consent", {"customerNumber": NUMBER}).json)
    thread.join()
    sim.control("DELETE", "faults")
    assert revoked["outcome"] == "REVOKED", revoked
    assert moved == [1], moved
    for _ in range(2):
        for name in ("outbox", "reconcile", "reassign"):
            duty(services, name)()
    assert live(sim) == [], ("a revoked number keeps the move's replacement", revoked)


def test_revoke_behind_a_reschedule_in_doubt_answers_what_it_did(
        service: Service, sim: Simulator) -> None:
    """The README's "an answer that could not be confirmed says so" (and revoke's
    ``cancelledCount``): a reschedule whose PATCH Genesys holds 12 s answers in doubt and
    keeps the callback's change lock until deadline + settle (~11 s). revoke-consent comes
    right after: ``cancel_record`` waits for the lock until the revoke's own deadline is
    nearly gone, raises "Another change ... is being made" (an ``UpstreamUnavailable`` that
    never reached Genesys), and the revoke cancels it here (``cancel_later``) and sends the
    disconnect, which Genesys takes. It answers REVOKED with ``cancelledCount=0`` and
    "1 callback(s) ... Genesys Cloud has not taken the disconnect yet", though it cancelled
    the one callback, and Genesys holds none.

    Interleaving: PATCH latency 12 s; reschedule (answers in doubt after 5 s); revoke."""
    first = service.action("create-callback", create_body()).json
    assert first["outcome"] == "CREATED", first
    sim.control("PUT", "faults", {"latencyMs": 12_000, "count": 3, "method": "PATCH",
                                  "pathPrefix": CALLBACKS})
    moved = service.action("reschedule-callback", {
        "callbackId": first["callbackId"], "requestedTime": when("2026-11-23T20:00:00Z")}).json
    assert moved["outcome"] == "REJECTED", moved
    started = time.monotonic()
    revoked = dict(service.action("revoke-consent", {"customerNumber": NUMBER}).json)
    took = time.monotonic() - started
    assert revoked["outcome"] == "REVOKED", revoked
    wait_for(lambda: live(sim) == [], 20, "the callback to end")
    sim.control("DELETE", "faults")
    assert revoked["cancelledCount"] == 1, (revoked, f"took {took:.1f}s")
