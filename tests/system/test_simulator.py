"""The Genesys Cloud simulator over real HTTP: a loopback server in a thread, driven by requests."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests

from middleware.clock import FixedClock
from middleware.sim import api
from middleware.sim.app import create_sim_app, load_org
from middleware.sim.models import OPAQUE_MODELS, ModelCatalog
from middleware.sim.org import OrgError, build_org
from middleware.sim.state import Simulator

# A Friday, two days before the US springs forward (2025-03-09) and weeks before the UK does.
START = datetime(2025, 3, 7, 15, 0, tzinfo=UTC)
CLIENT_ID, CLIENT_SECRET = "sim-client", "sim-secret"
QUEUE = "b1000000-0000-4000-8000-000000000001"
TEAM_ATLANTIC = "c1000000-0000-4000-8000-000000000001"
ADA = "a1000000-0000-4000-8000-000000000001"
BOB = "a1000000-0000-4000-8000-000000000002"
CHLOE = "a1000000-0000-4000-8000-000000000003"
TOM = "a1000000-0000-4000-8000-000000000006"
OLIVIA = "a1000000-0000-4000-8000-000000000007"
IAN = "a1000000-0000-4000-8000-000000000008"
NORA = "a1000000-0000-4000-8000-000000000009"
WALTER = "a1000000-0000-4000-8000-000000000010"
GRACE = "a1000000-0000-4000-8000-000000000090"
DIANA = "a1000000-0000-4000-8000-000000000099"
MU_AMERICAS = "e2000000-0000-4000-8000-000000000001"
MU_EMEA = "e2000000-0000-4000-8000-000000000002"
BU_AMERICAS = "e1000000-0000-4000-8000-000000000001"
NUMBER = "+14155552671"
TIMEOUT = 5


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections under concurrent clients.
    request_queue_size = 64


class _Handler(WSGIRequestHandler):
    """Quiet, and hands the app the client socket under gunicorn's key, so drops work."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        environ = dict(super().get_environ())
        environ["gunicorn.socket"] = self.connection
        return environ


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """One simulator for the module, on a free loopback port."""
    app = create_sim_app(
        load_org(None), clock=FixedClock(START), rate_limit_per_min=10_000, token_ttl_s=3600,
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
    )
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer,
                         handler_class=_Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=TIMEOUT)


@dataclass
class Sim:
    """A client of the simulator: platform calls with a bearer token, control calls without."""

    url: str
    http: requests.Session
    _token: str | None = field(default=None, repr=False)

    def fetch_token(self, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET,
                    grant: str = "client_credentials") -> requests.Response:
        return self.http.post(f"{self.url}/oauth/token", auth=(client_id, secret),
                              data={"grant_type": grant}, timeout=TIMEOUT)

    def token(self) -> str:
        if self._token is None:
            answer = self.fetch_token()
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return self.http.request(method, f"{self.url}{path}", headers=headers, timeout=TIMEOUT,
                                 **kwargs)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, f"{self.url}{path}", json=body, timeout=TIMEOUT)
        answer.raise_for_status()
        return answer.json()

    def create(self, **overrides: Any) -> dict[str, Any]:
        answer = self.api("POST", "/api/v2/conversations/callbacks",
                          json=callback_body(**overrides))
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture
def sim(sim_url: str) -> Iterator[Sim]:
    """The module's simulator, reset to its seed before each test."""
    with requests.Session() as http:
        http.post(f"{sim_url}/sim/reset", timeout=TIMEOUT).raise_for_status()
        yield Sim(sim_url, http)


def callback_body(**overrides: Any) -> dict[str, Any]:
    """An agent-owned callback for Ada, as the middleware sends it."""
    body: dict[str, Any] = {
        "routingData": {
            "queueId": QUEUE,
            "scoredAgents": [{"agent": {"id": ADA}, "score": 100}],
            "routingFlags": ["AGENT_OWNED_CALLBACK"],
        },
        "callbackNumbers": [NUMBER],
        "callbackUserName": "Erika Mustermann",
        "callbackScheduledTime": "2025-03-08T14:30:00.000Z",
        "validateCallbackNumbers": True,
        "data": {"requestToken": "rt-1", "consentId": "consent-1"},
    }
    body.update(overrides)
    return body


def bad_fields(answer: requests.Response) -> set[tuple[str, str]]:
    """The (fieldName, errorCode) pairs of a 400 ErrorBody."""
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["code"] == "bad.request"
    return {(d["fieldName"], d["errorCode"]) for d in body["details"]}


def acd_id(created: dict[str, Any]) -> str:
    """The ACD callback identifier of a create answer."""
    return next(i["id"] for i in created["callbackIdentifiers"] if i["type"] == "ACD")


# --- OAuth and bearer tokens -------------------------------------------------------------


def test_token_is_issued_for_good_client_credentials(sim: Sim) -> None:
    """Client credentials get a bearer token with its lifetime."""
    answer = sim.fetch_token()
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"]


def test_token_is_refused_as_invalid_client_for_a_bad_secret(sim: Sim) -> None:
    """A wrong secret gets 401 in the OAuth error shape."""
    answer = sim.fetch_token(secret="wrong")
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert set(answer.json()) == {"error", "description", "error_description"}


def test_token_is_refused_for_an_unsupported_grant(sim: Sim) -> None:
    """Only the client-credentials grant is accepted."""
    answer = sim.fetch_token(grant="password")
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_api_call_without_bearer_is_authentication_required(sim: Sim) -> None:
    """No token: 401 ErrorBody whose contextId is the correlation id header."""
    answer = sim.http.get(f"{sim.url}/api/v2/users/{ADA}", timeout=TIMEOUT)
    assert answer.status_code == 401
    body = answer.json()
    assert body["code"] == "authentication.required"
    assert body["contextId"] == answer.headers["ININ-Correlation-Id"]
    assert body["details"] == [] and body["errors"] == []


def test_api_call_with_an_unknown_token_is_bad_credentials(sim: Sim) -> None:
    """A token the simulator never issued gets 401 bad.credentials."""
    answer = sim.http.get(f"{sim.url}/api/v2/users/{ADA}",
                          headers={"Authorization": "Bearer forged"}, timeout=TIMEOUT)
    assert answer.status_code == 401
    assert answer.json()["code"] == "bad.credentials"


def test_expired_tokens_get_401_until_a_new_one_is_fetched(sim: Sim) -> None:
    """After /sim/tokens/expire the old token fails and a fresh one works."""
    assert sim.api("GET", f"/api/v2/users/{ADA}").status_code == 200
    assert sim.control("POST", "/sim/tokens/expire") == {"expired": 1}
    assert sim.api("GET", f"/api/v2/users/{ADA}").status_code == 401
    sim._token = None
    assert sim.api("GET", f"/api/v2/users/{ADA}").status_code == 200
    assert sim.control("GET", "/sim/stats")["tokenFetches"] == 2


# --- Callbacks ---------------------------------------------------------------------------


def test_agent_owned_callback_is_created_and_read_back(sim: Sim) -> None:
    """The owner, number, time and data come back on the customer participant."""
    created = sim.create()
    assert {i["type"] for i in created["callbackIdentifiers"]} == {"ACD", "EXTERNAL"}
    conversation_id = created["conversation"]["id"]
    answer = sim.api("GET", f"/api/v2/conversations/callbacks/{conversation_id}")
    assert answer.status_code == 200
    customer = next(p for p in answer.json()["participants"] if p["purpose"] == "customer")
    # CallbackMediaParticipant has no "scheduled": a pending participant carries no state.
    assert "state" not in customer
    assert customer["user"]["id"] == ADA
    assert customer["queue"]["id"] == QUEUE
    assert customer["callbackNumbers"] == [NUMBER]
    assert customer["callbackScheduledTime"] == "2025-03-08T14:30:00.000Z"
    assert customer["attributes"] == {"requestToken": "rt-1", "consentId": "consent-1"}
    assert customer["conversationRoutingData"]["scoredAgents"] == [
        {"agent": {"id": ADA, "selfUri": f"/api/v2/users/{ADA}"}, "score": 100}
    ]


def test_control_lists_callback_with_owner_and_raw_request(sim: Sim) -> None:
    """/sim/callbacks shows the state, the owner and the body exactly as sent."""
    created = sim.create()
    [listed] = sim.control("GET", "/sim/callbacks")["callbacks"]
    assert listed["conversationId"] == created["conversation"]["id"]
    assert listed["state"] == "scheduled"
    assert listed["ownerAgentId"] == ADA
    assert listed["request"] == callback_body()
    assert listed["createdAt"] == "2025-03-07T15:00:00.000Z"


def test_callback_without_agent_owned_flag_has_no_owner(sim: Sim) -> None:
    """A queue callback (no routing flag, no scored agent) goes to the queue unowned."""
    sim.create(routingData={"queueId": QUEUE})
    [listed] = sim.control("GET", "/sim/callbacks")["callbacks"]
    assert listed["ownerAgentId"] is None


def test_unknown_callback_is_404_error_body(sim: Sim) -> None:
    """Reading a conversation that does not exist is a 404 ErrorBody."""
    answer = sim.api("GET", "/api/v2/conversations/callbacks/00000000-0000-4000-8000-000000000000")
    assert answer.status_code == 404
    assert answer.json()["code"] == "not.found"


def test_bulk_disconnect_with_acd_id_disconnects_the_callback(sim: Sim) -> None:
    """204 with no body, then the callback reads disconnected everywhere."""
    created = sim.create()
    conversation_id = created["conversation"]["id"]
    answer = sim.api("POST", "/api/v2/conversations/callbacks/bulk/disconnect", json={
        "callbackDisconnectIdentifiers": [
            {"conversationId": conversation_id, "callbackId": acd_id(created)}
        ]
    })
    assert answer.status_code == 204
    assert answer.content == b""
    [listed] = sim.control("GET", "/sim/callbacks")["callbacks"]
    assert listed["state"] == "disconnected"
    assert listed["history"][0]["action"] == "disconnected"
    read = sim.api("GET", f"/api/v2/conversations/callbacks/{conversation_id}").json()
    assert {p["state"] for p in read["participants"]} == {"disconnected"}


def test_bulk_disconnect_with_the_external_id_is_refused(sim: Sim) -> None:
    """callbackId must be the ACD identifier; the 400 names it."""
    created = sim.create()
    external = next(i["id"] for i in created["callbackIdentifiers"] if i["type"] == "EXTERNAL")
    answer = sim.api("POST", "/api/v2/conversations/callbacks/bulk/disconnect", json={
        "callbackDisconnectIdentifiers": [
            {"conversationId": created["conversation"]["id"], "callbackId": external}
        ]
    })
    assert bad_fields(answer) == {("callbackDisconnectIdentifiers[0].callbackId", "invalid.value")}


def test_patch_conversation_disconnected_ends_the_callback(sim: Sim) -> None:
    """PATCH {"state":"disconnected"} answers the Conversation, now ended."""
    conversation_id = sim.create()["conversation"]["id"]
    answer = sim.api("PATCH", f"/api/v2/conversations/callbacks/{conversation_id}",
                     json={"state": "disconnected"})
    assert answer.status_code == 200
    assert answer.json()["state"] == "disconnected"
    assert answer.json()["participants"][0]["callbacks"][0]["state"] == "disconnected"


def test_patch_conversation_with_another_state_is_refused(sim: Sim) -> None:
    """Only 'disconnected' is valid on update."""
    conversation_id = sim.create()["conversation"]["id"]
    answer = sim.api("PATCH", f"/api/v2/conversations/callbacks/{conversation_id}",
                     json={"state": "connected"})
    assert bad_fields(answer) == {("state", "invalid.value")}


def test_patch_callback_reschedules_and_keeps_the_owner(sim: Sim) -> None:
    """A new time is applied; ownership does not move and the patch is in the history."""
    created = sim.create()
    answer = sim.api("PATCH", "/api/v2/conversations/callbacks", json={
        "conversationId": created["conversation"]["id"], "agentId": BOB,
        "callbackScheduledTime": "2025-03-09T10:00:00.000Z",
    })
    assert answer.status_code == 200
    assert answer.json()["conversation"]["id"] == created["conversation"]["id"]
    [listed] = sim.control("GET", "/sim/callbacks")["callbacks"]
    assert listed["callbackScheduledTime"] == "2025-03-09T10:00:00.000Z"
    assert listed["ownerAgentId"] == ADA
    assert listed["history"][0]["action"] == "patch"


def test_patch_callback_without_agent_id_is_refused(sim: Sim) -> None:
    """agentId is required by the PatchCallbackRequest model."""
    created = sim.create()
    answer = sim.api("PATCH", "/api/v2/conversations/callbacks", json={
        "conversationId": created["conversation"]["id"],
        "callbackScheduledTime": "2025-03-09T10:00:00.000Z",
    })
    assert bad_fields(answer) == {("agentId", "required.field.missing")}


def test_control_completes_a_callback_elsewhere(sim: Sim) -> None:
    """PATCH /sim/callbacks/{id} completed: the participants read disconnected (the models
    cannot tell completed from cancelled)."""
    conversation_id = sim.create()["conversation"]["id"]
    listed = sim.control("PATCH", f"/sim/callbacks/{conversation_id}", {"state": "completed"})
    assert listed["state"] == "completed"
    read = sim.api("GET", f"/api/v2/conversations/callbacks/{conversation_id}").json()
    assert {p["state"] for p in read["participants"]} == {"disconnected"}


# --- Body validation ---------------------------------------------------------------------


def test_unknown_nested_field_is_refused_naming_its_path(sim: Sim) -> None:
    """A field the model lacks is named by its full path."""
    body = callback_body()
    body["routingData"]["scoredAgents"][0]["agent"]["nickname"] = "Ada"
    answer = sim.api("POST", "/api/v2/conversations/callbacks", json=body)
    assert bad_fields(answer) == {("routingData.scoredAgents[0].agent.nickname", "unknown.field")}


def test_invented_owner_field_is_refused(sim: Sim) -> None:
    """There is no ownerId in CreateCallbackCommand."""
    answer = sim.api("POST", "/api/v2/conversations/callbacks", json=callback_body(ownerId=ADA))
    assert bad_fields(answer) == {("ownerId", "unknown.field")}


def test_wrong_json_type_is_refused_naming_the_field(sim: Sim) -> None:
    """priority is an int, not a string."""
    body = callback_body()
    body["routingData"]["priority"] = "high"
    answer = sim.api("POST", "/api/v2/conversations/callbacks", json=body)
    assert bad_fields(answer) == {("routingData.priority", "invalid.type")}


def test_data_values_must_be_strings(sim: Sim) -> None:
    """data is dict(str, str): a number value is refused."""
    answer = sim.api("POST", "/api/v2/conversations/callbacks",
                     json=callback_body(data={"attempt": 2}))
    assert bad_fields(answer) == {("data.attempt", "invalid.type")}


def test_missing_callback_numbers_is_refused(sim: Sim) -> None:
    """callbackNumbers is the model's required field."""
    body = callback_body()
    del body["callbackNumbers"]
    answer = sim.api("POST", "/api/v2/conversations/callbacks", json=body)
    assert bad_fields(answer) == {("callbackNumbers", "required.field.missing")}


def test_empty_callback_numbers_is_refused(sim: Sim) -> None:
    """At least one number is needed."""
    answer = sim.api("POST", "/api/v2/conversations/callbacks",
                     json=callback_body(callbackNumbers=[]))
    assert bad_fields(answer) == {("callbackNumbers", "invalid.value")}


def test_value_outside_the_enum_is_refused(sim: Sim) -> None:
    """customerFirstCallbackDeliveryMode takes only its enum values."""
    answer = sim.api("POST", "/api/v2/conversations/callbacks",
                     json=callback_body(customerFirstCallbackDeliveryMode="Sometimes"))
    assert bad_fields(answer) == {("customerFirstCallbackDeliveryMode", "invalid.enum.value")}


def test_non_e164_number_is_refused_when_validation_is_requested(sim: Sim) -> None:
    """validateCallbackNumbers=true needs E.164; the 400 names the number's index."""
    answer = sim.api("POST", "/api/v2/conversations/callbacks",
                     json=callback_body(callbackNumbers=["(415) 555-2671"]))
    assert bad_fields(answer) == {("callbackNumbers[0]", "invalid.phone.number")}


def test_non_e164_number_passes_without_validation(sim: Sim) -> None:
    """Without the flag the platform takes the number as given."""
    sim.create(callbackNumbers=["(415) 555-2671"], validateCallbackNumbers=False)


def test_scheduled_time_without_zone_is_refused(sim: Sim) -> None:
    """A naive instant cannot be placed; it is refused."""
    answer = sim.api("POST", "/api/v2/conversations/callbacks",
                     json=callback_body(callbackScheduledTime="2025-03-08T14:30:00"))
    assert bad_fields(answer) == {("callbackScheduledTime", "invalid.datetime")}


def test_unknown_scored_agent_is_refused_naming_the_agent_id(sim: Sim) -> None:
    """A scored agent must be a user of the org."""
    body = callback_body()
    body["routingData"]["scoredAgents"][0]["agent"]["id"] = "00000000-0000-4000-8000-000000000000"
    answer = sim.api("POST", "/api/v2/conversations/callbacks", json=body)
    assert bad_fields(answer) == {("routingData.scoredAgents[0].agent.id", "entity.not.found")}


def test_missing_routing_queue_is_refused(sim: Sim) -> None:
    """routingData.queueId is required by RoutingData."""
    body = callback_body()
    del body["routingData"]["queueId"]
    answer = sim.api("POST", "/api/v2/conversations/callbacks", json=body)
    assert ("routingData.queueId", "required.field.missing") in bad_fields(answer)


def test_callback_beyond_thirty_days_is_refused(sim: Sim) -> None:
    """No callback is scheduled more than 30 days ahead."""
    answer = sim.api("POST", "/api/v2/conversations/callbacks",
                     json=callback_body(callbackScheduledTime="2025-04-20T14:30:00.000Z"))
    assert bad_fields(answer) == {("callbackScheduledTime", "invalid.value")}


def test_rejected_bodies_are_counted(sim: Sim) -> None:
    """Every refused platform body shows in /sim/stats."""
    sim.api("POST", "/api/v2/conversations/callbacks", json=callback_body(callbackNumbers=[]))
    assert sim.control("GET", "/sim/stats")["rejectedBodies"] == 1


# --- Rate limit --------------------------------------------------------------------------


def test_requests_over_the_limit_get_429_with_retry_after(sim: Sim) -> None:
    """With 2 per minute the third call is refused in the platform's 429 shape."""
    sim.token()
    sim.control("PUT", "/sim/ratelimit", {"perMinute": 2})
    assert [sim.api("GET", f"/api/v2/users/{ADA}").status_code for _ in range(2)] == [200, 200]
    answer = sim.api("GET", f"/api/v2/users/{ADA}")
    assert answer.status_code == 429
    retry_after = int(answer.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    body = answer.json()
    assert body["code"] == "too.many.requests.retry.after"
    assert body["message"] == (
        f"Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds"
    )
    assert sim.control("GET", "/sim/stats")["rateLimited"] == 1


def test_answers_carry_the_rate_limit_headers(sim: Sim) -> None:
    """Normal answers say how much of the limit is used."""
    answer = sim.api("GET", f"/api/v2/users/{ADA}")
    assert answer.headers["inin-ratelimit-allowed"] == "10000"
    assert int(answer.headers["inin-ratelimit-count"]) >= 1
    assert int(answer.headers["inin-ratelimit-reset"]) >= 0


# --- Faults ------------------------------------------------------------------------------


def test_fault_with_count_fails_that_many_requests_then_clears(sim: Sim) -> None:
    """A 503 fault for 2 requests on one prefix, with Retry-After."""
    sim.token()
    sim.control("PUT", "/sim/faults",
                {"status": 503, "retryAfter": 2, "count": 2, "pathPrefix": "/api/v2/users"})
    answers = [sim.api("GET", f"/api/v2/users/{ADA}") for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "2"
    assert answers[0].json()["code"] == "service.unavailable"
    assert sim.control("GET", "/sim/faults") == {"fault": None}


def test_fault_only_hits_its_method_and_prefix(sim: Sim) -> None:
    """A POST-only fault on callbacks leaves user reads alone."""
    sim.token()
    sim.control("PUT", "/sim/faults", {"status": 500, "method": "POST",
                                       "pathPrefix": "/api/v2/conversations/callbacks"})
    assert sim.api("GET", f"/api/v2/users/{ADA}").status_code == 200
    answer = sim.api("POST", "/api/v2/conversations/callbacks", json=callback_body())
    assert answer.status_code == 500


def test_fault_latency_delays_the_answer(sim: Sim) -> None:
    """A latency-only fault answers normally, late."""
    sim.token()
    sim.control("PUT", "/sim/faults", {"latencyMs": 300, "count": 1})
    started = time.monotonic()
    answer = sim.api("GET", f"/api/v2/users/{ADA}")
    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_drop_fault_closes_the_connection_without_an_answer(sim: Sim) -> None:
    """mode=drop: the client sees the connection close with no response."""
    sim.token()
    sim.control("PUT", "/sim/faults", {"mode": "drop", "count": 1})
    with pytest.raises(requests.ConnectionError):
        sim.api("GET", f"/api/v2/users/{ADA}")
    assert sim.api("GET", f"/api/v2/users/{ADA}").status_code == 200


def test_fault_can_break_the_token_endpoint(sim: Sim) -> None:
    """Faults apply to /oauth too."""
    sim.control("PUT", "/sim/faults", {"status": 503, "pathPrefix": "/oauth", "count": 1})
    assert sim.fetch_token().status_code == 503
    assert sim.fetch_token().status_code == 200


def test_faults_never_apply_to_the_control_api(sim: Sim) -> None:
    """With an everything-fault on, /sim still answers."""
    sim.control("PUT", "/sim/faults", {"status": 500})
    assert sim.control("GET", "/sim/stats")["faultsInjected"] == 0


def test_stats_count_requests_by_route_template(sim: Sim) -> None:
    """Counts are keyed by verb and route template, not by concrete path."""
    sim.api("GET", f"/api/v2/users/{ADA}")
    sim.api("GET", f"/api/v2/users/{BOB}")
    requests_by_route = sim.control("GET", "/sim/stats")["requests"]
    assert requests_by_route["GET /api/v2/users/{userId}"] == 2
    assert requests_by_route["POST /oauth/token"] == 1


# --- Users, teams, queues ----------------------------------------------------------------


def test_user_expand_adds_presence_routing_status_and_team(sim: Sim) -> None:
    """expand fills the User model's presence, routingStatus and team; manager is a ref."""
    answer = sim.api("GET", f"/api/v2/users/{ADA}",
                     params={"expand": "presence,routingStatus,team"})
    user = answer.json()
    assert user["presence"]["presenceDefinition"]["systemPresence"] == "On Queue"
    assert user["routingStatus"]["status"] == "IDLE"
    assert user["team"]["id"] == TEAM_ATLANTIC
    assert user["manager"]["id"] == GRACE


def test_user_without_expand_has_no_presence(sim: Sim) -> None:
    """Expands are opt-in."""
    user = sim.api("GET", f"/api/v2/users/{ADA}").json()
    assert "presence" not in user and "team" not in user


def test_unknown_expand_value_is_refused(sim: Sim) -> None:
    """Only documented expand values are taken."""
    answer = sim.api("GET", f"/api/v2/users/{ADA}", params={"expand": "teams"})
    assert answer.status_code == 400


def test_single_user_read_refuses_state_any_as_the_sdk_documents(sim: Sim) -> None:
    """GET /users/{id} takes state=active|deleted only: state=any is a 400 naming it."""
    answer = sim.api("GET", f"/api/v2/users/{IAN}", params={"state": "any"})
    assert answer.status_code == 400
    assert bad_fields(answer) == {("state", "invalid.query.value")}
    assert "active, deleted" in answer.json()["message"]


def test_single_user_read_does_not_hide_an_inactive_user(sim: Sim) -> None:
    """No invented filter: the single read shows a user that is not deleted."""
    answer = sim.api("GET", f"/api/v2/users/{IAN}")
    assert answer.status_code == 200
    assert answer.json()["state"] == "inactive"


def test_user_list_by_id_honours_state(sim: Sim) -> None:
    """GET /users?id=a,b lists only active users unless state=any."""
    params = {"id": f"{ADA},{IAN}"}
    assert sim.api("GET", "/api/v2/users", params=params).json()["total"] == 1
    listing = sim.api("GET", "/api/v2/users", params={**params, "state": "any"}).json()
    assert {u["id"] for u in listing["entities"]} == {ADA, IAN}
    assert listing["pageSize"] == 25 and listing["pageNumber"] == 1


def test_control_deactivating_a_user_takes_them_out_of_the_default_list(sim: Sim) -> None:
    """PATCH /sim/users state=inactive: the list read (default state=active) leaves them
    out, state=any shows them inactive."""
    sim.control("PATCH", f"/sim/users/{BOB}", {"state": "inactive"})
    assert sim.api("GET", "/api/v2/users", params={"id": BOB}).json()["entities"] == []
    listing = sim.api("GET", "/api/v2/users", params={"id": BOB, "state": "any"}).json()
    assert [u["state"] for u in listing["entities"]] == ["inactive"]


@pytest.mark.parametrize(("path", "params", "name"), [
    ("/api/v2/users", {"state": "gone"}, "state"),
    ("/api/v2/users", {"expand": "presence,teams"}, "expand"),
    ("/api/v2/users", {"pageSize": "0"}, "pageSize"),
    ("/api/v2/users", {"pageSize": "many"}, "pageSize"),
    ("/api/v2/users", {"sortOrder": "sideways"}, "sortOrder"),
    ("/api/v2/users", {"ids": ADA}, "ids"),
    (f"/api/v2/users/{ADA}/queues", {"joined": "yes"}, "joined"),
    (f"/api/v2/users/{ADA}/outofoffice", {"expand": "all"}, "expand"),
])
def test_query_values_outside_the_sdk_are_refused(sim: Sim, path: str,
                                                  params: dict[str, str], name: str) -> None:
    """Every route checks its query against the SDK: unknown names and values are a 400
    ErrorBody naming the parameter."""
    answer = sim.api("GET", path, params=params)
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "bad.request" and body["contextId"]
    assert {d["fieldName"] for d in body["details"]} == {name}


def test_business_unit_expand_must_be_a_documented_value(sim: Sim) -> None:
    """expand on a business unit takes the SDK's settings.* values only."""
    bu_id = BU_AMERICAS
    path = f"/api/v2/workforcemanagement/businessunits/{bu_id}"
    assert sim.api("GET", path, params={"expand": "settings.timeZone"}).status_code == 200
    assert sim.api("GET", path, params={"expand": "settings.timezone"}).status_code == 400


def test_division_references_carry_no_name(sim: Sim) -> None:
    """A division reference is id and selfUri, nothing the simulator made up."""
    user = sim.api("GET", f"/api/v2/users/{ADA}").json()
    assert set(user["division"]) == {"id", "selfUri"}


def test_control_presence_change_shows_in_presence_read(sim: Sim) -> None:
    """PATCH /sim/users presence=Offline is what the presence route answers."""
    sim.control("PATCH", f"/sim/users/{ADA}", {"presence": "Offline", "routingStatus": "OFF_QUEUE"})
    presence = sim.api("GET", f"/api/v2/users/{ADA}/presences/purecloud").json()
    assert presence["presenceDefinition"]["systemPresence"] == "Offline"
    assert sim.api("GET", f"/api/v2/users/{ADA}/routingstatus").json()["status"] == "OFF_QUEUE"


def test_bulk_presence_reads_several_users(sim: Sim) -> None:
    """The bulk read answers one UcUserPresence per known id."""
    answer = sim.api("GET", "/api/v2/users/presences/purecloud/bulk",
                     params={"id": f"{ADA},{OLIVIA}"})
    by_user = {p["userId"]: p["presenceDefinition"]["systemPresence"] for p in answer.json()}
    assert by_user == {ADA: "On Queue", OLIVIA: "Away"}


def test_bulk_presence_refuses_more_than_fifty_ids(sim: Sim) -> None:
    """The bulk read takes at most 50 ids."""
    ids = ",".join(f"00000000-0000-4000-8000-{n:012d}" for n in range(51))
    answer = sim.api("GET", "/api/v2/users/presences/purecloud/bulk", params={"id": ids})
    assert answer.status_code == 400


def test_routing_status_of_an_unknown_user_is_off_queue(sim: Sim) -> None:
    """As documented: OFF_QUEUE when the user does not exist."""
    answer = sim.api("GET", "/api/v2/users/00000000-0000-4000-8000-000000000000/routingstatus")
    assert answer.status_code == 200
    assert answer.json()["status"] == "OFF_QUEUE"


def test_joined_queues_of_members_and_non_members(sim: Sim) -> None:
    """Ada is in the Callbacks queue, Nora is in none."""
    ada = sim.api("GET", f"/api/v2/users/{ADA}/queues", params={"joined": "true"}).json()
    nora = sim.api("GET", f"/api/v2/users/{NORA}/queues", params={"joined": "true"}).json()
    assert [q["id"] for q in ada["entities"]] == [QUEUE]
    assert nora["entities"] == []


def test_out_of_office_is_resolved_from_the_start_date(sim: Sim) -> None:
    """Olivia's seeded out of office runs from a day before the start to a week after."""
    ooo = sim.api("GET", f"/api/v2/users/{OLIVIA}/outofoffice").json()
    assert ooo["active"] is True
    assert ooo["startDate"] == "2025-03-06T15:00:00.000Z"
    assert ooo["endDate"] == "2025-03-14T15:00:00.000Z"


def test_superiors_are_the_direct_manager(sim: Sim) -> None:
    """Bob's superior is Grace; the director has none."""
    assert [u["id"] for u in sim.api("GET", f"/api/v2/users/{BOB}/superiors").json()] == [GRACE]
    assert sim.api("GET", f"/api/v2/users/{DIANA}/superiors").json() == []


def test_team_members_are_paged_with_cursors(sim: Sim) -> None:
    """Following nextUri walks every member of Team Atlantic once."""
    seen: list[str] = []
    path = f"/api/v2/teams/{TEAM_ATLANTIC}/members?pageSize=4"
    while path:
        page = sim.api("GET", path).json()
        seen += [member["id"] for member in page["entities"]]
        path = page.get("nextUri", "")
    assert seen == sorted({ADA, BOB, CHLOE, OLIVIA, IAN, "a1000000-0000-4000-8000-000000000011"})


def test_queue_shows_agent_owned_routing_and_rule(sim: Sim) -> None:
    """The Callbacks queue enables agent-owned callbacks with its limits and one rule."""
    queue = sim.api("GET", f"/api/v2/routing/queues/{QUEUE}").json()
    assert queue["agentOwnedRouting"] == {
        "enableAgentOwnedCallbacks": True, "maxOwnedCallbackHours": 48,
        "maxOwnedCallbackDelayHours": 720,
    }
    assert len(queue["routingRules"]) == 1


# --- WFM ---------------------------------------------------------------------------------


def test_wfm_chain_leads_from_agent_to_business_unit_time_zone(sim: Sim) -> None:
    """agent -> management unit -> business unit settings.timeZone."""
    reference = sim.api("GET", f"/api/v2/workforcemanagement/agents/{CHLOE}/managementunit").json()
    mu_id = reference["managementUnit"]["id"]
    unit = sim.api("GET", f"/api/v2/workforcemanagement/managementunits/{mu_id}").json()
    bu_id = unit["businessUnit"]["id"]
    bu = sim.api("GET", f"/api/v2/workforcemanagement/businessunits/{bu_id}",
                 params={"expand": "settings.timeZone"}).json()
    assert bu["settings"]["timeZone"] == "Europe/London"


def test_agent_management_unit_answer_has_no_business_unit(sim: Sim) -> None:
    """As on a real org: the endpoint takes no expand, so businessUnit is left out."""
    reference = sim.api("GET", f"/api/v2/workforcemanagement/agents/{CHLOE}/managementunit")
    assert set(reference.json()) == {"user", "managementUnit"}


def test_schedule_search_answers_processing_then_complete(sim: Sim) -> None:
    """PUT /sim/wfm processingSearches=1: the first search is Processing, the next has the
    result."""
    sim.control("PUT", "/sim/wfm", {"processingSearches": 1})
    path = f"/api/v2/workforcemanagement/managementunits/{MU_AMERICAS}/agentschedules/search"
    body = {"startDate": "2025-03-07T00:00:00.000Z", "endDate": "2025-03-08T00:00:00.000Z",
            "userIds": [BOB]}
    first = sim.api("POST", path, json=body).json()
    assert first["status"] == "Processing" and "result" not in first
    second = sim.api("POST", path, json=body).json()
    assert second["status"] == "Complete" and second["result"]["agentSchedules"]


def test_wfm_results_can_come_as_a_download(sim: Sim) -> None:
    """PUT /sim/wfm download=true: searches and time-off queries answer a downloadUrl that
    serves the result without a token."""
    sim.control("PUT", "/sim/wfm", {"download": True})
    path = f"/api/v2/workforcemanagement/managementunits/{MU_AMERICAS}/agentschedules/search"
    answer = sim.api("POST", path, json={"startDate": "2025-03-07T00:00:00.000Z",
                                         "endDate": "2025-03-08T00:00:00.000Z",
                                         "userIds": [BOB]}).json()
    assert answer["status"] == "Complete" and "result" not in answer
    result = requests.get(answer["downloadUrl"], timeout=5).json()
    assert result["agentSchedules"][0]["user"]["id"] == BOB
    listing = sim.api("POST", f"/api/v2/workforcemanagement/managementunits/{MU_AMERICAS}"
                      "/timeoffrequests/query", json={}).json()
    assert set(listing) == {"downloadUrl"}
    assert "entities" in requests.get(listing["downloadUrl"], timeout=5).json()


def test_business_unit_has_no_settings_without_expand(sim: Sim) -> None:
    """settings are only there when expanded."""
    bu = sim.api("GET", f"/api/v2/workforcemanagement/businessunits/{BU_AMERICAS}").json()
    assert "settings" not in bu


def test_agent_without_wfm_has_no_management_unit(sim: Sim) -> None:
    """Walter has no WFM assignment: 404."""
    answer = sim.api("GET", f"/api/v2/workforcemanagement/agents/{WALTER}/managementunit")
    assert answer.status_code == 404


def _schedule(sim: Sim, mu_id: str, user_id: str, start: str, end: str) -> dict[str, Any]:
    answer = sim.api(
        "POST", f"/api/v2/workforcemanagement/managementunits/{mu_id}/agentschedules/search",
        json={"startDate": start, "endDate": end, "userIds": [user_id]},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["status"] == "Complete"
    [schedule] = body["result"]["agentSchedules"]
    result: dict[str, Any] = schedule
    return result


def test_schedule_search_follows_the_us_dst_change(sim: Sim) -> None:
    """Bob's 09:00 New York shift is 14:00Z before the spring-forward and 13:00Z after."""
    schedule = _schedule(sim, MU_AMERICAS, BOB, "2025-03-07T00:00:00.000Z",
                         "2025-03-11T00:00:00.000Z")
    assert [(s["startDate"], s["lengthMinutes"]) for s in schedule["shifts"]] == [
        ("2025-03-07T14:00:00.000Z", 480), ("2025-03-10T13:00:00.000Z", 480),
    ]


def test_round_the_clock_day_lasts_23_hours_on_spring_forward(sim: Sim) -> None:
    """Ada's 00:00-24:00 Sunday 9 March in New York is 1380 minutes long."""
    schedule = _schedule(sim, MU_AMERICAS, ADA, "2025-03-09T05:00:00.000Z",
                         "2025-03-09T06:00:00.000Z")
    assert [(s["startDate"], s["lengthMinutes"]) for s in schedule["shifts"]] == [
        ("2025-03-09T05:00:00.000Z", 1380),
    ]


def test_approved_time_off_replaces_the_shift_with_a_marker(sim: Sim) -> None:
    """Tom's seeded day off (2 days after the start) has no shift and a full-day marker."""
    schedule = _schedule(sim, MU_EMEA, TOM, "2025-03-08T00:00:00.000Z",
                         "2025-03-11T00:00:00.000Z")
    assert [s["startDate"] for s in schedule["shifts"]] == [
        "2025-03-08T08:00:00.000Z", "2025-03-10T08:00:00.000Z",
    ]
    [marker] = schedule["fullDayTimeOffMarkers"]
    assert marker["businessUnitDate"] == "2025-03-09"


def test_control_time_off_removes_that_days_shift(sim: Sim) -> None:
    """POST /sim/timeoff approves a day off that the next search honours."""
    sim.control("POST", "/sim/timeoff", {"userId": BOB, "date": "2025-03-10", "status": "APPROVED"})
    schedule = _schedule(sim, MU_AMERICAS, BOB, "2025-03-10T00:00:00.000Z",
                         "2025-03-11T00:00:00.000Z")
    assert schedule["shifts"] == []
    assert [m["businessUnitDate"] for m in schedule["fullDayTimeOffMarkers"]] == ["2025-03-10"]


def test_schedule_search_can_be_made_to_keep_processing(sim: Sim) -> None:
    """With scheduleSearchStatus=Processing the answer has no result."""
    sim.control("PUT", "/sim/wfm", {"scheduleSearchStatus": "Processing"})
    answer = sim.api(
        "POST", f"/api/v2/workforcemanagement/businessunits/{BU_AMERICAS}/agentschedules/search",
        json={"startDate": "2025-03-07T00:00:00.000Z", "endDate": "2025-03-08T00:00:00.000Z"},
    ).json()
    assert answer["status"] == "Processing"
    assert "result" not in answer


def test_time_off_query_filters_by_status(sim: Sim) -> None:
    """The Americas unit has Bob's pending request on its BU-local date."""
    answer = sim.api(
        "POST", f"/api/v2/workforcemanagement/managementunits/{MU_AMERICAS}/timeoffrequests/query",
        json={"userIds": [BOB], "statuses": ["PENDING"],
              "dateRange": {"startDate": "2025-03-01", "endDate": "2025-03-31"}},
    )
    [request] = answer.json()["entities"]
    assert request["status"] == "PENDING"
    assert request["fullDayManagementUnitDates"] == ["2025-03-10"]


# --- Analytics ---------------------------------------------------------------------------


def _pending_query(number: str) -> dict[str, Any]:
    return {
        "interval": "2025-03-06T00:00:00.000Z/2025-03-08T00:00:00.000Z",
        "order": "desc", "orderBy": "conversationStart",
        "paging": {"pageSize": 100, "pageNumber": 1},
        "conversationFilters": [{"type": "and", "predicates": [
            {"type": "dimension", "dimension": "conversationEnd", "operator": "notExists"}]}],
        "segmentFilters": [{"type": "and", "predicates": [
            {"type": "dimension", "dimension": "mediaType", "value": "callback"},
            {"type": "dimension", "dimension": "callbackNumber", "value": number}]}],
    }


def test_analytics_finds_only_pending_callbacks_for_a_number(sim: Sim) -> None:
    """A disconnected callback and another number's callback are filtered out."""
    ended = sim.create()
    sim.api("PATCH", f"/api/v2/conversations/callbacks/{ended['conversation']['id']}",
            json={"state": "disconnected"})
    pending = sim.create()
    sim.create(callbackNumbers=["+442071838750"])
    answer = sim.api("POST", "/api/v2/analytics/conversations/details/query",
                     json=_pending_query(NUMBER)).json()
    assert answer["totalHits"] == 1
    [conversation] = answer["conversations"]
    assert conversation["conversationId"] == pending["conversation"]["id"]
    session = conversation["participants"][0]["sessions"][0]
    assert session["callbackNumbers"] == [NUMBER]
    assert session["agentOwned"] is True


def test_analytics_empty_result_carries_only_total_hits(sim: Sim) -> None:
    """No match: {"totalHits": 0}, as the platform answers."""
    answer = sim.api("POST", "/api/v2/analytics/conversations/details/query",
                     json=_pending_query(NUMBER))
    assert answer.json() == {"totalHits": 0}


def test_analytics_unsupported_dimension_is_refused(sim: Sim) -> None:
    """A dimension the simulator does not implement is named, not ignored."""
    query = _pending_query(NUMBER)
    query["segmentFilters"][0]["predicates"][0]["dimension"] = "wrapUpCode"
    answer = sim.api("POST", "/api/v2/analytics/conversations/details/query", json=query)
    assert bad_fields(answer) == {
        ("segmentFilters[0].predicates[0].dimension", "unsupported.by.simulator")
    }


def test_analytics_query_needs_an_interval(sim: Sim) -> None:
    """interval is required by ConversationQuery."""
    query = _pending_query(NUMBER)
    del query["interval"]
    answer = sim.api("POST", "/api/v2/analytics/conversations/details/query", json=query)
    assert bad_fields(answer) == {("interval", "required.field.missing")}


# --- Models ------------------------------------------------------------------------------


def test_every_model_reached_from_validated_bodies_is_carried_or_opaque() -> None:
    """Each model a validated body can contain is in genesys_models.json or documented opaque."""
    catalog = ModelCatalog.load()
    reached = set().union(*(catalog.reachable(m.name) for m in api.BODY_MODELS.values()))
    missing = {name for name in reached if not catalog.has(name)}
    assert missing == set(OPAQUE_MODELS)


def test_every_platform_write_route_has_a_body_model() -> None:
    """No POST/PATCH/PUT platform route escapes the model check."""
    simulator = Simulator(load_org(None), clock=FixedClock(START), catalog=ModelCatalog.load(),
                          rate_limit_per_min=1, token_ttl_s=1, client_id="c", client_secret="s")
    writes = set()
    for template, resource, suffix in api.routes(simulator):
        for verb in ("post", "patch", "put"):
            name = f"on_{verb}_{suffix}" if suffix else f"on_{verb}"
            if template.startswith("/api/v2/") and hasattr(resource, name):
                writes.add(f"{verb.upper()} {template}")
    assert writes == set(api.BODY_MODELS)


RESPONSE_CASES = [
    ("CreateCallbackResponse", "POST", "/api/v2/conversations/callbacks", "create"),
    ("CallbackConversation", "GET", "/api/v2/conversations/callbacks/{cid}", None),
    ("Conversation", "GET", "/api/v2/conversations/{cid}", None),
    ("User", "GET", f"/api/v2/users/{ADA}?expand=presence,routingStatus,team,outOfOffice", None),
    ("UserEntityListing", "GET", "/api/v2/users?state=any", None),
    ("UserPresence", "GET", f"/api/v2/users/{ADA}/presences/purecloud", None),
    ("RoutingStatus", "GET", f"/api/v2/users/{ADA}/routingstatus", None),
    ("UserQueueEntityListing", "GET", f"/api/v2/users/{ADA}/queues", None),
    ("OutOfOffice", "GET", f"/api/v2/users/{OLIVIA}/outofoffice", None),
    ("TeamMemberEntityListing", "GET", f"/api/v2/teams/{TEAM_ATLANTIC}/members", None),
    ("Queue", "GET", f"/api/v2/routing/queues/{QUEUE}", None),
    ("AgentManagementUnitReference", "GET",
     f"/api/v2/workforcemanagement/agents/{ADA}/managementunit", None),
    ("ManagementUnit", "GET", f"/api/v2/workforcemanagement/managementunits/{MU_AMERICAS}", None),
    ("BusinessUnitResponse", "GET",
     f"/api/v2/workforcemanagement/businessunits/{BU_AMERICAS}?expand=settings", None),
    ("BuAsyncAgentSchedulesSearchResponse", "POST",
     f"/api/v2/workforcemanagement/managementunits/{MU_EMEA}/agentschedules/search", "schedule"),
    ("TimeOffRequestListing", "POST",
     f"/api/v2/workforcemanagement/managementunits/{MU_EMEA}/timeoffrequests/query", "timeoff"),
    ("AnalyticsConversationQueryResponse", "POST",
     "/api/v2/analytics/conversations/details/query", "analytics"),
    ("ErrorBody", "GET", "/api/v2/conversations/callbacks/unknown", None),
]
_REQUEST_BODIES: dict[str, Any] = {
    "create": callback_body(),
    "schedule": {"startDate": "2025-03-08T00:00:00.000Z", "endDate": "2025-03-11T00:00:00.000Z"},
    "timeoff": {},
    "analytics": _pending_query(NUMBER),
}


@pytest.mark.parametrize(("model", "method", "path", "body"), RESPONSE_CASES,
                         ids=[case[0] for case in RESPONSE_CASES])
def test_answers_conform_to_the_official_models(
    sim: Sim, model: str, method: str, path: str, body: str | None
) -> None:
    """Every field of an answer is in its model, with the model's type and enum."""
    conversation_id = sim.create()["conversation"]["id"]
    answer = sim.api(method, path.format(cid=conversation_id),
                     json=_REQUEST_BODIES[body] if body else None)
    violations = ModelCatalog.load().conformance(model, answer.json())
    assert violations == []


@pytest.mark.parametrize("state", ["connected", "disconnected", "completed"])
def test_callback_reads_conform_in_every_state(sim: Sim, state: str) -> None:
    """Whatever happened to a callback, both reads keep to the SDK's enums."""
    conversation_id = sim.create()["conversation"]["id"]
    sim.control("PATCH", f"/sim/callbacks/{conversation_id}", {"state": state})
    catalog = ModelCatalog.load()
    for model, path in (("CallbackConversation", "/api/v2/conversations/callbacks/{}"),
                        ("Conversation", "/api/v2/conversations/{}")):
        answer = sim.api("GET", path.format(conversation_id)).json()
        assert catalog.conformance(model, answer) == [], model


def test_seed_with_an_unknown_manager_is_refused() -> None:
    """A seed org pointing at a missing user fails with the user named."""
    seed = load_org(None)
    seed["users"][0]["managerId"] = "nobody"
    with pytest.raises(OrgError, match=ADA):
        build_org(seed, START)


# --- Under gunicorn ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.gunicorn
def test_gunicorn_serves_the_wsgi_shim_and_drop_faults_close_the_connection() -> None:
    """The shim runs under gunicorn gthread; a drop fault closes with no HTTP answer."""
    port = _free_port()
    env = {**os.environ, "GENESYS_CLIENT_ID": CLIENT_ID, "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
           "SIM_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "8",
         "--bind", f"127.0.0.1:{port}", "middleware.sim.wsgi:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with requests.Session() as http:
            client = Sim(f"http://127.0.0.1:{port}", http)
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.token()
                    break
                except requests.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.1)
            assert client.api("GET", f"/api/v2/users/{ADA}").status_code == 200
            client.control("PUT", "/sim/faults", {"mode": "drop", "count": 1})
            with pytest.raises(requests.ConnectionError):
                client.api("GET", f"/api/v2/users/{ADA}")
            assert client.api("GET", f"/api/v2/users/{ADA}").status_code == 200
            assert json.loads(http.get(f"{client.url}/sim/stats", timeout=TIMEOUT).text)[
                "faultsInjected"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
