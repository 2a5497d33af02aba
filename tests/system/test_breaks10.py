"""A tenth review: a key derived from ``conversationId`` run afresh (acbb40a's beyond-window
claim), and the idempotency gate around it. Each test fails on the code it was written
against; each is forced deterministically (the app in-process, simulator faults, the fixed
clock T0)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Service, Simulator, create_body, when

NUMBER = "+14155552671"


def _act(service: Service, **fields: Any) -> dict[str, Any]:
    answer = service.action("create-callback", create_body(**{"customerNumber": NUMBER,
                                                              **fields}))
    assert answer.status_code == 200, answer.text
    return dict(answer.json)


def _live(sim: Simulator) -> set[str]:
    return {c["conversationId"] for c in sim.callbacks() if c["state"] == "scheduled"}


def test_a_retry_after_an_afresh_refusal_does_not_create_the_same_callback_again(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §4 Duplicates (a repeated key with the same body replays the first answer),
    Lifecycle 3 (a CREATED answer ends as exactly one live callback) and 6 (a derived key
    does not replay an answer whose callback *has ended*), with README Lifecycle ("when
    Genesys cannot say ... the request runs afresh, and any pending callback of the number,
    in the window or beyond it, answers DUPLICATE").

    A create with ``conversationId`` C for three days ahead (beyond the 48 h window) is
    CREATED. During a Genesys outage the data action retries it: ``_ended`` cannot read the
    callback, so ``IdempotencyGate.take_over`` replaces the stored CREATED answer with this
    request's lease; the retry is then refused (REJECTED UPSTREAM_UNAVAILABLE, "Retry the
    same request") and ``_finish`` forgets the key, CREATED answer included. The next retry,
    Genesys back, finds no stored answer, so it is neither replayed nor run afresh: the plain
    48 h claim does not see the callback three days out, and a second callback is created
    for the same conversation, number and time.

    Steps: create with C at T0+3d (CREATED); 503 on every Genesys GET; a fresh instance (its
    read cache empty) repeats it (REJECTED, retryable); faults off; repeat it again."""
    first = make_service()
    conversation = "c0000000-0000-4000-8000-0000000000d1"
    far = when("2026-11-26T19:00:00Z")
    created = _act(first, conversationId=conversation, requestedTime=far)
    assert created["outcome"] == "CREATED", created
    sim.control("PUT", "faults", {"status": 503, "method": "GET", "pathPrefix": "/api/v2"})
    try:
        refused = _act(make_service(), conversationId=conversation, requestedTime=far)
    finally:
        sim.control("DELETE", "faults")
    assert (refused["outcome"], refused["retryable"]) == ("REJECTED", True), refused
    again = _act(first, conversationId=conversation, requestedTime=far)
    live = _live(sim)
    assert again["outcome"] in ("CREATED", "DUPLICATE"), again
    assert again.get("callbackId") in ("", created["callbackId"]) and live == {
        created["callbackId"]}, ("the same request retried created a second callback",
                                 again, created, sorted(live))


def test_a_derived_key_raced_afresh_never_replays_the_ended_callback(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §4 Lifecycle 6: "a key derived from ``conversationId`` (the caller sent none)
    never replays an answer whose callback has since ended".

    Two retries of one create (same ``conversationId``, so the same derived key) arrive
    together after its callback completed in Genesys (not reconciled yet). Both read the
    stored CREATED answer, both ask Genesys in ``_ended`` and learn the callback ended; the
    first ``take_over`` wins and runs afresh, and ``CreateCallback._begin`` answers the
    second, whose ``take_over`` found the key no longer holding that answer, with the stale
    answer itself: ``replayed: true``, naming the completed callback as CREATED. (It should
    begin again: 409 while the first is in flight, or the first's new answer.)

    Steps: create with C (CREATED); mark it completed in the simulator; 1000 ms latency on
    the next two GET /api/v2/conversations/callbacks/…; two instances repeat the create,
    100 ms apart."""
    first, second = make_service(), make_service()
    conversation = "c0000000-0000-4000-8000-0000000000d2"
    created = _act(first, conversationId=conversation)
    assert created["outcome"] == "CREATED", created
    sim.control("PATCH", f"callbacks/{created['callbackId']}", {"state": "completed"})
    sim.control("PUT", "faults", {"latencyMs": 1000, "count": 2, "method": "GET",
                                  "pathPrefix": "/api/v2/conversations/callbacks/"})
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def retry(service: Service) -> None:
        result = service.action("create-callback", create_body(
            customerNumber=NUMBER, conversationId=conversation))
        with lock:
            answers.append((result.status_code, dict(result.json or {})))

    threads = [threading.Thread(target=retry, args=(s,)) for s in (first, second)]
    try:
        for thread in threads:
            thread.start()
            time.sleep(0.1)
    finally:
        for thread in threads:
            thread.join(timeout=15)
        sim.control("DELETE", "faults")
    assert len(answers) == 2, answers
    stale = [a for status, a in answers if status == 200
             and created["callbackId"] in (a.get("callbackId"), a.get("existingCallbackId"))]
    assert not stale, ("a derived key replayed the answer of a callback that had ended",
                       stale)
