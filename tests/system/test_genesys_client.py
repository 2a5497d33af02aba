"""The Genesys client against the simulator: shared token, 401 refresh, 429, timeouts."""

from __future__ import annotations

import time

from tests.conftest import T0, Service, Simulator, create_body, outbox_schedule


def test_401_fetches_one_new_token_and_retries(service: Service, sim: Simulator) -> None:
    """After Genesys invalidates tokens, the next create refetches once and succeeds."""
    assert service.action("create-callback", create_body()).json["outcome"] == "CREATED"
    sim.control("POST", "tokens/expire")
    result = service.action("create-callback", create_body(customerNumber="+12125550199"))
    assert result.json["outcome"] == "CREATED"
    assert sim.stats()["tokenFetches"] == 2


def test_token_is_shared_through_redis(make_service, sim: Simulator) -> None:  # type: ignore[no-untyped-def]
    """A second app instance (another worker) uses the token the first one fetched."""
    first, second = make_service(), make_service()
    assert first.action("create-callback", create_body()).json["outcome"] == "CREATED"
    assert second.action("create-callback", create_body(
        customerNumber="+12125550199")).json["outcome"] == "CREATED"
    assert sim.stats()["tokenFetches"] == 1


def test_429_within_deadline_is_waited_out(service: Service, sim: Simulator) -> None:
    """One 429 with Retry-After 1 inside a 5 s deadline: wait, retry, CREATED."""
    sim.control("PUT", "faults", {"status": 429, "retryAfter": 1, "count": 1,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    started = time.monotonic()
    result = service.action("create-callback", create_body())
    assert result.json["outcome"] == "CREATED"
    assert time.monotonic() - started >= 1.0
    assert len(sim.callbacks()) == 1


def test_429_beyond_deadline_answers_fast(service: Service, sim: Simulator) -> None:
    """A Retry-After longer than the deadline is not slept: the create is QUEUED at once and
    its first delivery attempt waits for Retry-After."""
    sim.control("PUT", "faults", {"status": 429, "retryAfter": 30,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    started = time.monotonic()
    result = service.action("create-callback", create_body())
    assert (result.json["outcome"], result.json["reason"]) == ("QUEUED", "UPSTREAM_UNAVAILABLE")
    assert time.monotonic() - started < 1.0
    [(_, first_attempt)] = outbox_schedule(service.redis)
    assert first_attempt >= (T0.timestamp() + 30) * 1000


def test_slow_genesys_is_cut_by_the_deadline(make_service, sim: Simulator) -> None:  # type: ignore[no-untyped-def]
    """Genesys slower than the request deadline: the answer still comes within it."""
    service = make_service(REQUEST_DEADLINE_MS="1000")
    service.action("create-callback", create_body(customerNumber="+12125550199"))
    sim.control("PUT", "faults", {"latencyMs": 3000,
                                  "pathPrefix": "/api/v2/conversations/callbacks"})
    started = time.monotonic()
    result = service.action("create-callback", create_body())
    elapsed = time.monotonic() - started
    assert (result.json["outcome"], result.json["reason"]) == ("QUEUED", "UPSTREAM_UNAVAILABLE")
    assert elapsed < 1.5
