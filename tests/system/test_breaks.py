"""Interleavings an adversarial review found breaking SPEC §4 Lifecycle, each forced
deterministically (simulator latency and faults, threads); they hold now."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import RedisServer, Service, Simulator, create_body, wait_for
from tests.system.test_lifecycle import (
    CALLBACKS,
    NUMBER,
    duty,
    live,
    pending_count,
    revoke,
    worker,
)


def _in_flight(sim: Simulator, route: str, before: int) -> bool:
    return int(sim.stats()["requests"].get(route, 0)) > before


def _all_duties(service: Service, redis_server: RedisServer) -> None:
    services = worker(service, redis_server)
    for _ in range(2):
        for name in ("outbox", "reconcile", "reassign"):
            duty(services, name)()


def test_revoke_during_create_whose_undo_cannot_disconnect_leaves_none_live(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariant 2 (and the answer lies): the create is journaled (CREATING) and its POST is
    at Genesys; revoke-consent answers (it closes the CREATING record, cancelledCount=1);
    the POST lands, ``deliver`` refuses (not CREATING any more), ``undo`` tries the
    disconnect, Genesys answers 503, and ``undo`` ``keep``s the callback PENDING with no
    revocation guard and nothing queued to finish it. The create answers REJECTED
    CONSENT_REVOKED "it was cancelled", the revoke answered REVOKED, and the revoked number
    keeps a live callback for good: no worker duty removes it.

    Interleaving: POST create delayed 1.5 s at the simulator; revoke at ~0.3 s; the fault is
    then switched to 503 on bulk/disconnect before the POST answers."""
    route = f"POST {CALLBACKS}"
    before = int(sim.stats()["requests"].get(route, 0))
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1, "method": "POST",
                                  "pathPrefix": CALLBACKS})
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(
        dict(service.action("create-callback", create_body()).json)))
    thread.start()
    wait_for(lambda: _in_flight(sim, route, before), 5, "the create at Genesys")
    revoked = revoke(service)
    assert (revoked["outcome"], revoked["reason"]) == ("REVOKED", "OK"), revoked
    sim.control("PUT", "faults", {"status": 503, "count": 1000,
                                  "pathPrefix": f"{CALLBACKS}/bulk/disconnect"})
    thread.join()
    sim.control("DELETE", "faults")
    [answer] = answers
    assert answer["outcome"] == "REJECTED", answer
    _all_duties(service, redis_server)
    assert live(sim) == [], "a revoked number keeps a live callback"


@pytest.mark.parametrize("ender", ["cancel", "revoke"])
def test_cancel_whose_disconnect_is_slow_is_not_outlived_by_an_owner_move(
        ender: str, service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariants 3 and 4 (the answer lies) and, for ``revoke``, invariant 2 (the move's
    journal is written unguarded, ``epoch=-1``): cancel-callback (or revoke-consent's
    cancel of each pending callback) reads the record (no
    replacement linked), marks it cancel-asked (``cx``, which does not bump the version) and
    sends the disconnect, which Genesys is slow to run. Meanwhile the worker's lookahead
    move reads the same record, sees it still scheduled in Genesys, journals a replacement,
    links it (``move``: version unchanged, link empty, so the guard passes), creates and
    delivers it. The cancel's disconnect then lands on the old callback and ``close`` marks
    it CANCELLED. The cancel answers CANCELLED; the replacement the caller never saw stays
    live, and nothing closes it.

    Interleaving: bulk/disconnect delayed 1.5 s at the simulator (once); the reassign duty
    runs while that disconnect is held."""
    bob = "a1000000-0000-4000-8000-000000000002"
    first = service.action("create-callback", create_body(agentId=bob)).json
    assert first["outcome"] == "CREATED", first
    sim.control("POST", "timeoff", {"userId": bob, "date": first["scheduledTimeUtc"][:10],
                                    "status": "APPROVED"})
    services = worker(service, redis_server)
    route = f"POST {CALLBACKS}/bulk/disconnect"
    before = int(sim.stats()["requests"].get(route, 0))
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1, "method": "POST",
                                  "pathPrefix": f"{CALLBACKS}/bulk/disconnect"})
    answers: list[dict[str, Any]] = []
    action, body, ended = ("cancel-callback", {"callbackId": first["callbackId"]},
                           "CANCELLED") if ender == "cancel" else (
        "revoke-consent", {"customerNumber": NUMBER}, "REVOKED")
    thread = threading.Thread(target=lambda: answers.append(dict(service.action(
        action, body).json)))
    thread.start()
    wait_for(lambda: _in_flight(sim, route, before), 5, "the disconnect at Genesys")
    # The cancel holds the change lock, and the revocation is stored before its disconnect:
    # either way the move does not start (it finds the callback changed, or revoked).
    assert duty(services, "reassign")() == 0
    thread.join()
    [answer] = answers
    assert answer["outcome"] == ended, answer
    _all_duties(service, redis_server)
    assert live(sim) == [], f"after {ender}, the callback's replacement is live"


def test_derived_key_does_not_replay_a_queued_answer_whose_callback_ended(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """Invariant 6 (and 3: a QUEUED answer that ends as no callback): a create with a
    ``conversationId`` and no key is answered QUEUED (Genesys down); the stored answer has
    an empty ``callbackId``. The worker delivers it, the callback is completed in Genesys and
    reconciliation closes it. The same conversation asks again: ``_ended`` finds no id in
    the stored answer, says "not ended", and the QUEUED answer is replayed; nothing is
    scheduled.

    Interleaving: 503 on the first create only; outbox, completion, reconcile, then the
    repeated request."""
    body = create_body(conversationId="c0ffee00-0000-4000-8000-00000000b001")
    sim.control("PUT", "faults", {"status": 503, "count": 1, "method": "POST",
                                  "pathPrefix": CALLBACKS})
    first = service.action("create-callback", body).json
    assert first["outcome"] == "QUEUED", first
    services = worker(service, redis_server)
    service.clock.advance(timedelta(seconds=30))
    duty(services, "outbox")()
    [held] = live(sim)
    sim.control("PATCH", f"callbacks/{held['conversationId']}", {"state": "completed"})
    duty(services, "reconcile")()
    assert pending_count(service) == 0
    again = service.action("create-callback", body).json
    assert not again.get("replayed"), again
    assert again["outcome"] == "CREATED", again
    assert len(live(sim)) == 1
