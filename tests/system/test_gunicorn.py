"""The service under real gunicorn (the shipped config, two workers): what depends on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import (
    AUTH,
    Gunicorn,
    RedisServer,
    Simulator,
    create_body,
    service_env,
    start_gunicorn,
)

pytestmark = pytest.mark.gunicorn


def post(server: Gunicorn, body: object, **kwargs: object) -> requests.Response:
    return requests.post(f"{server.url}/v1/actions/create-callback", json=body,
                         headers=AUTH, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_create_under_gunicorn(gunicorn_service: Gunicorn, live_sim: Simulator) -> None:
    """A create through gunicorn answers CREATED with a callback the simulator returns."""
    answer = post(gunicorn_service, create_body(requestedTime=None)).json()
    assert answer["outcome"] == "CREATED"
    assert [c["conversationId"] for c in live_sim.callbacks()] == [answer["callbackId"]]


def test_twenty_concurrent_requests_fetch_one_token(gunicorn_service: Gunicorn,
                                                    live_sim: Simulator) -> None:
    """Two worker processes, twenty concurrent creates, an empty cache: one token fetch."""
    bodies = [create_body(customerNumber=f"+1415555{2600 + i:04d}", requestedTime=None)
              for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda b: post(gunicorn_service, b).json(), bodies))
    assert [a["outcome"] for a in answers] == ["CREATED"] * 20
    assert live_sim.stats()["tokenFetches"] == 1


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_oversized_chunked_body_is_413(gunicorn_service: Gunicorn) -> None:
    """A chunked body (no Content-Length) over 64 KiB is refused with 413."""
    payload = json.dumps(create_body(notes="x" * 70_000)).encode()
    resp = requests.post(f"{gunicorn_service.url}/v1/actions/create-callback",
                         data=_chunks(payload), timeout=10,
                         headers={**AUTH, "Content-Type": "application/json"})
    assert resp.request.headers.get("Transfer-Encoding") == "chunked"
    assert resp.status_code == 413
    assert set(resp.json()) == {"title", "description", "requestId"}


def test_small_chunked_body_is_read(gunicorn_service: Gunicorn, live_sim: Simulator) -> None:
    """Genesys sends chunked bodies by default; one under the cap is served normally."""
    payload = json.dumps(create_body(requestedTime=None)).encode()
    resp = requests.post(f"{gunicorn_service.url}/v1/actions/create-callback",
                         data=_chunks(payload, 64), timeout=10,
                         headers={**AUTH, "Content-Type": "application/json"})
    assert resp.request.headers.get("Transfer-Encoding") == "chunked"
    assert resp.json()["outcome"] == "CREATED"


def test_fifty_concurrent_creates_over_two_instances_make_one_callback(
        redis_client: object, redis_server: RedisServer, live_sim: Simulator, tmp_path: Path
) -> None:
    """50 requests for one number, two gunicorn instances on one Redis: exactly one callback."""
    env = service_env(redis_server.url, live_sim.url)
    servers = [start_gunicorn(env, tmp_path / f"g{i}.log") for i in range(2)]
    try:
        def send(i: int) -> dict[str, Any]:
            server = servers[i % 2]
            # No time: as soon as possible, valid whatever hour the suite runs at.
            body = create_body(customerNumber=["+14155552671", "(415) 555-2671",
                                               "tel:+1-415-555-2671"][i % 3],
                               requestedTime=None)
            resp = requests.post(f"{server.url}/v1/actions/create-callback", json=body,
                                 headers={**AUTH, "Idempotency-Key": f"k-{i}"}, timeout=15)
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(send, range(50)))
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(15)
    created = [a for a in answers if a["outcome"] == "CREATED"]
    assert len(created) == 1, [a["outcome"] + "/" + a["reason"] for a in answers]
    winner = created[0]["callbackId"]
    others = [(a["outcome"], a["reason"], a["existingCallbackId"] == winner)
              if a["outcome"] != "REJECTED" else a["message"]
              for a in answers if a is not created[0]]
    assert others == [("DUPLICATE", "DUPLICATE_PENDING", True)] * 49, others
    assert [c["conversationId"] for c in live_sim.callbacks()] == [winner]
