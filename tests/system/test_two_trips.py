"""A create that gives its own consent reads nothing of its number before one Redis step
checks and journals it (``CreateCallback._at_once``): two round trips in all. Whatever that
step refuses, or finds in its way, the usual steps answer afresh, so every answer, and what
it leaves behind, is the one SPEC §4's order of checks gives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import falcon.testing
import pytest

from bench.roundtrips import Tally, counting_client
from middleware.app import create_app
from middleware.clock import FixedClock
from middleware.config import Config
from middleware.genesys.client import new_session
from middleware.rules.number import NumberKeys
from middleware.store import client_key, keys
from middleware.store.client import Connection
from tests.conftest import (
    AUTH,
    CLIENT_ID,
    PII_KEY,
    T0,
    TEST_REDIS,
    RedisServer,
    Service,
    Simulator,
    create_body,
    service_env,
    when,
)

NUMBER = "+14155552671"


def _events(service: Service) -> list[str]:
    digest = NumberKeys((PII_KEY.encode(),)).current(NUMBER)
    return [str(e) for e in service.redis.lrange(keys.events(digest), 0, -1)]


def _creates(sim: Simulator) -> int:
    return int(sim.stats()["requests"].get("POST /api/v2/conversations/callbacks", 0))


def _act(service: Service, **fields: Any) -> dict[str, Any]:
    answer = service.action("create-callback", create_body(**fields))
    assert answer.status_code == 200, answer.text
    return dict(answer.json)


def _revoke(service: Service) -> None:
    revoked = service.action("revoke-consent", {"customerNumber": NUMBER}).json
    assert revoked["outcome"] == "REVOKED", revoked


def test_a_revoked_number_keeps_no_consent_from_a_refused_create(
        service: Service, sim: Simulator) -> None:
    """Revoked, then a create giving consent: CONSENT_REVOKED, Genesys untouched, and the
    create's consent is not stored (the evidence holds the revocation and nothing after)."""
    _revoke(service)
    before, keys_before = _events(service), set(service.redis.scan_iter("cbm:*"))
    answer = _act(service, consentSource="AGENT_VERBAL", consentText="Agent script 7")
    assert (answer["outcome"], answer["reason"], answer["consentId"]) == (
        "REJECTED", "CONSENT_REVOKED", ""), answer
    assert _events(service) == before
    assert {k for k in service.redis.scan_iter("cbm:*") if ":consent:" in str(k)} == {
        k for k in keys_before if ":consent:" in str(k)}
    assert _creates(sim) == 0


def test_the_revocation_comes_before_the_time_rules(service: Service, sim: Simulator) -> None:
    """SPEC §4 order: consent before time. A revoked number asking for 03:00 New York
    answers CONSENT_REVOKED, not OUTSIDE_CALLING_HOURS."""
    _revoke(service)
    night = when("2026-11-24T08:00:00Z")  # 03:00 in New York, outside calling hours
    assert _act(service, requestedTime=night)["reason"] == "CONSENT_REVOKED"


def test_a_capped_number_answers_the_cap_and_keeps_no_consent(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """At MAX_CALLBACKS_PER_NUMBER_PER_DAY the create answers TOO_MANY_REQUESTS_FOR_NUMBER
    (the cap comes first), and stores no consent of its own."""
    service = make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1")
    first = _act(service)
    assert first["outcome"] == "CREATED", first
    cancelled = service.action("cancel-callback", {"callbackId": first["callbackId"]}).json
    assert cancelled["outcome"] == "CANCELLED", cancelled
    before = _events(service)
    answer = _act(service, consentSource="WEB_FORM")
    assert (answer["outcome"], answer["reason"]) == (
        "REJECTED", "TOO_MANY_REQUESTS_FOR_NUMBER"), answer
    assert _events(service) == before
    assert _creates(sim) == 1


def test_a_pending_callback_answers_duplicate_before_the_owner_rule(
        service: Service, sim: Simulator) -> None:
    """The usual steps claim before the owner rule: with a callback pending, a second create
    for an agent Genesys does not know answers DUPLICATE (not UNKNOWN_AGENT), naming the
    pending callback's consent, not a new one."""
    first = _act(service)
    assert first["outcome"] == "CREATED", first
    before = _events(service)
    again = _act(service, agentId="a1000000-0000-4000-8000-00000000beef")
    assert (again["outcome"], again["existingCallbackId"]) == (
        "DUPLICATE", first["callbackId"]), again
    assert again.get("consentId", "") in ("", first["consentId"]), again
    assert _events(service) == before
    assert _creates(sim) == 1


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="on a cluster the Genesys budget is in "
                    "another slot and taken apart, after the journal")
def test_a_duplicate_takes_no_call_from_the_genesys_budget(
        service: Service, sim: Simulator) -> None:
    """The one step takes the create's Genesys call from the shared budget only if it
    journals: repeated DUPLICATE answers leave the budget as it was (it only refills)."""
    first = _act(service)
    assert first["outcome"] == "CREATED", first
    bucket = keys.rate(client_key(CLIENT_ID))
    before = float(service.redis.hget(bucket, "tokens") or 0)
    for _ in range(5):
        assert _act(service)["outcome"] == "DUPLICATE"
    assert float(service.redis.hget(bucket, "tokens") or 0) >= before


def test_a_revocation_stored_while_the_create_is_checked_wins(
        service: Service, sim: Simulator) -> None:
    """The revocation lands while the create waits on its owner read (before its one Redis
    step): the step refuses, the usual steps answer CONSENT_REVOKED, nothing reaches
    Genesys and the create's consent is not stored."""
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1, "method": "GET",
                                  "pathPrefix": "/api/v2/users"})
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(_act(service)))
    thread.start()
    try:
        time.sleep(0.5)
        _revoke(service)
        before = _events(service)
    finally:
        thread.join()
        sim.control("DELETE", "faults")
    assert (answers[0]["outcome"], answers[0]["reason"]) == (
        "REJECTED", "CONSENT_REVOKED"), answers
    assert _events(service) == before
    assert _creates(sim) == 0


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="counts round trips on one standalone "
                    "connection (the standalone pass runs it)")
def test_a_fresh_create_is_two_redis_round_trips(
        redis_server: RedisServer, redis_client: Any, sim: Simulator) -> None:
    """Issue 13's "at most 3": a create for a number with nothing in its way makes two
    (the checking journal, the delivery); one relying on a recorded consent, three."""
    tally = Tally()
    config = Config.from_env(service_env(redis_server.url, sim.url))
    app = create_app(config, redis_client=Connection("", 0, counting_client(
        redis_server.url, 5.0, tally)), http=new_session(), clock=FixedClock(T0))
    client = falcon.testing.TestClient(app)

    def act(number: str, **fields: Any) -> str:
        answer = client.simulate_post("/v1/actions/create-callback", headers=AUTH,
                                      json=create_body(customerNumber=number, **fields))
        return str(answer.json["outcome"])

    assert act("+14155550101") == "CREATED"  # fills the Genesys read cache
    tally.reset()
    assert act(NUMBER) == "CREATED"
    assert tally.round_trips == 2, tally.labels
    recorded = [client.simulate_post("/v1/actions/record-consent", headers=AUTH, json={
        "customerNumber": n, "consentSource": "IVR_KEYPRESS"}).json
        for n in ("+12125550198", "+12125550199")]
    # The first create of this kind in the process loads its script (warm path: the next).
    assert act("+12125550198", consentId=recorded[0]["consentId"]) == "CREATED"
    tally.reset()
    assert act("+12125550199", consentId=recorded[1]["consentId"]) == "CREATED"
    assert tally.round_trips == 3, tally.labels


def test_a_create_after_redis_lost_its_scripts_runs_its_step_once(
        service: Service, sim: Simulator) -> None:
    """The composed step goes by hash: when Redis has lost it (a restart, SCRIPT FLUSH), the
    command fails whole, the client loads it and sends it again, and the request goes on as
    if nothing happened: one callback, its consent stored once."""
    assert _act(service, customerNumber="+14155550101")["outcome"] == "CREATED"  # warm
    if TEST_REDIS == "cluster":
        service.redis.execute_command("SCRIPT FLUSH", target_nodes=service.redis.ALL_NODES)
    else:
        service.redis.script_flush()
    before_creates = _creates(sim)
    made = _act(service)
    assert made["outcome"] == "CREATED", made
    assert _creates(sim) == before_creates + 1
    kinds = [e.split('"e":"')[1].split('"')[0] for e in _events(service)]
    assert kinds.count("co") == 1 and kinds.count("cb") == 1, kinds
    # No journal record left behind (a create stuck CREATING).
    assert not list(service.redis.scan_iter(match="cbm:*:cb:queued-*"))
