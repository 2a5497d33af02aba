"""An eighth review: every create-callback answer describes exactly the callback it names
(SPEC §3.1), and nothing computed for the refused request leaks into it. Each test fails on
the code it was written against; each is forced deterministically (the app in-process,
simulator faults, the fixed clock T0)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from middleware.rules.time import format_utc
from tests.conftest import Service, Simulator, at_local, create_body, when
from tests.system.test_departures import BOB, ny_local

NUMBER = "+14155552671"
CREATE = "POST /api/v2/conversations/callbacks"
CONVERSATION = "c0000000-0000-4000-8000-0000000000aa"


def _act(service: Service, **fields: Any) -> dict[str, Any]:
    answer = service.action("create-callback", create_body(**{"customerNumber": NUMBER,
                                                              **fields}))
    assert answer.status_code == 200, answer.text
    return dict(answer.json)


def _consent_ids(service: Service) -> set[str]:
    return {str(k).rsplit(":", 1)[-1] for k in service.redis.scan_iter("cbm:*")
            if ":consent:" in str(k)}


def _creates(sim: Simulator) -> int:
    return int(sim.stats()["requests"].get(CREATE, 0))


def test_an_afresh_create_does_not_answer_duplicate_of_a_create_still_in_flight(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §3.1 (``callbackId``/``existingCallbackId``: on DUPLICATE the existing one's,
    empty only while QUEUED), §4 Duplicates (the others wait for the winner's result and
    answer DUPLICATE with it) and Lifecycle 6. A derived key (``conversationId``) whose stored
    answer's callback was cancelled runs afresh; ``_claimed``'s afresh branch takes
    ``Lifecycle.pending(window_only=False)``, which counts a CREATING journal of another
    request still in its Genesys POST, and answers DUPLICATE with it at once: empty
    ``callbackId``, that request's time. That create is then refused by Genesys (400) and
    abandoned: the DUPLICATE (also stored as the key's answer) named a callback that never
    existed, and the number has none.

    Steps: create with conversationId C (CREATED), cancel it; POST /api/v2/conversations/
    callbacks answers 400 after 1500 ms (once); another instance creates for the number at
    T0+2h (no key); once its POST reached the simulator, repeat the create with C."""
    first, second = make_service(), make_service()
    old = _act(first, conversationId=CONVERSATION)
    assert old["outcome"] == "CREATED", old
    cancelled = first.action("cancel-callback", {"callbackId": old["callbackId"]}).json
    assert cancelled["outcome"] == "CANCELLED", cancelled
    sim.control("PUT", "faults", {"latencyMs": 1500, "status": 400, "count": 1,
                                  "method": "POST",
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    before = _creates(sim)
    others: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: others.append(_act(
        second, requestedTime=when("2026-11-23T20:00:00Z"))))
    thread.start()
    try:
        for _ in range(100):  # bounded: the POST starts within the first few hundred ms
            if _creates(sim) > before:
                break
            time.sleep(0.02)
        assert _creates(sim) > before, "the other create never reached Genesys"
        again = _act(first, conversationId=CONVERSATION)
    finally:
        thread.join()
        sim.control("DELETE", "faults")
    assert others[0]["reason"] == "UPSTREAM_REJECTED", others[0]
    live = {c["conversationId"] for c in sim.callbacks() if c["state"] == "scheduled"}
    if again["outcome"] == "DUPLICATE":
        assert again["existingCallbackId"] in live, (
            "DUPLICATE names a callback that does not exist", again, sorted(live))
    # It waited for the other create's outcome (refused, so nothing pending) and made its
    # own: the number ends with exactly the callback it answered.
    assert again["outcome"] == "CREATED" and live == {again["callbackId"]}, (again, live)


def test_a_duplicate_does_not_carry_the_refused_requests_time_warnings(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §3.1 (every answer describes the callback it names; ``warnings`` of the time
    rules): with CALLING_HOURS_POLICY=warn, a create at 21:30 Los Angeles passes the time
    step with warning OUTSIDE_CALLING_HOURS, then finds the number's pending callback at
    T0+1h (11:00 Los Angeles, inside calling hours) and answers DUPLICATE with that
    callback's ``scheduledTimeUtc``, but ``_duplicate`` copies ``warnings`` from the refused
    request's ``common``: the answer says the named callback is outside calling hours.

    Steps: create at T0+1h (CREATED, no warnings); create at 21:30 Los Angeles on T0's date."""
    service = make_service(CALLING_HOURS_POLICY="warn")
    existing = _act(service)
    assert (existing["outcome"], existing["warnings"]) == ("CREATED", ""), existing
    late = format_utc(at_local(0, "21:30", "America/Los_Angeles"))
    answer = _act(service, requestedTime=late)
    assert (answer["outcome"], answer["existingCallbackId"]) == (
        "DUPLICATE", existing["callbackId"]), answer
    assert answer["scheduledTimeUtc"] == existing["scheduledTimeUtc"], answer
    assert "OUTSIDE_CALLING_HOURS" not in answer["warnings"].split(","), answer


def test_a_duplicate_gives_the_assigned_agents_zone_and_local_time(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §3.1 (``agentTimeZone, agentLocalTime``: the assigned agent's zone and the time
    there; §2: empty only where a field does not apply). A DUPLICATE names the pending
    callback's owner in ``assignedAgentId`` and its time in ``scheduledTimeUtc``/
    ``customerLocalTime``, but ``_duplicate`` always blanks ``agentTimeZone`` and
    ``agentLocalTime``, though that agent's zone is known (the CREATED answer gave it).

    Steps: create at T0+1h for the demo agent (CREATED); the same request again."""
    service = make_service()
    existing = _act(service)
    assert existing["outcome"] == "CREATED" and existing["agentTimeZone"], existing
    answer = _act(service)
    assert (answer["outcome"], answer["assignedAgentId"]) == (
        "DUPLICATE", existing["assignedAgentId"]), answer
    assert (answer["agentTimeZone"], answer["agentLocalTime"]) == (
        existing["agentTimeZone"], existing["agentLocalTime"]), answer


def test_a_create_refused_as_consent_not_found_names_no_unstored_consent(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §3.1 (``consentId``: the consent record this callback relies on) and the rule
    the last reviews settled (a refusal names no consent that was never stored, as the
    CONSENT_REVOKED answers now do): ``_consent`` answers every consent refusal with
    ``consentId=fields["consentId"]``, so CONSENT_NOT_FOUND names the very id that is not
    stored (no ``cbm:{s?}:consent:<id>`` key).

    Steps: create with consentId 00000000-0000-4000-8000-000000000000, never recorded."""
    service = make_service()
    unknown = "00000000-0000-4000-8000-000000000000"
    answer = _act(service, consentId=unknown)
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "CONSENT_NOT_FOUND"), answer
    named = answer.get("consentId", "")
    assert named == "" or named in _consent_ids(service), (
        "the refused create names a consent that is not stored", answer)


def test_a_create_capped_after_the_owner_moved_does_not_say_reassigned(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """The fix of a3372ac, one answer further: SPEC §3.1 order of checks (number, with its
    daily cap, comes before owner; the first failing check gives the answer, as
    ``_daily_cap`` answers it with ``reassigned: false``). A create for Bob on his day off is
    reassigned by the owner rule on the warm path; meanwhile another instance creates (and
    cancels) the number's one callback of the day, so the warm step answers LIMIT and the
    usual claim answers REJECTED TOO_MANY_REQUESTS_FOR_NUMBER with ``d.common`` as
    ``_owner_step`` left it: ``reassigned: true``, ``reassignReason: AGENT_OFF_SHIFT`` and the
    teammate's zone, of a callback never created. ``_duplicate`` drops those fields; the
    other answers of ``_claimed`` do not.

    Steps: MAX_CALLBACKS_PER_NUMBER_PER_DAY=1; Saturday 11:00 New York; latency 1500 ms on
    the first GET /api/v2/users; create for Bob (ASAP); 0.6 s later another instance creates
    for the demo agent, then cancels it; the first finishes."""
    first = make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1")
    second = make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1")
    saturday = ny_local(5, "11:00")
    first.clock.set(saturday)
    second.clock.set(saturday)
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1, "method": "GET",
                                  "pathPrefix": "/api/v2/users"})
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(_act(
        first, agentId=BOB, requestedTime=None, consentSource="AGENT_VERBAL")))
    thread.start()
    try:
        time.sleep(0.6)
        other = _act(second, requestedTime=None)
        assert other["outcome"] == "CREATED", other
        cancelled = second.action("cancel-callback", {"callbackId": other["callbackId"]}).json
        assert cancelled["outcome"] == "CANCELLED", cancelled
    finally:
        thread.join()
        sim.control("DELETE", "faults")
    answer = answers[0]
    assert (answer["outcome"], answer["reason"]) == (
        "REJECTED", "TOO_MANY_REQUESTS_FOR_NUMBER"), answer
    assert (answer["reassigned"], answer["reassignReason"]) == (False, ""), answer
