"""Inputs and interleavings a fifth adversarial review found breaking what the two-round-trip
create (``CreateCallback._at_once``) promised, each fixed since: a create that gives its own
consent and is refused leaves no consent of its own and takes nothing from the Genesys
budget (every journal stores them only if it takes), and a refusal SPEC §4's order puts
before the time and owner rules calls Genesys no more than it does on the usual steps (the
one-step create runs those rules on cached reads only). Each is forced deterministically
(the app in-process, simulator faults, the fixed clock)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from middleware.rules.number import NumberKeys
from middleware.store import client_key, keys
from tests.conftest import (
    CLIENT_ID,
    PII_KEY,
    TEST_REDIS,
    Service,
    Simulator,
    create_body,
    when,
)
from tests.system.test_lifecycle import CALLBACKS, NUMBER


def _events(service: Service) -> list[str]:
    digest = NumberKeys((PII_KEY.encode(),)).current(NUMBER)
    return [str(e) for e in service.redis.lrange(keys.events(digest), 0, -1)]


def _consent_keys(service: Service) -> set[str]:
    return {str(k) for k in service.redis.scan_iter("cbm:*") if ":consent:" in str(k)}


def _genesys_requests(sim: Simulator) -> int:
    """API requests the simulator served (token fetches aside)."""
    return sum(int(n) for route, n in sim.stats()["requests"].items()
               if "oauth" not in route)


def _far_callback_rescheduled_in_doubt(service: Service, sim: Simulator) -> dict[str, Any]:
    """A callback three days ahead (beyond the window), rescheduled to tomorrow with every
    PATCH landing unanswered: the reschedule is in doubt and keeps the number's claim
    (``IN_DOUBT_CLAIM``), while the ledger still holds it beyond the window."""
    far = service.action("create-callback", create_body(
        requestedTime=when("2026-11-26T19:00:00Z"))).json
    assert far["outcome"] == "CREATED", far
    sim.control("PUT", "faults", {"status": 504, "count": 1000, "phase": "after",
                                  "method": "PATCH", "pathPrefix": CALLBACKS})
    try:
        moved = service.action("reschedule-callback", {
            "callbackId": far["callbackId"],
            "requestedTime": when("2026-11-24T19:00:00Z")}).json
    finally:
        sim.control("DELETE", "faults")
    assert moved["outcome"] == "REJECTED" and moved["retryable"], moved
    return dict(far)


def test_a_create_refused_behind_a_held_claim_keeps_no_consent_of_its_own(
        service: Service, sim: Simulator) -> None:
    """README Consent ("consent given inside a create-callback is recorded when the callback
    is made") and the change's promise (a refused create stores no consent): the number's
    claim is held by an in-doubt reschedule. A create giving its own consent: its one step
    finds the claim held (BUSY) and writes nothing, but the usual steps it then reruns take
    the warm path (nothing is indexed pending in the window), whose ``claim_and_journal``
    stores the request's consent whatever it answers; the claim then stays held past the
    deadline and the create answers REJECTED. The number's evidence now holds a consent of
    a create that made nothing.

    Steps: create at T0+3d; reschedule it to T0+1d with 504 (after) on every PATCH; create
    for T0+1h with consentGiven true and no consentId."""
    _far_callback_rescheduled_in_doubt(service, sim)
    before, consents_before = _events(service), _consent_keys(service)
    answer = service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T19:00:00Z"), consentSource="AGENT_VERBAL")).json
    assert answer["outcome"] == "REJECTED", answer
    assert _consent_keys(service) == consents_before, ("a refused create stored a consent",
                                                       answer)
    assert _events(service) == before, answer


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="on a cluster the budget is taken "
                    "apart, by the Genesys call itself")
def test_a_create_refused_behind_a_held_claim_takes_no_call_from_the_budget(
        make_service: Any, sim: Simulator) -> None:
    """SPEC §4 (all Genesys calls stay under GENESYS_RATE_LIMIT_PER_MIN; the change: a call
    is taken from the budget only by a create that journals): the same refused create as
    above takes a call from the shared budget in the rerun's warm step and never spends it,
    so the budget loses one call more than the Genesys requests the create made.

    Steps as above, with GENESYS_RATE_LIMIT_PER_MIN=60 (burst 30, refill 0.5 a second)
    and the bucket set to 10 tokens just before the create."""
    service = make_service(GENESYS_RATE_LIMIT_PER_MIN="60")
    _far_callback_rescheduled_in_doubt(service, sim)
    bucket = keys.rate(client_key(CLIENT_ID))
    seconds, micros = service.redis.time()
    start_ms = int(seconds) * 1000 + int(micros) // 1000
    service.redis.hset(bucket, mapping={"tokens": "10", "ms": str(start_ms)})
    requests_before = _genesys_requests(sim)
    answer = service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T19:00:00Z"))).json
    assert answer["outcome"] == "REJECTED", answer
    tokens = float(service.redis.hget(bucket, "tokens") or 0)
    last_ms = int(service.redis.hget(bucket, "ms") or start_ms)
    taken = round(10 + (last_ms - start_ms) * 30 / 60_000 - tokens)
    made = _genesys_requests(sim) - requests_before
    assert taken <= made, (f"{taken} calls taken from the budget, {made} Genesys requests "
                           "made", answer)


def test_a_revoked_number_answers_without_calling_genesys(
        make_service: Any, sim: Simulator) -> None:
    """SPEC §4 order (number, consent, then time and owner) and README Consent ("No refusal
    calls Genesys"): a create for a revoked number relying on a recorded consent answers
    CONSENT_REVOKED from Redis alone. The same create giving its own consent runs the time
    and owner rules first (with the revocation not yet read), so it reads Genesys (queue,
    user, WFM, memberships: calls from the shared budget, each a read timeout's wait when
    Genesys is slow) before its step finds the revocation and the usual steps answer
    CONSENT_REVOKED. A flow that retries a revoked number spends the org's API budget.

    Steps: revoke-consent; a fresh instance (cold read cache); create with consentGiven
    true and no consentId; count the simulator's requests."""
    revoker = make_service()
    revoked = revoker.action("revoke-consent", {"customerNumber": NUMBER}).json
    assert revoked["outcome"] == "REVOKED", revoked
    service = make_service()
    before = _genesys_requests(sim)
    answer = service.action("create-callback", create_body()).json
    assert answer["reason"] == "CONSENT_REVOKED", answer
    assert _genesys_requests(sim) == before, sim.stats()["requests"]


def test_a_capped_number_answers_without_calling_genesys(
        make_service: Any, sim: Simulator) -> None:
    """SPEC §4 Number (the daily cap "also stops callback bombing") and the order of checks
    (the cap is the number step, before time and owner): at MAX_CALLBACKS_PER_NUMBER_PER_DAY
    a create giving its own consent still reads Genesys for the time and owner rules before
    its step answers LIMIT; the usual steps answer TOO_MANY_REQUESTS_FOR_NUMBER from Redis.

    Steps: cap 1; create, cancel; a fresh instance; create; count the simulator's
    requests."""
    first_service = make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1")
    first = first_service.action("create-callback", create_body()).json
    assert first["outcome"] == "CREATED", first
    cancelled = first_service.action("cancel-callback", {"callbackId": first["callbackId"]}).json
    assert cancelled["outcome"] == "CANCELLED", cancelled
    service = make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1")
    before = _genesys_requests(sim)
    started = time.monotonic()
    answer = service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T20:00:00Z"))).json
    assert answer["reason"] == "TOO_MANY_REQUESTS_FOR_NUMBER", answer
    assert _genesys_requests(sim) == before, (sim.stats()["requests"],
                                              time.monotonic() - started)
