"""A bounded, seeded, randomized concurrent workload through the warm step's fallback and the
afresh path (58e3c62): creates and cancels on two numbers through three in-process instances
on one Redis, while a nemesis switches simulator latency (below the read timeout, so no
create lands unseen: no worker runs here) and one-off Genesys refusals. At quiescence it
checks SPEC §4 Lifecycle invariant 1 (at most one live callback per number in the window,
in the simulator), invariant 3 (every CREATED answer's callback is live unless a cancel of
it answered), that every live callback was answered to someone, and that each answer's
owner is the simulator's owner of that callback. A seed fixes the workload and the faults;
thread scheduling still varies."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from middleware.rules.time import format_utc
from tests.conftest import T0, Service, Simulator, create_body
from tests.system.test_departures import BOB

NUMBERS = ("+14155552671", "+14155550199")
CONVERSATIONS = ("c0000000-0000-4000-8000-0000000000c1", "c0000000-0000-4000-8000-0000000000c2")
WINDOW_END = T0 + timedelta(hours=48)
OPS_PER_CLIENT = 12
CLIENTS = 4


def _seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 (workload, not keys)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _nemesis(sim: Simulator, rng: random.Random, stop: threading.Event) -> None:
    faults = [
        {"latencyMs": 600, "method": "GET", "pathPrefix": "/api/v2/users", "count": 2},
        {"latencyMs": 900, "method": "POST", "pathPrefix": "/api/v2/conversations/callbacks",
         "count": 1},
        {"latencyMs": 700, "status": 400, "method": "POST",
         "pathPrefix": "/api/v2/conversations/callbacks", "count": 1},
        {"latencyMs": 400, "method": "GET", "pathPrefix": "/api/v2/workforcemanagement",
         "count": 2},
        None,
    ]
    while not stop.is_set():
        fault = rng.choice(faults)
        if fault is None:
            sim.control("DELETE", "faults")
        else:
            sim.control("PUT", "faults", fault)
        stop.wait(rng.uniform(0.2, 0.6))
    sim.control("DELETE", "faults")


def _client(services: list[Service], rng: random.Random, log: list[dict[str, Any]],
            created: list[str], lock: threading.Lock) -> None:
    for _ in range(OPS_PER_CLIENT):
        service = rng.choice(services)
        with lock:
            target = rng.choice(created) if created and rng.random() < 0.45 else None
        if target is not None:
            answer = service.action("cancel-callback", {"callbackId": target}).json
            with lock:
                log.append({"op": "cancel", "callbackId": target, "answer": answer})
            continue
        number = rng.choice(NUMBERS)
        fields: dict[str, Any] = {"customerNumber": number,
                                  "agentId": rng.choice((None, BOB)),
                                  "consentSource": "AGENT_VERBAL"}
        fields = {k: v for k, v in fields.items() if v is not None}
        pick = rng.random()
        if pick < 0.3:
            fields["requestedTime"] = None  # as soon as possible
        else:
            hours = rng.choice((1, 2, 24, 26))
            fields["requestedTime"] = format_utc(T0 + timedelta(hours=hours))
        if rng.random() < 0.4:
            fields["conversationId"] = rng.choice(CONVERSATIONS)
        answer = service.action("create-callback", create_body(**fields)).json
        with lock:
            log.append({"op": "create", "number": number, "fields": fields, "answer": answer})
            if answer.get("outcome") == "CREATED" and not answer.get("replayed"):
                created.append(str(answer["callbackId"]))
        time.sleep(rng.uniform(0, 0.05))


@pytest.mark.soak
@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_soak_warm_fallback_and_afresh(make_service: Callable[..., Service], sim: Simulator,
                                       seed: int) -> None:
    """Invariants 1 and 3 of SPEC §4 Lifecycle, and answers naming the simulator's owner,
    under a seeded concurrent workload (bounded: 48 operations a seed)."""
    services = [make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1000") for _ in range(3)]
    log: list[dict[str, Any]] = []
    created: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    nemesis = threading.Thread(target=_nemesis, args=(sim, _seeded(seed * 7919), stop))
    clients = [threading.Thread(target=_client, args=(services, _seeded(seed * 100 + i),
                                                      log, created, lock))
               for i in range(CLIENTS)]
    nemesis.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=60)
    stop.set()
    nemesis.join(timeout=5)
    assert not any(t.is_alive() for t in clients), "a client hung"

    callbacks = sim.callbacks()
    live = {c["conversationId"]: c for c in callbacks if c["state"] == "scheduled"}
    problems: list[str] = []
    for number in NUMBERS:
        near = [cid for cid, c in live.items() if number in c["callbackNumbers"]
                and _parse(c["callbackScheduledTime"]) <= WINDOW_END]
        if len(near) > 1:
            problems.append(f"invariant 1: {number} has {len(near)} live callbacks: {near}")
    cancelled = {e["callbackId"] for e in log if e["op"] == "cancel"
                 and e["answer"].get("outcome") in ("CANCELLED", "REJECTED")}
    answered: set[str] = set()
    for entry in log:
        answer = entry["answer"]
        if entry["op"] != "create":
            continue
        if answer.get("outcome") == "CREATED":
            cid = str(answer["callbackId"])
            answered.add(cid)
            if cid not in live and cid not in cancelled:
                problems.append(f"invariant 3: CREATED {cid} is not live and not cancelled")
            if cid in live and live[cid].get("ownerAgentId", "") != answer["assignedAgentId"]:
                problems.append(f"owner: CREATED {cid} answers {answer['assignedAgentId']}, "
                                f"Genesys holds {live[cid].get('ownerAgentId')}")
        if answer.get("outcome") == "DUPLICATE" and answer.get("existingCallbackId"):
            answered.add(str(answer["existingCallbackId"]))
    queued = [e for e in log if e["op"] == "create" and e["answer"].get("outcome") == "QUEUED"]
    if not queued:
        for cid in live:
            if cid not in answered:
                problems.append(f"live callback {cid} was answered to no one")
    assert not problems, (seed, problems, [(e["op"], e.get("fields"), e["answer"].get(
        "outcome"), e["answer"].get("reason"), e["answer"].get("callbackId")) for e in log])
