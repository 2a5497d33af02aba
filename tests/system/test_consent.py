"""Consent you can prove: the rule of create, record and revoke, the evidence export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ROOT,
    T0,
    Service,
    Simulator,
    create_body,
    service_env,
    start_redis,
)


def iso(delta: timedelta) -> str:
    return (T0 + delta).isoformat()


def create(service: Service, **fields: Any) -> dict[str, Any]:
    result = service.action("create-callback", create_body(**fields))
    assert result.status_code == 200, result.text
    return dict(result.json)


def record(service: Service, number: str = "+14155552671", **fields: Any) -> dict[str, Any]:
    body = {"customerNumber": number, "consentSource": "IVR_KEYPRESS",
            "consentText": "Press 1 to be called back (script v3)", **fields}
    return dict(service.action("record-consent", body).json)


def assert_refused_without_genesys(sim: Simulator, answer: dict[str, Any], reason: str) -> None:
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", reason), answer
    assert sum(sim.stats()["requests"].values()) == 0


def test_consent_given_false_is_missing(service: Service, sim: Simulator) -> None:
    """consentGiven false: CONSENT_MISSING, Genesys untouched."""
    assert_refused_without_genesys(sim, create(service, consentGiven=False), "CONSENT_MISSING")


def test_inline_consent_is_recorded_and_carried_to_genesys(service: Service,
                                                           sim: Simulator) -> None:
    """Consent given inside a create becomes a record whose id the callback carries."""
    answer = create(service, consentSource="AGENT_VERBAL", consentText="Agent script 7")
    assert answer["outcome"] == "CREATED" and answer["consentId"]
    assert sim.callbacks()[0]["data"]["consentId"] == answer["consentId"]


def test_unknown_consent_id_is_not_found(service: Service, sim: Simulator) -> None:
    """A consentId never recorded is CONSENT_NOT_FOUND."""
    answer = create(service, consentId="00000000-0000-4000-8000-000000000000")
    assert_refused_without_genesys(sim, answer, "CONSENT_NOT_FOUND")


def test_consent_id_of_another_number_is_not_found(service: Service, sim: Simulator) -> None:
    """A consent recorded for one number cannot cover another."""
    other = record(service, number="+12125550199")["consentId"]
    assert_refused_without_genesys(sim, create(service, consentId=other), "CONSENT_NOT_FOUND")


def test_recorded_consent_id_is_relied_on(service: Service, sim: Simulator) -> None:
    """A create may rely on a consent recorded earlier; the callback carries its id."""
    recorded = record(service, consentCapturedAt=iso(-timedelta(hours=1)))
    assert recorded["outcome"] == "RECORDED"
    answer = create(service, consentId=recorded["consentId"])
    assert answer["outcome"] == "CREATED" and answer["consentId"] == recorded["consentId"]
    assert sim.callbacks()[0]["data"]["consentId"] == recorded["consentId"]


@pytest.mark.parametrize("captured", [-timedelta(hours=73), timedelta(minutes=10)])
def test_old_or_future_consent_is_stale(service: Service, sim: Simulator,
                                        captured: timedelta) -> None:
    """Captured more than 72 h ago, or more than 5 min ahead: CONSENT_STALE."""
    answer = create(service, consentCapturedAt=iso(captured))
    assert_refused_without_genesys(sim, answer, "CONSENT_STALE")


@pytest.mark.parametrize("captured", [-timedelta(hours=71), timedelta(minutes=4)])
def test_recent_consent_and_small_skew_pass(service: Service, sim: Simulator,
                                            captured: timedelta) -> None:
    """71 hours ago, or 4 minutes ahead (clock skew), is fresh enough."""
    assert create(service, consentCapturedAt=iso(captured))["outcome"] == "CREATED"


def test_recorded_consent_goes_stale_with_time(service: Service, sim: Simulator) -> None:
    """A stored consent relied on after CONSENT_MAX_AGE_HOURS is stale."""
    consent_id = record(service)["consentId"]
    service.clock.advance(timedelta(hours=73))
    assert_refused_without_genesys(sim, create(service, consentId=consent_id), "CONSENT_STALE")


def test_consent_reasons_in_spec_order(service: Service, sim: Simulator) -> None:
    """Missing beats not-found, which beats revoked, which beats stale."""
    service.action("revoke-consent", {"customerNumber": "+14155552671"})
    unknown = "00000000-0000-4000-8000-000000000000"
    stale = iso(-timedelta(hours=100))
    assert create(service, consentGiven=False, consentId=unknown)["reason"] == "CONSENT_MISSING"
    assert create(service, consentId=unknown)["reason"] == "CONSENT_NOT_FOUND"
    assert create(service, consentCapturedAt=stale)["reason"] == "CONSENT_REVOKED"


def test_revoke_cancels_pending_and_blocks_until_new_consent(service: Service,
                                                             sim: Simulator) -> None:
    """Revoke with two pending: both disconnected, window free, creates refused until
    record-consent stores a consent captured after the revocation."""
    first = create(service, requestedTime=iso(timedelta(hours=49)))
    second = create(service, requestedTime=iso(timedelta(hours=2)))
    assert first["outcome"] == second["outcome"] == "CREATED"
    revoked = service.action("revoke-consent", {"customerNumber": "(415) 555-2671",
                                                "conversationId": "conv-9"}).json
    assert (revoked["outcome"], revoked["reason"], revoked["cancelledCount"]) == (
        "REVOKED", "OK", 2)
    states = {c["conversationId"]: c["state"] for c in sim.callbacks()}
    assert states == {first["callbackId"]: "disconnected", second["callbackId"]: "disconnected"}
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert found["outcome"] == "NONE"

    assert create(service)["reason"] == "CONSENT_REVOKED"
    older = record(service, consentCapturedAt=iso(-timedelta(minutes=30)))
    assert older["outcome"] == "RECORDED"
    assert create(service, consentId=older["consentId"])["reason"] == "CONSENT_REVOKED"
    service.clock.advance(timedelta(minutes=1))
    assert record(service)["outcome"] == "RECORDED"
    assert create(service)["outcome"] == "CREATED"


def test_revoke_without_cancel_keeps_pending(service: Service, sim: Simulator) -> None:
    """cancelPending false records the withdrawal and leaves callbacks alone."""
    create(service)
    answer = service.action("revoke-consent", {"customerNumber": "+14155552671",
                                               "cancelPending": False}).json
    assert (answer["outcome"], answer["cancelledCount"]) == ("REVOKED", 0)
    assert [c["state"] for c in sim.callbacks()] == ["scheduled"]


def test_record_consent_refuses_future_capture(service: Service) -> None:
    """A consent captured in the future cannot be recorded."""
    answer = record(service, consentCapturedAt=iso(timedelta(hours=1)))
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "CONSENT_STALE")


def test_record_consent_requires_a_source(service: Service) -> None:
    """consentSource is required and must be one of the documented sources."""
    assert service.action("record-consent", {"customerNumber": "+14155552671"}
                          ).status_code == 400
    assert service.action("record-consent", {"customerNumber": "+14155552671",
                                             "consentSource": "CARRIER_PIGEON"}
                          ).status_code == 400


def test_evidence_shows_history_and_survives_redis_restart(
        tmp_path: Path, sim: Simulator, make_service: Any) -> None:
    """consent-evidence prints every consent, revocation and callback in order, also after
    Redis restarts from its AOF."""
    import falcon.testing

    from middleware.app import create_app
    from middleware.clock import FixedClock
    from middleware.config import Config
    from middleware.genesys.client import new_session
    from middleware.store import connect
    from tests.conftest import AUTH

    redis = start_redis(tmp_path / "aof")
    env = service_env(redis.url, sim.url)
    try:
        config = Config.from_env(env)
        clock = FixedClock(T0)
        client = falcon.testing.TestClient(create_app(
            config, redis_client=connect(redis.url, 1.0), http=new_session(), clock=clock))

        def post(action: str, body: dict[str, Any]) -> dict[str, Any]:
            return dict(client.simulate_post(f"/v1/actions/{action}", json=body,
                                             headers=AUTH).json)

        post("record-consent", {"customerNumber": "+14155552671", "consentSource": "SMS",
                                "customerName": "Grace Customer", "consentText": "YES"})
        created = post("create-callback", create_body(consentSource="IVR_VOICE"))
        clock.advance(timedelta(minutes=5))
        post("revoke-consent", {"customerNumber": "+14155552671"})
        redis.process.terminate()
        redis.process.wait(10)
        redis = start_redis(tmp_path / "aof", port=redis.port)

        output = subprocess.run(
            [sys.executable, "-m", "middleware", "consent-evidence", "--number",
             "(415) 555-2671", "--format", "json"],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
            check=True).stdout
        table = subprocess.run(
            [sys.executable, "-m", "middleware", "consent-evidence", "--number",
             "+14155552671"], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
            text=True, timeout=30, check=True).stdout
    finally:
        redis.process.terminate()
        redis.process.wait(10)
    events = json.loads(output)["events"]
    assert [e["event"] for e in events] == [
        "consent", "consent", "callback", "revocation", "callback-closed"]
    assert events[0]["customerName"] == "Grace Customer" and events[0]["consentText"] == "YES"
    assert events[2]["callbackId"] == created["callbackId"]
    assert events[2]["consentId"] == events[1]["consentId"]
    assert "revocation" in table and created["callbackId"] in table


def test_revoke_during_an_in_flight_create_wins(service: Service, sim: Simulator) -> None:
    """Consent withdrawn while Genesys is still creating the callback: the create, once it
    lands, is disconnected at once, and nothing stays scheduled for the number."""
    import threading
    import time

    sim.control("PUT", "faults", {"latencyMs": 1200, "count": 1, "method": "POST",
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    results: dict[str, Any] = {}
    creating = threading.Thread(target=lambda: results.update(
        create=service.action("create-callback", create_body()).json))
    creating.start()
    time.sleep(0.5)
    revoked = service.action("revoke-consent", {"customerNumber": "+14155552671"}).json
    creating.join()
    assert (revoked["outcome"], revoked["cancelledCount"]) == ("REVOKED", 1)
    assert (results["create"]["outcome"], results["create"]["reason"]) == (
        "REJECTED", "CONSENT_REVOKED")
    assert [c["state"] for c in sim.callbacks()] == ["disconnected"]
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert found["outcome"] == "NONE"
