"""Right time, right zone: the time rules inside the actions, with WFM data from the
simulator over HTTP and agent profiles from a file."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.conftest import T0, Service, Simulator, create_body, utc_of_local, when

BOB = "a1000000-0000-4000-8000-000000000002"      # New York, Mon-Fri 09-17
CHLOE = "a1000000-0000-4000-8000-000000000003"    # London, Mon-Fri 09-17
TOM = "a1000000-0000-4000-8000-000000000006"      # London, every day 08-16, off in 2 days
WALTER = "a1000000-0000-4000-8000-000000000010"   # no WFM
NY_NUMBER = "+12125550199"
NY, LA = "America/New_York", "America/Los_Angeles"
LONDON, CHICAGO = "Europe/London", "America/Chicago"


def create(service: Service, **fields: Any) -> dict[str, Any]:
    result = service.action("create-callback", create_body(**fields))
    assert result.status_code == 200, result.text
    return dict(result.json)


def validate(service: Service, **fields: Any) -> dict[str, Any]:
    body = {"agentId": BOB, "customerNumber": NY_NUMBER, **fields}
    result = service.action("validate-callback-time", body)
    assert result.status_code == 200, result.text
    return dict(result.json)


def test_local_time_defaults_to_the_agents_wfm_zone(service: Service, sim: Simulator) -> None:
    """A London agent's 10:00 without timeZone is 10:00 London, read from WFM over HTTP."""
    answer = create(service, agentId=CHLOE, customerNumber="+442079460958",
                    requestedTime=None, requestedLocalTime=when("2026-11-24T10:00"))
    assert answer["outcome"] == "CREATED", answer
    assert answer["scheduledTimeUtc"] == when("2026-11-24T10:00:00.000Z", LONDON)
    assert (answer["agentTimeZone"], answer["agentLocalTime"]) == (
        "Europe/London", when("2026-11-24T10:00:00+00:00", LONDON))
    assert "POST /api/v2/workforcemanagement/managementunits/{managementUnitId}/agentschedules" \
        "/search" in sim.stats()["requests"]


def test_new_york_agent_slip_is_outside_agent_hours(service: Service, sim: Simulator) -> None:
    """17:30 New York for a 09-17 agent on a working day: refused, next morning suggested."""
    answer = create(service, agentId=BOB, customerNumber=NY_NUMBER,
                    requestedTime=when("2026-11-23T17:30:00-05:00", NY))
    assert (answer["reason"], answer["suggestedTimeUtc"]) == (
        "OUTSIDE_AGENT_HOURS", when("2026-11-24T14:00:00.000Z", NY))
    assert sim.creates() == 0


def test_outside_calling_hours_suggests_first_legal_minute(service: Service,
                                                          sim: Simulator) -> None:
    """07:00 in New York for a New York number is refused with 08:00 suggested."""
    answer = create(service, customerNumber=NY_NUMBER,
                    requestedTime=when("2026-11-24T12:00:00Z", NY))
    assert (answer["reason"], answer["suggestedTimeUtc"]) == (
        "OUTSIDE_CALLING_HOURS", when("2026-11-24T13:00:00.000Z", NY))
    assert answer["customerTimeZone"] == "America/New_York"


def test_calling_hours_policy_warn_lets_it_through(make_service: Callable[..., Service],
                                                   sim: Simulator) -> None:
    """With CALLING_HOURS_POLICY=warn the callback is created and the warning says why."""
    service = make_service(CALLING_HOURS_POLICY="warn")
    answer = create(service, customerNumber=NY_NUMBER,
                    requestedTime=when("2026-11-24T12:00:00Z", NY))
    assert answer["outcome"] == "CREATED" and "OUTSIDE_CALLING_HOURS" in answer["warnings"]


def test_agent_without_wfm_or_profile_warns_hours_unknown(service: Service,
                                                          sim: Simulator) -> None:
    """No WFM and no profile: the time passes with AGENT_HOURS_UNKNOWN."""
    answer = create(service, agentId=WALTER)
    assert answer["outcome"] == "CREATED" and answer["warnings"] == "AGENT_HOURS_UNKNOWN"
    assert answer["agentTimeZone"] == ""


def test_schedule_search_still_processing_warns_hours_unknown(service: Service,
                                                              sim: Simulator) -> None:
    """WFM still processing the schedule search at the deadline: AGENT_HOURS_UNKNOWN."""
    sim.control("PUT", "wfm", {"scheduleSearchStatus": "Processing"})
    answer = create(service, agentId=BOB, customerNumber=NY_NUMBER,
                    requestedTime=when("2026-11-23T23:00:00Z"))
    assert answer["outcome"] == "CREATED" and "AGENT_HOURS_UNKNOWN" in answer["warnings"]


def test_profile_file_gives_zone_and_hours(make_service: Callable[..., Service],
                                           sim: Simulator, tmp_path: Path) -> None:
    """An agent without WFM takes zone and weekly hours from AGENT_PROFILES_FILE."""
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({
        "teams": {"chicago": {"timeZone": "America/Chicago",
                              "weeklyHours": {"mon-fri": ["09:00", "17:00"]}}},
        "agents": {WALTER: {"team": "chicago"}}}))
    service = make_service(AGENT_PROFILES_FILE=str(path))
    refused = create(service, agentId=WALTER, customerNumber=NY_NUMBER,
                     requestedLocalTime=when("2026-11-23T18:00"), requestedTime=None)
    assert refused["reason"] == "OUTSIDE_AGENT_HOURS"
    assert refused["suggestedTimeUtc"] == when("2026-11-24T15:00:00.000Z", CHICAGO)  # 09:00
    created = create(service, agentId=WALTER, customerNumber=NY_NUMBER,
                     requestedLocalTime=when("2026-11-23T15:00"), requestedTime=None)
    assert (created["outcome"], created["agentTimeZone"]) == ("CREATED", "America/Chicago")
    assert created["scheduledTimeUtc"] == when("2026-11-23T21:00:00.000Z", CHICAGO)


def test_bad_profile_file_stops_start_up(make_service: Callable[..., Service],
                                         tmp_path: Path) -> None:
    """A profile with an unknown zone stops the service naming the file and entry."""
    import pytest

    from middleware.config import ConfigError
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"agents": {WALTER: {"timeZone": "Mars/Olympus"}}}))
    # The configuration reads the file with the scheduler's loader, so it stops there.
    with pytest.raises(ConfigError, match=r"AGENT_PROFILES_FILE=.* agents\."):
        make_service(AGENT_PROFILES_FILE=str(path))


def test_validate_reports_day_off_with_next_working_time(service: Service,
                                                         sim: Simulator) -> None:
    """validate-callback-time refuses a Saturday for a weekday agent, suggesting Monday."""
    answer = validate(service, requestedTime=when("2026-11-28T15:00:00Z"))
    assert (answer["outcome"], answer["valid"], answer["reason"]) == (
        "INVALID", False, "OUTSIDE_AGENT_HOURS")
    # Monday 09:00 in New York, whichever side of a DST change the weekend was.
    assert answer["suggestedTimeUtc"] == utc_of_local(when("2026-11-30T09:00"), "America/New_York")


def test_validate_sees_approved_time_off(service: Service, sim: Simulator) -> None:
    """Tom's approved day off removes his shift: validate refuses it and suggests next day."""
    day_off = (T0 + timedelta(days=2)).date()
    answer = validate(service, agentId=TOM, customerNumber="+442079460958",
                      requestedLocalTime=f"{day_off}T10:00", timeZone="Europe/London")
    assert answer["reason"] == "OUTSIDE_AGENT_HOURS"
    assert answer["suggestedTimeUtc"] == utc_of_local(f"{day_off + timedelta(days=1)}T08:00",
                                                      LONDON)


def test_validate_valid_time_reads_back_both_zones(service: Service, sim: Simulator) -> None:
    """A good time is VALID with the agent's and the customer's local times."""
    answer = validate(service, requestedTime=when("2026-11-24T17:00:00Z", NY),
                      customerNumber="+14155552671")
    assert (answer["outcome"], answer["valid"], answer["reason"]) == ("VALID", True, "OK")
    assert answer["agentLocalTime"] == when("2026-11-24T12:00:00-05:00", NY)
    assert answer["customerLocalTime"] == when("2026-11-24T09:00:00-08:00", LA)


def test_validate_writes_nothing(service: Service, sim: Simulator) -> None:
    """Validation creates nothing in Genesys and nothing in Redis."""
    validate(service, requestedTime=when("2026-11-24T16:00:00Z"))
    assert sim.creates() == 0
    # Only bookkeeping (OAuth token, call budget, metrics) is touched; no business state.
    bookkeeping = (":token:", ":rate:", "cbm:metrics")
    assert [k for k in service.redis.scan_iter()
            if not any(part in k for part in bookkeeping)] == []


def test_reschedule_moves_time_and_window(service: Service, sim: Simulator) -> None:
    """A reschedule PATCHes Genesys, answers RESCHEDULED and the window sees the new time."""
    first = create(service)
    moved = service.action("reschedule-callback", {
        "callbackId": first["callbackId"], "requestedTime": when("2026-11-24T20:00:00Z")}).json
    assert (moved["outcome"], moved["callbackId"]) == ("RESCHEDULED", first["callbackId"])
    assert moved["scheduledTimeUtc"] == when("2026-11-24T20:00:00.000Z")
    held = sim.callbacks()[0]
    assert held["callbackScheduledTime"] == when("2026-11-24T20:00:00.000Z")
    found = service.action("find-pending-callbacks", {"customerNumber": "+14155552671"}).json
    assert found["scheduledTimeUtc"] == when("2026-11-24T20:00:00.000Z")


def test_reschedule_reruns_time_rules(service: Service, sim: Simulator) -> None:
    """A reschedule into the customer's night is refused with a suggestion; nothing moves."""
    first = create(service)
    refused = service.action("reschedule-callback", {
        "callbackId": first["callbackId"], "requestedTime": when("2026-11-24T12:00:00Z", LA)}).json
    assert (refused["outcome"], refused["reason"]) == ("REJECTED", "OUTSIDE_CALLING_HOURS")
    assert refused["suggestedTimeUtc"] == when("2026-11-24T16:00:00.000Z", LA)  # 08:00
    assert sim.callbacks()[0]["callbackScheduledTime"] == first["scheduledTimeUtc"]


def test_reschedule_unknown_callback_is_not_found(service: Service) -> None:
    """An id not created here is REJECTED NOT_FOUND."""
    answer = service.action("reschedule-callback", {
        "callbackId": "00000000-0000-4000-8000-000000000000",
        "requestedTime": when("2026-11-24T20:00:00Z")}).json
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "NOT_FOUND")


def test_queue_horizon_shortens_the_window(service: Service, redis_server: Any) -> None:
    """A queue allowing owned callbacks only 24 h ahead caps the horizon below 30 days."""
    from middleware.app import build_services
    from middleware.genesys.client import new_session
    from middleware.rules.profiles import AgentProfile
    from middleware.store import connect
    times = build_services(service.config, redis_client=connect(redis_server.url, 1.0),
                           http=new_session(), clock=service.clock).times
    profile = AgentProfile("", None, "none")
    short = times.context(T0, profile, None,
                          {"agentOwnedRouting": {"maxOwnedCallbackDelayHours": 24}})
    assert short.latest == T0 + timedelta(hours=24)
    assert times.context(T0, profile, None, None).latest == T0 + timedelta(days=30)
