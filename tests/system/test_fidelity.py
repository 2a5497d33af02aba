"""The fidelity check itself: it flags what a real org would refuse, and only the product's
requests are judged (the suite-wide verdict is asserted by ``tests/conftest.py``)."""

from __future__ import annotations

import base64
from typing import Any

import falcon.testing

from middleware.clock import FixedClock
from middleware.genesys.client import USER_AGENT
from middleware.sim.app import create_sim_app, load_org
from middleware.sim.fidelity import PRODUCT_AGENT, request_departures
from middleware.sim.models import ModelCatalog
from tests.conftest import CLIENT_ID, CLIENT_SECRET, DEMO_AGENT, DEMO_QUEUE, T0

CATALOG = ModelCatalog.load()
CREATE = ("CreateCallbackCommand", False)


def _create_body(**extra: Any) -> dict[str, Any]:
    return {"routingData": {"queueId": DEMO_QUEUE,
                            "scoredAgents": [{"agent": {"id": DEMO_AGENT}, "score": 100}],
                            "routingFlags": ["AGENT_OWNED_CALLBACK"]},
            "callbackNumbers": ["+14155552671"],
            "callbackScheduledTime": "2026-11-23T19:00:00.000Z", **extra}


def test_the_product_identifies_itself_as_the_simulator_expects() -> None:
    """The simulator recognises the product's calls by the User-Agent it sends."""
    assert USER_AGENT == PRODUCT_AGENT


def test_checker_passes_the_owner_read_the_product_sends() -> None:
    """GET /api/v2/users?id=&state=any with the four expands is what the SDK allows."""
    query = {"id": [DEMO_AGENT], "state": ["any"], "pageSize": ["1"],
             "expand": ["presence,routingStatus,outOfOffice,team"]}
    assert request_departures("GET /api/v2/users", query, None, None, CATALOG) == []


def test_checker_flags_a_query_value_outside_the_sdk() -> None:
    """state=any on the single-user read is named as the departure it is."""
    found = request_departures("GET /api/v2/users/{userId}", {"state": ["any"]}, None, None,
                               CATALOG)
    assert len(found) == 1
    assert "GET /api/v2/users/{userId}" in found[0] and "state='any'" in found[0]


def test_checker_flags_an_unknown_query_parameter_and_a_bad_page_size() -> None:
    """A parameter the SDK does not declare, and a page size out of range, are departures."""
    found = request_departures("GET /api/v2/users", {"ids": ["x"], "pageSize": ["0"]},
                               None, None, CATALOG)
    assert any("'ids'" in f for f in found) and any("pageSize" in f for f in found)


def test_checker_flags_a_body_that_breaks_its_model() -> None:
    """An invented field in a create is named with its path and the model."""
    found = request_departures("POST /api/v2/conversations/callbacks", {},
                               _create_body(ownerId=DEMO_AGENT), CREATE, CATALOG)
    assert found == ["POST /api/v2/conversations/callbacks: body ownerId (unknown.field) "
                     "against CreateCallbackCommand"]
    assert request_departures("POST /api/v2/conversations/callbacks", {}, _create_body(),
                              CREATE, CATALOG) == []


def test_checker_flags_a_path_the_sdk_does_not_have() -> None:
    """An invented endpoint (the seed documents' /api/v2/callbacks) is a departure."""
    found = request_departures("POST /api/v2/callbacks", {}, None, None, CATALOG)
    assert found == ["POST /api/v2/callbacks: no such method and path in the SDK"]


def _client() -> falcon.testing.TestClient:
    app = create_sim_app(load_org(None), clock=FixedClock(T0), rate_limit_per_min=1000,
                         token_ttl_s=3600, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    return falcon.testing.TestClient(app)


def _token(client: falcon.testing.TestClient) -> str:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    answer = client.simulate_post("/oauth/token", body="grant_type=client_credentials",
                                  headers={"Authorization": f"Basic {basic}",
                                           "Content-Type": "application/x-www-form-urlencoded"})
    return str(answer.json["access_token"])


def test_simulator_records_a_departing_product_request_even_under_a_fault() -> None:
    """A product request with a bad query is recorded (and refused with 400); one with a bad
    body is recorded though a fault answers it first; other clients are not judged."""
    client = _client()
    auth = {"Authorization": f"Bearer {_token(client)}"}
    product = {**auth, "User-Agent": f"{USER_AGENT}/1"}
    refused = client.simulate_get(f"/api/v2/users/{DEMO_AGENT}", params={"state": "any"},
                                  headers=product)
    assert refused.status_code == 400
    client.simulate_put("/sim/faults", json={"status": 503, "count": 1})
    faulted = client.simulate_post("/api/v2/conversations/callbacks",
                                   json=_create_body(ownerId="x"), headers=product)
    assert faulted.status_code == 503
    client.simulate_get(f"/api/v2/users/{DEMO_AGENT}", params={"state": "any"}, headers=auth)
    client.simulate_post("/sim/reset")
    report = client.simulate_get("/sim/fidelity").json
    assert report["checked"] == 2
    assert report["departures"][0].startswith("GET /api/v2/users/{userId}: query state=")
    assert "ownerId (unknown.field)" in report["departures"][1]
    client.simulate_delete("/sim/fidelity")
    assert client.simulate_get("/sim/fidelity").json == {"checked": 0, "departures": []}
