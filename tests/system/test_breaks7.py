"""Answers of a create that meets another one mid-way: what the DUPLICATE answer says is the
pending callback's, never the refused request's. Forced deterministically (the app
in-process, simulator latency, the fixed clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Service, Simulator, create_body
from tests.system.test_departures import BOB, ny_local

NUMBER = "+14155552671"


def _act(service: Service, **fields: Any) -> dict[str, Any]:
    answer = service.action("create-callback", create_body(customerNumber=NUMBER, **fields))
    assert answer.status_code == 200, answer.text
    return dict(answer.json)


def test_a_duplicate_found_after_the_owner_moved_does_not_say_reassigned(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §3.1: ``reassigned``/``reassignReason`` say why ownership of *this* callback
    moved. A create for Bob on his day off is reassigned by the owner rule on the warm path;
    meanwhile another instance creates a callback for the number, so the warm step finds it
    and the usual claim answers DUPLICATE. That answer names the other callback and its
    owner: it must not carry the refused request's reassignment.

    Steps: Saturday 11:00 New York (Bob off); latency 1500 ms on the first GET
    /api/v2/users (the first instance's time rules, after its number read); a second
    instance creates for the demo agent meanwhile; then the first finishes."""
    first, second = make_service(), make_service()
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
    finally:
        thread.join()
        sim.control("DELETE", "faults")
    assert other["outcome"] == "CREATED" and other["reassigned"] is False, other
    answer = answers[0]
    assert (answer["outcome"], answer["existingCallbackId"]) == (
        "DUPLICATE", other["callbackId"]), answer
    assert answer["assignedAgentId"] == other["assignedAgentId"], answer
    assert (answer["reassigned"], answer["reassignReason"]) == (False, ""), answer
