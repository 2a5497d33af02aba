"""A ninth review: the afresh path that waits for a create in flight, and the warm step that
restores the request's fields when it finds the number taken or revoked (58e3c62). Each test
fails on the code it was written against; each is forced deterministically (the app
in-process, simulator latency faults, the fixed clock T0)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Service, Simulator, create_body, when

NUMBER = "+14155552671"
CREATE = "POST /api/v2/conversations/callbacks"
CONVERSATION = "c0000000-0000-4000-8000-0000000000ab"


def _act(service: Service, **fields: Any) -> dict[str, Any]:
    answer = service.action("create-callback", create_body(**{"customerNumber": NUMBER,
                                                              **fields}))
    assert answer.status_code == 200, answer.text
    return dict(answer.json)


def _creates(sim: Simulator) -> int:
    return int(sim.stats()["requests"].get(CREATE, 0))


def _live(sim: Simulator) -> set[str]:
    return {c["conversationId"] for c in sim.callbacks() if c["state"] == "scheduled"}


def test_a_derived_key_whose_callback_ended_is_a_request_like_any_other(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §4 Duplicates (a pending callback counts when it is due by now + the window) and
    Lifecycle 6 (a key derived from ``conversationId`` never replays an answer whose
    callback has ended). A derived key whose callback is known to have ended (cancelled
    here) is a request like any other: a create in flight beyond the window does not make it
    a DUPLICATE, just as it does not for a request with no key. (The review that wrote the
    first version of this test found it answered CREATED beside the far one while the
    README promised DUPLICATE "in the window or beyond it"; SPEC's window wins, and the
    beyond-window rule is kept for a callback that may still be live: Genesys could not
    say whether it ended.) It must not answer DUPLICATE of a create still in flight either.

    Steps: create with conversationId C at T0+1h (CREATED), cancel it; POST
    /api/v2/conversations/callbacks slowed by 1500 ms (once); another instance creates for
    the number at T0+3d (no key); once its POST reached the simulator, repeat the create
    with C."""
    first, second = make_service(), make_service()
    old = _act(first, conversationId=CONVERSATION)
    assert old["outcome"] == "CREATED", old
    cancelled = first.action("cancel-callback", {"callbackId": old["callbackId"]}).json
    assert cancelled["outcome"] == "CANCELLED", cancelled
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1, "method": "POST",
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    before = _creates(sim)
    others: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: others.append(_act(
        second, requestedTime=when("2026-11-26T19:00:00Z"))))
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
    far = others[0]
    assert far["outcome"] == "CREATED", far
    assert again["outcome"] == "CREATED" and again["scheduledTimeUtc"] == old[
        "scheduledTimeUtc"], (again, far)
    assert _live(sim) == {far["callbackId"], again["callbackId"]}, (again, far)



def test_a_create_revoked_during_its_warm_owner_step_names_the_recorded_consent(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §3.1 (``consentId``: the consent record the request relies on; §2 every output
    field carries its value where it applies) and the rule ``_consent`` applies (a consent is
    named back once found as this number's record: "revoked since, or stale"). A create
    naming a recorded ``consentId`` whose number is revoked while its warm owner step reads
    Genesys answers CONSENT_REVOKED with ``consentId: ""``: 58e3c62 made ``_warm``'s REVOKED
    branch restore ``d.common`` to its copy from before ``_given_consent`` put the recorded
    ``consentId`` in it (it used to blank only a consent the request gave itself). The same
    request sent again a moment later, refused by the consent step for the same revocation,
    names the consent; so does ``_journal``'s revocation (the afresh path). One refusal, two
    answers.

    Steps: record-consent for the number; latency 1500 ms on GET /api/v2/users; a fresh
    instance creates with that consentId (nothing pending: the warm path); another instance
    revokes 0.7 s later (cancelPending false); then the same create again."""
    setup = make_service()
    recorded = setup.action("record-consent", {
        "customerNumber": NUMBER, "consentSource": "AGENT_VERBAL",
        "consentText": "callback script v1"}).json
    assert recorded["outcome"] == "RECORDED", recorded
    consent_id = str(recorded["consentId"])
    service, revoker = make_service(), make_service()
    sim.control("PUT", "faults", {"latencyMs": 1500, "count": 1, "method": "GET",
                                  "pathPrefix": "/api/v2/users"})
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(_act(service,
                                                                 consentId=consent_id)))
    thread.start()
    try:
        time.sleep(0.7)
        revoked = revoker.action("revoke-consent", {"customerNumber": NUMBER,
                                                    "cancelPending": False}).json
        assert revoked["outcome"] == "REVOKED", revoked
    finally:
        thread.join()
        sim.control("DELETE", "faults")
    meanwhile = answers[0]
    after = _act(service, consentId=consent_id)
    assert (meanwhile["reason"], after["reason"]) == ("CONSENT_REVOKED", "CONSENT_REVOKED"), (
        meanwhile, after)
    assert after["consentId"] == consent_id, after
    assert meanwhile["consentId"] == consent_id, (
        "the warm step's CONSENT_REVOKED drops the consent the request relied on", meanwhile)
