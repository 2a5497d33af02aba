"""Logs an operator can use: every line JSON (gunicorn's own too), numbers masked, ids intact."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests

from middleware.logs import redact
from tests.conftest import (
    AUTH,
    RedisServer,
    Service,
    Simulator,
    assert_no_numbers,
    create_body,
    service_env,
    start_gunicorn,
)


def test_every_line_of_a_gunicorn_run_is_json(redis_client: object, redis_server: RedisServer,
                                              live_sim: Simulator, tmp_path: Path) -> None:
    """Boot, requests, a refused caller and shutdown: each stderr line parses as JSON."""
    log = tmp_path / "gunicorn.log"
    server = start_gunicorn(service_env(redis_server.url, live_sim.url), log)
    try:
        url = f"{server.url}/v1/actions/create-callback"
        assert requests.post(url, json=create_body(requestedTime=None), headers=AUTH,
                             timeout=10).status_code == 200
        assert requests.post(url, json={}, timeout=10).status_code == 401
        assert requests.get(f"{server.url}/nowhere", headers=AUTH, timeout=10).status_code == 404
    finally:
        server.process.terminate()
        server.process.wait(15)
    lines = log.read_text().splitlines()
    assert len(lines) >= 5, lines
    loggers = set()
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(entry), line
        loggers.add(entry["logger"])
    assert "gunicorn.error" in loggers, loggers
    assert_no_numbers(log.read_text(), "gunicorn's log")


def test_masking_keeps_tokens_and_timestamps_and_masks_numbers() -> None:
    """A 32-hex token and an ISO timestamp stay searchable; the phone number does not."""
    token = "ce45a51db82716451782d834c1290246"
    stamp = "2026-12-01T19:09:00.000Z"
    text = redact(f"dead letter {token} due {stamp} for +1 (415) 555-2671")
    assert token in text
    assert stamp in text
    assert "555-2671" not in text and "4155552671" not in text
    assert text.endswith("2671")


def test_masking_keeps_uuids_and_addresses() -> None:
    """Genesys ids and listener addresses are not numbers."""
    text = redact("agent 12345678-1234-4234-8234-123456789012 on 10.100.200.250:8080")
    assert text == "agent 12345678-1234-4234-8234-123456789012 on 10.100.200.250:8080"


def test_number_glued_to_a_name_is_still_masked() -> None:
    """A number inside a word with non-hex letters is masked."""
    assert "4155552671" not in redact("Grace4155552671")


def test_non_uuid_correlation_id_is_neither_echoed_nor_logged(
        service: Service, log_capture: io.StringIO) -> None:
    """An ININ-Correlation-Id that is not a UUID (here a phone number) gets a fresh id."""
    start = len(log_capture.getvalue())
    result = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"},
                            headers={"ININ-Correlation-Id": "14155550101"})
    assert result.status_code == 200
    assert result.json["requestId"] != "14155550101"
    assert "14155550101" not in result.headers["X-Request-Id"]
    assert "14155550101" not in log_capture.getvalue()[start:]


@pytest.mark.parametrize("text", [
    "cafe4155552671", "Bea4155552671", "14155552671a",
    "GET /v1/actions/+1%20415%20555%202671 HTTP/1.1", "/healthz?n=4%31%35%35%35%35%32%36%37%31",
])
def test_numbers_beside_hex_letters_or_percent_encoded_are_masked(text: str) -> None:
    """A number next to a-f letters, or sent percent-encoded, is still a number."""
    assert "4155552671" not in redact(text)
    assert "2671" in redact(text)


def test_unknown_route_body_never_echoes_a_number(service: Service) -> None:
    """A 404 names the route it could not find without the number a caller put in it."""
    result = service.client.simulate_post("/v1/actions/14155552671", headers=AUTH,
                                          json={})
    assert result.status_code == 404
    assert "4155552671" not in result.text and "2671" in result.text


def test_a_create_is_one_request_line_naming_its_callback(
        service: Service, log_capture: io.StringIO) -> None:
    """The request line carries what the create did: outcome, callback, owner, consent and
    the number masked to its last four digits, so no second line has to be joined to it."""
    start = len(log_capture.getvalue())
    answer = service.action("create-callback", create_body()).json
    assert answer["outcome"] == "CREATED", answer
    lines = [json.loads(line) for line in log_capture.getvalue()[start:].splitlines()
             if line.startswith("{")]
    mine = [e for e in lines if e.get("requestId") == answer["requestId"]]
    request = [e for e in mine if e["msg"] == "request"]
    assert len(request) == 1, mine
    line = request[0]
    assert (line["outcome"], line["callbackId"], line["assignedAgentId"], line["consentId"]) == (
        "CREATED", answer["callbackId"], answer["assignedAgentId"], answer["consentId"]), line
    assert line["number"] == "+*******2671", line
    assert not [e for e in mine if e["msg"] == "callback created"], mine
