"""create-callback: each live rule refuses and passes, and the Genesys create is exact."""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import jsonschema
import pytest

from middleware.contracts import load_contracts
from middleware.logs import JsonFormatter
from tests.conftest import DEMO_AGENT, DEMO_QUEUE, Service, Simulator, create_body, when

NY, LA = "America/New_York", "America/Los_Angeles"
OUTPUT = load_contracts()["create-callback"].output_schema


def answer_of(result: Any) -> dict[str, Any]:
    """The 200 answer, checked against the output schema and the always-present rule."""
    assert result.status_code == 200, result.text
    body = result.json
    jsonschema.validate(body, OUTPUT)
    assert set(body) == set(OUTPUT["properties"])
    return dict(body)


def test_valid_request_creates_agent_owned_callback(service: Service, sim: Simulator) -> None:
    """A consented, well-timed request answers CREATED with the callback the simulator holds."""
    body = answer_of(service.action("create-callback", create_body()))
    assert (body["outcome"], body["reason"], body["retryable"]) == ("CREATED", "OK", False)
    assert body["customerNumberE164"] == "+14155552671"
    assert body["scheduledTimeUtc"] == when("2026-11-23T19:00:00.000Z")
    assert body["assignedAgentId"] == DEMO_AGENT and body["reassigned"] is False
    held = sim.callbacks()
    assert [c["conversationId"] for c in held] == [body["callbackId"]]
    assert held[0]["ownerAgentId"] == DEMO_AGENT


def test_create_command_is_exactly_the_agent_owned_shape(service: Service, sim: Simulator) -> None:
    """The body sent to Genesys is the SPEC §4 agent-owned command, nothing more."""
    answer_of(service.action("create-callback", create_body(
        priority=3, reference="CASE-1", notes="prefers mornings")))
    request = sim.callbacks()[0]["request"]
    assert request["routingData"] == {
        "queueId": DEMO_QUEUE, "priority": 3,
        "scoredAgents": [{"agent": {"id": DEMO_AGENT}, "score": 100}],
        "routingFlags": ["AGENT_OWNED_CALLBACK"],
    }
    assert request["callbackNumbers"] == ["+14155552671"]
    assert request["callbackUserName"] == "Grace Customer"
    assert request["callbackScheduledTime"] == when("2026-11-23T19:00:00.000Z")
    assert request["validateCallbackNumbers"] is True
    assert set(request["data"]) == {"requestToken", "consentId", "reference", "notes"}
    assert set(request) == {"routingData", "callbackNumbers", "callbackUserName",
                            "callbackScheduledTime", "validateCallbackNumbers", "data"}


def test_invalid_number_is_rejected_without_calling_genesys(service: Service,
                                                            sim: Simulator) -> None:
    """A number phonenumbers cannot validate is REJECTED INVALID_NUMBER; Genesys is untouched."""
    body = answer_of(service.action("create-callback", create_body(customerNumber="555-01")))
    assert (body["outcome"], body["reason"]) == ("REJECTED", "INVALID_NUMBER")
    assert sim.creates() == 0


def test_national_number_uses_country_hint(service: Service, sim: Simulator) -> None:
    """A national-format number is read with customerCountry."""
    body = answer_of(service.action("create-callback", create_body(
        customerNumber="020 7946 0958", customerCountry="GB")))
    assert body["customerNumberE164"] == "+442079460958"
    assert body["customerTimeZone"] == "Europe/London"


@pytest.mark.parametrize("consent", [False])
def test_missing_consent_is_rejected_and_genesys_never_called(
        service: Service, sim: Simulator, consent: bool) -> None:
    """consentGiven false: REJECTED CONSENT_MISSING and no request reaches Genesys at all."""
    body = answer_of(service.action("create-callback", create_body(consentGiven=consent)))
    assert (body["outcome"], body["reason"]) == ("REJECTED", "CONSENT_MISSING")
    assert sum(sim.stats()["requests"].values()) == 0


def test_consent_given_must_be_boolean(service: Service) -> None:
    """consentGiven as a string breaks the contract: 400 naming the field."""
    result = service.action("create-callback", create_body(consentGiven="yes"))
    assert result.status_code == 400
    assert "consentGiven" in result.json["description"]


def test_offset_time_is_converted_to_utc(service: Service, sim: Simulator) -> None:
    """14:30 at -05:00 is scheduled at 19:30Z in Genesys, and read back in both zones."""
    body = answer_of(service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T14:30:00-05:00", NY))))
    assert body["scheduledTimeUtc"] == when("2026-11-23T19:30:00.000Z", NY)
    assert sim.callbacks()[0]["callbackScheduledTime"] == when("2026-11-23T19:30:00.000Z", NY)
    assert body["agentTimeZone"] == "America/New_York"
    assert body["agentLocalTime"] == when("2026-11-23T14:30:00-05:00", NY)
    assert body["customerLocalTime"] == when("2026-11-23T11:30:00-08:00", LA)


def test_time_without_offset_is_timezone_missing(service: Service, sim: Simulator) -> None:
    """A time with no offset is REJECTED TIMEZONE_MISSING, nothing created."""
    body = answer_of(service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T19:00:00"))))
    assert (body["outcome"], body["reason"]) == ("REJECTED", "TIMEZONE_MISSING")
    assert sim.creates() == 0


def test_past_time_is_rejected_with_suggestion(service: Service, sim: Simulator) -> None:
    """A time before now + lead is TIME_IN_PAST with the earliest valid time suggested."""
    body = answer_of(service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T17:00:00Z"))))
    assert (body["reason"], body["suggestedTimeUtc"]) == ("TIME_IN_PAST",
                                                          when("2026-11-23T18:05:00.000Z"))
    assert sim.creates() == 0


def test_far_time_is_rejected(service: Service, sim: Simulator) -> None:
    """Beyond MAX_SCHEDULE_DAYS is TIME_TOO_FAR."""
    body = answer_of(service.action("create-callback", create_body(
        requestedTime=when("2027-01-30T16:00:00Z"))))
    assert body["reason"] == "TIME_TOO_FAR"
    assert sim.creates() == 0


def test_asap_schedules_at_lead_time(service: Service, sim: Simulator) -> None:
    """Without a time, the callback is scheduled now + MIN_LEAD_MINUTES."""
    body = answer_of(service.action("create-callback", create_body(requestedTime="")))
    assert body["scheduledTimeUtc"] == when("2026-11-23T18:05:00.000Z")


def test_check_order_number_before_consent(service: Service) -> None:
    """With a bad number and no consent, the number check answers first (SPEC order)."""
    body = answer_of(service.action("create-callback", create_body(
        customerNumber="x", consentGiven=False)))
    assert body["reason"] == "INVALID_NUMBER"


def test_genesys_refusal_is_upstream_rejected(service: Service, sim: Simulator) -> None:
    """An unknown queue is refused by Genesys: REJECTED UPSTREAM_REJECTED, not retryable."""
    body = answer_of(service.action("create-callback", create_body(
        queueId="00000000-0000-4000-8000-00000000dead")))
    assert (body["outcome"], body["reason"], body["retryable"]) == (
        "REJECTED", "UPSTREAM_REJECTED", False)


def test_genesys_down_at_create_is_queued(service: Service, sim: Simulator) -> None:
    """Genesys answering 503 to the create once every check passed: QUEUED, accepted (not to
    be retried), no callback id yet, and the number's window already taken."""
    sim.control("PUT", "faults", {"status": 503, "pathPrefix": "/api/v2/conversations"})
    body = answer_of(service.action("create-callback", create_body()))
    assert (body["outcome"], body["reason"], body["retryable"]) == (
        "QUEUED", "UPSTREAM_UNAVAILABLE", False)
    assert body["callbackId"] == "" and body["consentId"]
    again = answer_of(service.action("create-callback", create_body(
        requestedTime=when("2026-11-23T20:00:00Z"))))
    assert again["outcome"] == "DUPLICATE" and again["existingCallbackId"] == ""


def test_genesys_down_during_checks_is_retryable_rejection(service: Service,
                                                           sim: Simulator) -> None:
    """Genesys failing a read the checks need: REJECTED UPSTREAM_UNAVAILABLE, retryable."""
    sim.control("PUT", "faults", {"status": 503, "pathPrefix": "/api/v2/workforcemanagement"})
    body = answer_of(service.action("create-callback", create_body()))
    assert (body["outcome"], body["reason"], body["retryable"]) == (
        "REJECTED", "UPSTREAM_UNAVAILABLE", True)
    assert not list(service.redis.scan_iter("*claim*"))


def test_request_id_from_correlation_header_is_in_body_header_and_logs(
        service: Service) -> None:
    """ININ-Correlation-Id becomes the requestId of the body, the header and every log line."""
    correlation = "0f8fad5b-d9cb-469f-a165-70867728950e"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    # Only the request's own lines: the simulator and other tests' leftover threads share
    # this process, and their lines belong to no service request.
    this_thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == this_thread
                      and not record.name.startswith(("middleware.sim", "urllib3", "redis")))
    logging.getLogger().addHandler(handler)
    try:
        result = service.action("create-callback", create_body(),
                                headers={"ININ-Correlation-Id": correlation})
    finally:
        logging.getLogger().removeHandler(handler)
    assert result.json["requestId"] == correlation
    assert result.headers["X-Request-Id"] == correlation
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all(line.get("requestId") == correlation for line in lines), lines
    assert "4155552671" not in stream.getvalue()


def test_malformed_json_is_400(service: Service) -> None:
    """A body that is not JSON is a 400 with the SPEC error body."""
    from tests.conftest import AUTH
    result = service.client.simulate_post("/v1/actions/create-callback", body="{not json",
                                          headers={**AUTH, "Content-Type": "application/json"})
    assert result.status_code == 400
    assert set(result.json) == {"title", "description", "requestId"}


def test_missing_required_field_is_400_naming_it(service: Service) -> None:
    """Leaving out agentId is a contract violation naming agentId."""
    result = service.action("create-callback", create_body(agentId=None))
    assert result.status_code == 400 and "agentId" in result.json["description"]
