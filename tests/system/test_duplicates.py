"""Never a duplicate: the 48-hour window, idempotency keys, find-pending and cancel."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from middleware.app import build_duties, build_services
from middleware.deadline import Deadline
from middleware.genesys.client import new_session
from middleware.rules.number import NumberKeys
from middleware.store import _CLAIM_WINDOW, connect, keys
from tests.conftest import (
    API_KEY,
    T0,
    TEST_REDIS,
    RedisServer,
    Service,
    Simulator,
    create_body,
    service_env,
)
from tests.faultproxy import FaultProxy


def at(delta: timedelta) -> str:
    """An ISO instant ``delta`` after the tests' fixed now."""
    return (T0 + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def create(service: Service, **fields: Any) -> dict[str, Any]:
    result = service.action("create-callback", create_body(**fields))
    assert result.status_code == 200, result.text
    return dict(result.json)


@pytest.mark.parametrize("variant", [
    "tel:+14155552671", "(415) 555-2671", "415 555 2671", "415-555-2671", "+1 415-555-2671",
    "1 (415) 555 2671",
])
def test_formatting_variants_are_one_customer(service: Service, sim: Simulator,
                                              variant: str) -> None:
    """However the number is written, a second request finds the first callback."""
    first = create(service)
    second = create(service, customerNumber=variant, requestedTime=at(timedelta(hours=3)))
    assert (second["outcome"], second["reason"]) == ("DUPLICATE", "DUPLICATE_PENDING")
    assert second["existingCallbackId"] == first["callbackId"] == second["callbackId"]
    assert second["existingScheduledTimeUtc"] == first["scheduledTimeUtc"]
    assert second["existingAgentId"] == first["assignedAgentId"]
    assert "already scheduled" in second["message"]
    assert sim.creates() == 1


def test_pending_just_inside_window_is_duplicate(service: Service, sim: Simulator) -> None:
    """A callback pending 47h59m ahead makes the next request a DUPLICATE."""
    first = create(service, requestedTime=at(timedelta(hours=47, minutes=59)))
    second = create(service, requestedTime=at(timedelta(hours=1)))
    assert second["outcome"] == "DUPLICATE" and second["callbackId"] == first["callbackId"]


def test_pending_just_outside_window_allows_new_one(service: Service, sim: Simulator) -> None:
    """A callback 48h01m ahead is outside the window: a new one is created."""
    create(service, requestedTime=at(timedelta(hours=48, minutes=1)))
    second = create(service, requestedTime=at(timedelta(hours=1)))
    assert second["outcome"] == "CREATED"
    assert sim.creates() == 2


def test_window_moves_with_the_clock(service: Service, sim: Simulator) -> None:
    """The far callback enters the window once the clock advances past its boundary."""
    first = create(service, requestedTime=at(timedelta(hours=50)))
    service.clock.advance(timedelta(hours=3))
    second = create(service, requestedTime=at(timedelta(hours=4)))
    assert second["outcome"] == "DUPLICATE" and second["callbackId"] == first["callbackId"]


def test_cancelled_callback_does_not_block(service: Service, sim: Simulator) -> None:
    """cancel-callback disconnects in Genesys and frees the window for a new create."""
    first = create(service)
    cancel = service.action("create-callback".replace("create", "cancel"),
                            {"callbackId": first["callbackId"]}).json
    assert (cancel["outcome"], cancel["reason"]) == ("CANCELLED", "OK")
    held = {c["conversationId"]: c["state"] for c in sim.callbacks()}
    assert held[first["callbackId"]] == "disconnected"
    assert create(service)["outcome"] == "CREATED"


def test_completed_callback_leaves_window_through_reconciliation(
        service: Service, sim: Simulator, redis_server: RedisServer) -> None:
    """A callback completed in Genesys stops blocking once the worker reconciles."""
    first = create(service)
    sim.control("PATCH", f"callbacks/{first['callbackId']}", {"state": "completed"})
    assert create(service)["outcome"] == "DUPLICATE"
    services = build_services(service.config, redis_client=connect(redis_server.url, 1.0),
                              http=new_session(), clock=service.clock)
    [reconcile] = [d for d in build_duties(services) if d.name == "reconcile"]
    assert reconcile.run(Deadline(10)) == 1
    assert create(service)["outcome"] == "CREATED"


def test_rejected_request_leaves_no_claim(service: Service, sim: Simulator) -> None:
    """A request Genesys refuses releases the number at once: the next valid one creates."""
    refused = create(service, queueId="00000000-0000-4000-8000-00000000dead")
    assert refused["reason"] == "UPSTREAM_REJECTED"
    assert not [k for k in service.redis.scan_iter("*claim*")]
    assert create(service)["outcome"] == "CREATED"


def test_rotated_pii_key_still_finds_pending(make_service: Callable[..., Service],
                                             sim: Simulator) -> None:
    """After PII_KEYS rotation (new key first), callbacks keyed by the old key still count."""
    first = create(make_service(PII_KEYS="old-key"))
    second = create(make_service(PII_KEYS="new-key,old-key"),
                    requestedTime=at(timedelta(hours=2)))
    assert second["outcome"] == "DUPLICATE" and second["callbackId"] == first["callbackId"]


# -- idempotency keys ------------------------------------------------------------------


def test_same_key_same_body_replays_without_genesys(service: Service, sim: Simulator) -> None:
    """A repeated key with the same body replays the stored answer and calls nobody."""
    headers = {"Idempotency-Key": "key-1"}
    first = service.action("create-callback", create_body(), headers).json
    before = sum(sim.stats()["requests"].values())
    again = service.action("create-callback", create_body(), headers).json
    assert again["replayed"] is True and first["replayed"] is False
    assert again["callbackId"] == first["callbackId"] and again["outcome"] == "CREATED"
    assert again["requestId"] != first["requestId"]
    assert sum(sim.stats()["requests"].values()) == before


def test_key_in_body_field_works_like_header(service: Service, sim: Simulator) -> None:
    """idempotencyKey as a field is the same key as the header."""
    first = service.action("create-callback", create_body(idempotencyKey="k2")).json
    again = service.action("create-callback", create_body(), {"Idempotency-Key": "k2"}).json
    assert again["replayed"] is True and again["callbackId"] == first["callbackId"]


def test_same_key_different_body_is_422(service: Service, sim: Simulator) -> None:
    """Reusing a key for another request is refused with 422."""
    headers = {"Idempotency-Key": "key-3"}
    service.action("create-callback", create_body(), headers)
    result = service.action("create-callback", create_body(customerName="Someone Else"), headers)
    assert result.status_code == 422
    assert set(result.json) == {"title", "description", "requestId"}


def test_key_in_flight_is_409_with_retry_after(service: Service, sim: Simulator) -> None:
    """While the first request with a key waits on Genesys, a second gets 409 + Retry-After."""
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    headers = {"Idempotency-Key": "key-4"}
    results: dict[str, Any] = {}
    slow = threading.Thread(target=lambda: results.update(
        first=service.action("create-callback", create_body(), headers)))
    slow.start()
    time.sleep(0.5)
    second = service.action("create-callback", create_body(), headers)
    slow.join()
    assert second.status_code == 409 and int(second.headers["Retry-After"]) >= 1
    assert results["first"].json["outcome"] == "CREATED"


def test_rejected_answer_is_not_stored(service: Service, sim: Simulator) -> None:
    """A REJECTED answer frees its key: a corrected body with the same key is served."""
    headers = {"Idempotency-Key": "key-5"}
    refused = service.action("create-callback", create_body(consentGiven=False), headers).json
    assert refused["reason"] == "CONSENT_MISSING"
    accepted = service.action("create-callback", create_body(), headers).json
    assert accepted["outcome"] == "CREATED" and accepted["replayed"] is False


def test_duplicate_answer_is_stored_and_replayed(service: Service, sim: Simulator) -> None:
    """A DUPLICATE answer is kept for its key like a created one."""
    create(service)
    headers = {"Idempotency-Key": "key-6"}
    body = create_body(requestedTime=at(timedelta(hours=5)))
    first = service.action("create-callback", body, headers).json
    again = service.action("create-callback", body, headers).json
    assert first["outcome"] == again["outcome"] == "DUPLICATE" and again["replayed"] is True


def test_conversation_derives_a_key(service: Service, sim: Simulator) -> None:
    """Genesys retrying a timed-out action (same conversation) replays instead of recreating."""
    body = create_body(conversationId="c0ffee00-0000-4000-8000-000000000001")
    first = service.action("create-callback", body).json
    again = service.action("create-callback", {**body, "notes": "retry"}).json
    assert again["replayed"] is True and again["callbackId"] == first["callbackId"]


def test_keys_are_scoped_to_the_credential(service: Service, sim: Simulator) -> None:
    """The same key from another credential is another key: no replay of a stranger's answer."""
    service.action("create-callback", create_body(), {"Idempotency-Key": "shared"})
    other = service.client.simulate_post(
        "/v1/actions/create-callback", json=create_body(),
        headers={"X-API-Key": API_KEY, "Idempotency-Key": "shared"}).json
    assert other["replayed"] is False and other["outcome"] == "DUPLICATE"


# -- find-pending-callbacks and cancel-callback ----------------------------------------


def test_find_pending_reports_none_then_the_earliest(service: Service, sim: Simulator) -> None:
    """NONE before any callback; FOUND with count and the earliest after two."""
    number = {"customerNumber": "(415) 555-2671"}
    none = service.action("find-pending-callbacks", number).json
    assert (none["outcome"], none["hasPending"], none["windowHours"]) == ("NONE", False, 48)
    late = create(service, requestedTime=at(timedelta(hours=49)))
    early = create(service, requestedTime=at(timedelta(hours=2)))
    assert late["outcome"] == early["outcome"] == "CREATED"
    service.clock.advance(timedelta(hours=1, minutes=30))
    found = service.action("find-pending-callbacks", number).json
    assert (found["outcome"], found["pendingCount"]) == ("FOUND", 2)
    assert found["callbackId"] == early["callbackId"]
    assert found["customerNumberE164"] == "+14155552671"


def test_find_pending_rejects_invalid_number(service: Service) -> None:
    """An invalid number is REJECTED INVALID_NUMBER."""
    found = service.action("find-pending-callbacks", {"customerNumber": "12"}).json
    assert (found["outcome"], found["reason"]) == ("REJECTED", "INVALID_NUMBER")


def test_cancel_unknown_callback_is_not_found(service: Service, sim: Simulator) -> None:
    """A callback id this service did not create is NOT_FOUND; Genesys is not asked."""
    answer = service.action("cancel-callback",
                            {"callbackId": "00000000-0000-4000-8000-000000000000"}).json
    assert (answer["outcome"], answer["reason"]) == ("NOT_FOUND", "NOT_FOUND")
    assert sum(sim.stats()["requests"].values()) == 0


def test_cancel_twice_is_idempotent(service: Service, sim: Simulator) -> None:
    """Cancelling an already cancelled callback answers CANCELLED without a second call."""
    first = create(service)
    service.action("cancel-callback", {"callbackId": first["callbackId"]})
    again = service.action("cancel-callback", {"callbackId": first["callbackId"]}).json
    assert again["outcome"] == "CANCELLED" and "already" in again["message"]


# -- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["claim", "journal"])
@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the fault proxy fronts one node; a "
                    "cluster client follows redirects to the real ports")
def test_lost_claim_reply_is_not_a_false_duplicate(redis_server: RedisServer, sim: Simulator,
                                                   redis_client: Any, step: str) -> None:
    """Redis runs the claim (a number with a callback indexed takes the claim script; a
    fresh one, the warm step that claims, journals and stores the consent at once) but its
    reply is lost: the retry sees our own claim or journal → CREATED, one callback, and the
    consent the request gave is in the evidence once."""
    import falcon.testing

    from middleware.app import create_app
    from middleware.clock import FixedClock
    from middleware.config import Config
    from tests.conftest import AUTH

    proxy = FaultProxy(redis_server.port).start()
    try:
        config = Config.from_env(service_env(f"redis://127.0.0.1:{proxy.port}/0", sim.url))
        app = create_app(config, redis_client=connect(config.redis_url, 1.0),
                         http=new_session(), clock=FixedClock(T0))
        client = falcon.testing.TestClient(app)
        if step == "claim":
            # An entry left in the number's index (its record gone) sends it to the claim.
            digest = NumberKeys(config.pii_keys).current("+14155552671")
            redis_client.zadd(keys.pending(digest), {"gone-callback": T0.timestamp() * 1000})
            proxy.drop_reply_to(hashlib.sha1(_CLAIM_WINDOW.encode()).hexdigest().encode())  # noqa: S324
        else:
            # The step's window argument ("W:<window end>:..."), sent with the script's hash.
            proxy.drop_reply_to(b"\r\nW:")
        answer = client.simulate_post("/v1/actions/create-callback", json=create_body(),
                                      headers=AUTH).json
    finally:
        proxy.close()
    assert proxy.dropped == 1
    assert answer["outcome"] == "CREATED", answer
    assert sim.creates() == 1
    digest = NumberKeys(config.pii_keys).current("+14155552671")
    events = [json.loads(e)["e"] for e in redis_client.lrange(keys.events(digest), 0, -1)]
    assert events.count("co") == 1, events


def test_daily_cap_per_number(service: Service, sim: Simulator) -> None:
    """A fourth callback for one number within 24 hours is refused, even with the window free;
    a day later it is accepted again."""
    for _ in range(3):
        made = create(service)
        assert made["outcome"] == "CREATED"
        service.action("cancel-callback", {"callbackId": made["callbackId"]})
    refused = create(service)
    assert (refused["outcome"], refused["reason"]) == ("REJECTED", "TOO_MANY_REQUESTS_FOR_NUMBER")
    assert sim.creates() == 3
    service.clock.advance(timedelta(hours=24, minutes=1))
    assert create(service, requestedTime=at(timedelta(hours=26)))["outcome"] == "CREATED"
