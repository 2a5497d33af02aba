"""install-actions against the simulator's integrations API: create once, then change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests

from middleware.clock import FixedClock
from middleware.config import Config
from middleware.contracts import load_contracts
from middleware.genesys.client import GenesysClient, GenesysSettings, new_session
from middleware.genesys.integrations import IntegrationsApi
from middleware.install import (
    CREATED,
    REFUSED,
    THERE,
    WOULD_CREATE,
    Installer,
    Step,
    draft_body,
    secret_for,
)
from middleware.sim.integrations import body_models
from middleware.sim.models import ModelCatalog
from middleware.store import Store
from tests.conftest import (
    BASIC_PASSWORD,
    CLIENT_ID,
    CLIENT_SECRET,
    T0,
    RedisServer,
    Simulator,
    service_env,
)

BASE_URL = "https://callbacks.example.com"
NAME = "Callback Middleware"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _writes(sim: Simulator) -> dict[str, int]:
    return {route: n for route, n in sim.stats()["requests"].items()
            if route.split(" ")[0] in WRITES and "/integrations" in route}


@pytest.fixture
def installer(sim: Simulator, redis_client: redis.Redis, redis_server: RedisServer
              ) -> Callable[..., Installer]:
    """An Installer over the real client code, against the simulator and test Redis."""
    config = Config.from_env(service_env(redis_server.url, sim.url))
    genesys = GenesysClient(GenesysSettings(sim.url, sim.url, CLIENT_ID, CLIENT_SECRET, 2.0, 5.0,
                                            100_000), Store(redis_client), new_session(),
                            FixedClock(T0))

    def build(*, auth: str = "basic", dry_run: bool = False, secure: bool = False,
              contracts: dict[str, Any] | None = None) -> Installer:
        return Installer(IntegrationsApi(genesys), contracts or load_contracts(),
                         base_url=BASE_URL, auth=auth,  # type: ignore[arg-type]
                         secret=secret_for(auth, config.basic_credentials,  # type: ignore[arg-type]
                                           config.api_keys),
                         integration_name=NAME, secure=secure, dry_run=dry_run)
    return build


def _results(steps: list[Step], kind: str) -> list[str]:
    return [s.result for s in steps if s.kind == kind]


def test_first_run_creates_integration_credential_and_eight_published_actions(
    sim: Simulator, installer: Callable[..., Installer]
) -> None:
    """An empty org gets the integration, its Basic Auth credential and every action."""
    steps = installer().run()
    assert _results(steps, "integration") == [CREATED]
    assert _results(steps, "credential") == [CREATED]
    assert _results(steps, "action") == [CREATED] * 8
    org = sim.control("GET", "integrations")
    [integration] = org["integrations"]
    [credential] = org["credentials"]
    assert integration["name"] == NAME and integration["intendedState"] == "ENABLED"
    assert integration["config"]["credentials"] == {"basicAuth": {"id": credential["id"]}}
    assert credential["type"] == "basicAuth"
    assert credential["fieldNames"] == ["password", "userName"]
    assert org["drafts"] == []
    names = {a["name"] for a in org["actions"]}
    assert names == {c.display_name for c in load_contracts().values()}
    for action in org["actions"]:
        assert action["config"]["timeoutSeconds"] == 10
        assert action["secure"] is False
        assert action["integrationId"] == integration["id"]


def test_second_run_reports_everything_there_and_writes_nothing(
    sim: Simulator, installer: Callable[..., Installer]
) -> None:
    """Run twice: the second run finds every piece and sends no write at all."""
    installer().run()
    before = _writes(sim)
    steps = installer().run()
    assert {s.result for s in steps} == {THERE}
    assert _writes(sim) == before


def test_changed_contract_is_refused_and_left_unchanged(
    sim: Simulator, installer: Callable[..., Installer]
) -> None:
    """A published action whose contract differs from ours is refused, never edited."""
    installer().run()
    contracts = load_contracts()
    create = contracts["create-callback"]
    changed_schema = {**create.input_schema,
                      "properties": {**create.input_schema["properties"],
                                     "extra": {"type": "string"}}}
    contracts["create-callback"] = type(create)(create.action, create.display_name,
                                                changed_schema, create.output_schema)
    before = _writes(sim)
    steps = installer(contracts=contracts).run()
    refused = [s for s in steps if s.result == REFUSED]
    assert [s.name for s in refused] == [create.display_name]
    assert _writes(sim) == before
    published = {a["name"]: a for a in sim.control("GET", "integrations")["actions"]}
    assert "extra" not in published[create.display_name]["contract"]["input"][
        "inputSchema"]["properties"]


def test_dry_run_writes_nothing(sim: Simulator, installer: Callable[..., Installer]) -> None:
    """--dry-run on an empty org says what it would create and creates nothing."""
    steps = installer(dry_run=True).run()
    assert {s.result for s in steps} == {WOULD_CREATE}
    assert _writes(sim) == {}
    assert sim.control("GET", "integrations")["integrations"] == []


def test_api_key_credential_is_user_defined_and_actions_secure(
    sim: Simulator, installer: Callable[..., Installer]
) -> None:
    """--auth apikey makes a User Defined credential with apiKey; --secure marks the actions."""
    installer(auth="apikey", secure=True).run()
    org = sim.control("GET", "integrations")
    assert [(c["type"], c["fieldNames"]) for c in org["credentials"]] == [
        ("userDefined", ["apiKey"])]
    assert all(a["secure"] for a in org["actions"])
    headers = org["actions"][0]["config"]["request"]["headers"]
    assert headers["X-API-Key"] == "${credentials.apiKey}"


def test_interrupted_run_publishes_the_waiting_draft(
    sim: Simulator, installer: Callable[..., Installer]
) -> None:
    """A draft left by a run that stopped before publishing is published, not duplicated."""
    installer().run()
    token = requests.post(f"{sim.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(CLIENT_ID, CLIENT_SECRET), timeout=5).json()["access_token"]
    integration_id = sim.control("GET", "integrations")["integrations"][0]["id"]
    contracts = load_contracts()
    extra = contracts["create-callback"]
    renamed = type(extra)(extra.action, "Callback - Create v2", extra.input_schema,
                          extra.output_schema)
    answer = requests.post(f"{sim.url}/api/v2/integrations/actions/drafts",
                           json=draft_body(renamed, BASE_URL, "basic", integration_id, NAME,
                                           False),
                           headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 200, answer.text
    steps = installer(contracts={"create-callback": renamed}).run()
    assert [(s.result, s.detail) for s in steps if s.kind == "action"] == [
        (CREATED, "published the waiting draft")]
    assert sim.control("GET", "integrations")["drafts"] == []


def test_report_never_shows_the_secret(installer: Callable[..., Installer]) -> None:
    """Neither the steps nor the secret's repr carry the password."""
    built = installer()
    assert BASIC_PASSWORD not in repr(built.run())
    assert BASIC_PASSWORD not in repr(secret_for("basic", (("u", BASIC_PASSWORD),), ()))


def test_simulator_refuses_a_draft_that_breaks_the_model(sim: Simulator) -> None:
    """A PostActionInput without contract, or with an unknown field, is 400 naming it."""
    token = requests.post(f"{sim.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(CLIENT_ID, CLIENT_SECRET), timeout=5).json()["access_token"]
    answer = requests.post(f"{sim.url}/api/v2/integrations/actions/drafts",
                           json={"name": "x", "category": "c", "integrationId": "i",
                                 "config": {}, "colour": "red"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 400
    fields = {(d["fieldName"], d["errorCode"]) for d in answer.json()["details"]}
    assert fields == {("contract", "required.field.missing"), ("colour", "unknown.field")}


def test_simulator_refuses_an_unknown_query_parameter(sim: Simulator) -> None:
    """A listing asked with a parameter the SDK does not send is 400."""
    token = requests.post(f"{sim.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(CLIENT_ID, CLIENT_SECRET), timeout=5).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    bad = requests.get(f"{sim.url}/api/v2/integrations/actions", params={"integrationId": "x"},
                       headers=headers, timeout=5)
    assert bad.status_code == 400
    wrong_type = requests.get(f"{sim.url}/api/v2/integrations/actions",
                              params={"pageSize": "many"}, headers=headers, timeout=5)
    assert wrong_type.status_code == 400


def test_every_model_reached_from_integration_bodies_is_carried() -> None:
    """The integrations routes' body models and all they reach are in genesys_models.json."""
    catalog = ModelCatalog.load()
    reached = set().union(*(catalog.reachable(m.name) for m in body_models().values()))
    assert {name for name in reached if not catalog.has(name)} == set()


def test_simulator_answers_conform_to_the_official_models(
    sim: Simulator, installer: Callable[..., Installer]
) -> None:
    """Listings and reads of integrations, credentials and actions match their models."""
    installer().run()
    token = requests.post(f"{sim.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(CLIENT_ID, CLIENT_SECRET), timeout=5).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    catalog = ModelCatalog.load()
    action_id = sim.control("GET", "integrations")["actions"][0]["id"]
    integration_id = sim.control("GET", "integrations")["integrations"][0]["id"]
    for model, path, params in (
        ("IntegrationEntityListing", "/api/v2/integrations", {}),
        ("IntegrationConfiguration", f"/api/v2/integrations/{integration_id}/config/current",
         {}),
        ("CredentialInfoListing", "/api/v2/integrations/credentials", {}),
        ("ActionEntityListing", "/api/v2/integrations/actions", {"includeConfig": "true"}),
        ("Action", f"/api/v2/integrations/actions/{action_id}",
         {"expand": "contract", "includeConfig": "true"}),
    ):
        answer = requests.get(f"{sim.url}{path}", params=params, headers=headers, timeout=5)
        assert answer.status_code == 200, answer.text
        assert catalog.conformance(model, answer.json()) == [], model

