"""An eleventh review: 017d1a0's tri-state ``_ended`` (ENDED / MAYBE / not ended), the
take-over loop of ``_begin`` and the put-back of ``_finish``. Each test fails on the code it
was written against; each is forced deterministically (the app in-process, simulator
faults, the fixed clock T0)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import falcon.testing
import pytest
import redis

from middleware.app import create_app
from middleware.clock import FixedClock
from middleware.config import Config
from middleware.store.client import connect
from middleware.store.idempotency import _TAKE_OVER_IDEMPOTENT
from tests.conftest import (
    AUTH,
    T0,
    TEST_REDIS,
    RedisServer,
    Service,
    Simulator,
    create_body,
    new_session,
    service_env,
    when,
)
from tests.faultproxy import FaultProxy

NUMBER = "+14155552671"
BOB = "a1000000-0000-4000-8000-000000000002"


def _act(service: Service, **fields: Any) -> dict[str, Any]:
    answer = service.action("create-callback", create_body(**{"customerNumber": NUMBER,
                                                              **fields}))
    assert answer.status_code == 200, answer.text
    return dict(answer.json)


def _live(sim: Simulator) -> set[str]:
    return {c["conversationId"] for c in sim.callbacks() if c["state"] == "scheduled"}


def test_a_retry_after_an_owner_move_does_not_create_a_second_callback(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §4 Duplicates (a repeated key with the same body replays the first answer),
    Lifecycle 3 ("moving a callback to a new owner never leaves the number with none, and
    never two"), 4 (a ``callbackId`` keeps working after the service replaced it) and 6 (a
    derived key skips the replay only when the callback *has ended*).

    A create with ``conversationId`` C for Bob three days ahead (beyond the 48 h window) is
    CREATED as X. Bob takes that day off and X is rescheduled an hour later: the owner rule
    moves it to a teammate, X' replaces X, and X's record ends REASSIGNED. The data action
    then retries the original create (same C, so the same derived key). ``_ended`` reads
    X's record, sees it is no longer pending and answers ENDED, so the retry is a plain
    request under the 48 h window alone (017d1a0), which does not see X' three days out:
    a second callback is created for the same conversation beside X'. (Before 017d1a0 it
    ran afresh and answered DUPLICATE with X'.)

    Steps: create C for Bob at T0+3d 19:00Z (CREATED X); approved time off for Bob that
    day; reschedule X to 20:00Z (RESCHEDULED, reassigned, X'); repeat the create."""
    service = make_service()
    conversation = "c0000000-0000-4000-8000-0000000000e1"
    far = when("2026-11-26T19:00:00Z")
    created = _act(service, conversationId=conversation, agentId=BOB, requestedTime=far)
    assert created["outcome"] == "CREATED", created
    sim.control("POST", "timeoff", {"userId": BOB, "date": when("2026-11-26"),
                                    "status": "APPROVED"})
    moved = make_service().action("reschedule-callback", {
        "callbackId": created["callbackId"],
        "requestedTime": when("2026-11-26T20:00:00Z")}).json
    assert (moved["outcome"], moved.get("reassigned")) == ("RESCHEDULED", True), moved
    assert _live(sim) == {moved["callbackId"]}, sim.callbacks()
    again = _act(service, conversationId=conversation, agentId=BOB, requestedTime=far)
    live = _live(sim)
    assert live == {moved["callbackId"]}, (
        "the same create retried after an owner move made a second callback", again,
        moved, sorted(live))


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the fault proxy fronts one Redis node")
def test_a_lost_take_over_reply_does_not_lose_the_stored_answer(
        make_service: Callable[..., Service], sim: Simulator, redis_server: RedisServer,
        redis_client: redis.Redis) -> None:
    """SPEC §4 Duplicates ("a repeated key with the same body replays the first answer";
    keys "live at least DUPLICATE_WINDOW_HOURS") and Lifecycle 3 (a CREATED answer ends as
    exactly one live callback), with README Lifecycle (when Genesys cannot say, the request
    runs afresh and any pending callback, beyond the window too, answers DUPLICATE).

    A create with ``conversationId`` C three days ahead is CREATED as X. A retry reaches an
    instance that cannot read X from Genesys (503), so ``_ended`` answers MAYBE and
    ``IdempotencyGate.take_over`` runs: it deletes the stored answer and puts the key in
    flight under this request's token. The reply of that script is lost (a Redis blip);
    the store connection retries the command once (``store.client.connect``), and the
    second run finds the key no longer ``done`` (0).
    ``CreateCallback._begin`` takes that as "another request took it over" and begins
    again: ``_BEGIN_IDEMPOTENT`` answers NEW, the owner being this request's own token, so
    the request runs as a plain one with no ``previous`` and not afresh. Refused (Genesys
    is down), ``_finish`` forgets the key: X's CREATED answer is gone. The next retry is a
    new request under the 48 h window alone and creates a second callback for the same
    conversation, number and time.

    Steps: create C at T0+3d (CREATED X); an instance behind a Redis fault proxy
    (REQUEST_DEADLINE_MS=1000), 503 on GET of callbacks, the reply to the take-over script
    dropped; it repeats the create; faults off; repeat until not 409 (bounded)."""
    first = make_service()
    conversation = "c0000000-0000-4000-8000-0000000000e2"
    far = when("2026-11-26T19:00:00Z")
    created = _act(first, conversationId=conversation, requestedTime=far)
    assert created["outcome"] == "CREATED", created
    sha = redis_client.script_load(_TAKE_OVER_IDEMPOTENT)
    proxy = FaultProxy(redis_server.port).start()
    try:
        config = Config.from_env(service_env(f"redis://127.0.0.1:{proxy.port}/0", sim.url,
                                             REQUEST_DEADLINE_MS="1000"))
        app = create_app(config, redis_client=connect(config.redis_url, 1.0),
                         http=new_session(), clock=FixedClock(T0))
        client = falcon.testing.TestClient(app)
        sim.control("PUT", "faults", {"status": 503, "method": "GET",
                                      "pathPrefix": "/api/v2/conversations/callbacks/"})
        proxy.drop_reply_to(str(sha).encode())
        client.simulate_post("/v1/actions/create-callback", headers=AUTH, json=create_body(
            customerNumber=NUMBER, conversationId=conversation, requestedTime=far))
    finally:
        sim.control("DELETE", "faults")
        proxy.close()
    assert proxy.dropped == 1
    again: dict[str, Any] = {}
    for _ in range(30):
        answer = first.action("create-callback", create_body(
            customerNumber=NUMBER, conversationId=conversation, requestedTime=far))
        if answer.status_code != 409:
            assert answer.status_code == 200, answer.text
            again = dict(answer.json)
            break
        time.sleep(0.5)
    live = _live(sim)
    assert live == {created["callbackId"]}, (
        "the stored answer was lost with the take-over reply: a second callback", again,
        created, sorted(live))
