"""What real orgs answer, and answers a flow author can trust: WFM's asynchronous and
downloaded results, queues without agent-owned callbacks, days off left to the owner rule,
overnight shifts, canonical zone names, and the order and wording of refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from middleware.rules.time import format_utc
from tests.conftest import DEMO_QUEUE, T0, Service, Simulator, at_local, create_body

BOB, TOM, ADA = (f"a1000000-0000-4000-8000-0000000000{n:02d}" for n in (2, 6, 1))
SEARCH = ("POST /api/v2/workforcemanagement/managementunits/{managementUnitId}"
          "/agentschedules/search")
# T0 is a Monday 18:00Z (13:00 New York). Bob works 09:00-17:00 New York, Monday to Friday.
MONDAY_AFTER_HOURS = at_local(0, "18:00", "America/New_York")
FRIDAY_AFTER_HOURS = at_local(4, "18:00", "America/New_York")
SATURDAY_11_NY = at_local(5, "11:00", "America/New_York")
WEDNESDAY_10Z = T0 + timedelta(days=1, hours=16)      # Tom Holiday's approved day off


def act(service: Service, action: str, **fields: Any) -> dict[str, Any]:
    result = service.action(action, fields)
    assert result.status_code == 200, result.text
    return dict(result.json)


def validate(service: Service, agent: str, when: Any, **fields: Any) -> dict[str, Any]:
    return act(service, "validate-callback-time", agentId=agent,
               customerNumber="+1 415 555 2671", requestedTime=format_utc(when), **fields)


def test_agent_unit_answer_without_business_unit_takes_the_unit_path(
        service: Service, sim: Simulator) -> None:
    """The real API leaves businessUnit out: the zone comes through the management unit."""
    answer = validate(service, BOB, T0 + timedelta(hours=1))
    assert (answer["outcome"], answer["agentTimeZone"]) == ("VALID", "America/New_York")
    requests = sim.stats()["requests"]
    assert requests["GET /api/v2/workforcemanagement/managementunits/{managementUnitId}"] == 1


def test_schedule_search_processing_is_followed_within_the_deadline(
        service: Service, sim: Simulator) -> None:
    """Two Processing answers, then Complete: the hours are known and enforced."""
    sim.control("PUT", "wfm", {"processingSearches": 2})
    answer = validate(service, BOB, MONDAY_AFTER_HOURS)
    assert (answer["outcome"], answer["reason"]) == ("INVALID", "OUTSIDE_AGENT_HOURS")
    assert sim.stats()["requests"][SEARCH] == 3


def test_schedule_still_processing_at_the_deadline_is_unknown_and_not_cached(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """Processing until the deadline: AGENT_HOURS_UNKNOWN; once WFM completes, the next
    request reads the hours instead of a cached unknown."""
    service = make_service(REQUEST_DEADLINE_MS="1500")
    sim.control("PUT", "wfm", {"scheduleSearchStatus": "Processing"})
    first = validate(service, BOB, MONDAY_AFTER_HOURS)
    assert (first["outcome"], first["warnings"]) == ("VALID", "AGENT_HOURS_UNKNOWN")
    sim.control("PUT", "wfm", {"scheduleSearchStatus": "Complete"})
    second = validate(service, BOB, MONDAY_AFTER_HOURS)
    assert (second["outcome"], second["reason"]) == ("INVALID", "OUTSIDE_AGENT_HOURS")


def test_wfm_download_urls_are_followed(service: Service, sim: Simulator) -> None:
    """Schedules and time off that come as a downloadUrl are read from it."""
    sim.control("PUT", "wfm", {"download": True})
    hours = validate(service, BOB, MONDAY_AFTER_HOURS)
    assert (hours["outcome"], hours["reason"]) == ("INVALID", "OUTSIDE_AGENT_HOURS")
    owner = act(service, "resolve-callback-owner", agentId=TOM, queueId=DEMO_QUEUE,
                requestedTime=format_utc(WEDNESDAY_10Z))
    assert (owner["outcome"], owner["reassignReason"]) == ("REASSIGNED", "AGENT_ON_TIME_OFF")


def test_queue_without_agent_owned_callbacks_is_refused_before_any_create(
        service: Service, sim: Simulator) -> None:
    """The queue setting is named, and Genesys is never asked to create."""
    sim.control("PATCH", f"queues/{DEMO_QUEUE}", {"agentOwnedRouting": {
        "enableAgentOwnedCallbacks": False, "maxOwnedCallbackHours": 48,
        "maxOwnedCallbackDelayHours": 720}})
    answer = act(service, "create-callback", **create_body())
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "UPSTREAM_REJECTED")
    assert "agentOwnedRouting.enableAgentOwnedCallbacks" in answer["message"]
    assert sim.creates() == 0


def test_unknown_queue_is_refused_before_any_consent_is_recorded(
        service: Service, sim: Simulator) -> None:
    """A wrong queueId leaves no consent record behind (and names the queue)."""
    wrong = "b1000000-0000-4000-8000-00000000dead"
    answer = act(service, "create-callback", **create_body(
        queueId=wrong, consentSource="IVR_KEYPRESS", consentText="Press 1"))
    assert (answer["outcome"], answer["reason"], answer["consentId"]) == (
        "REJECTED", "UPSTREAM_REJECTED", "")
    assert wrong in answer["message"]
    assert list(service.redis.scan_iter("cbm:{s*}:consent:*")) == []
    assert sim.creates() == 0


def test_asap_on_the_owners_day_off_does_not_wait_for_monday(service: Service,
                                                             sim: Simulator) -> None:
    """Saturday 11:00 New York, Bob off: the callback is due now + lead, with a teammate
    who works then (not Monday 14:00Z with Bob)."""
    service.clock.advance(SATURDAY_11_NY - T0)
    answer = act(service, "create-callback", **create_body(agentId=BOB, requestedTime=None))
    assert answer["outcome"] == "CREATED", answer
    assert answer["scheduledTimeUtc"] == format_utc(SATURDAY_11_NY + timedelta(minutes=5))
    assert (answer["reassigned"], answer["reassignReason"]) == (True, "AGENT_OFF_SHIFT")
    assert answer["assignedAgentId"] != BOB


def test_suggestion_after_hours_does_not_wait_for_the_owners_next_shift(
        service: Service, sim: Simulator) -> None:
    """Friday 18:00 New York (after Bob's shift; he is off at the weekend): the suggestion is
    Saturday 00:00 New York, a date he does not work (Friday 21:00 in San Francisco, the
    number's zone, the last minute of its calling hours), not Monday's shift."""
    answer = act(service, "create-callback", **create_body(
        agentId=BOB, requestedTime=format_utc(FRIDAY_AFTER_HOURS)))
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "OUTSIDE_AGENT_HOURS")
    assert answer["suggestedTimeUtc"] == format_utc(at_local(5, "00:00", "America/New_York"))


def test_shift_that_began_the_day_before_still_counts(service: Service,
                                                     sim: Simulator) -> None:
    """Mon 22:00 - Tue 06:00 New York: at Tue 02:00 the agent is on shift, not off."""
    sim.control("PATCH", f"users/{BOB}", {"weeklyHours": {"mon": ["22:00", "06:00"]}})
    tuesday_2am_ny = at_local(1, "02:00", "America/New_York")
    answer = act(service, "resolve-callback-owner", agentId=BOB, queueId=DEMO_QUEUE,
                 requestedTime=format_utc(tuesday_2am_ny))
    assert (answer["outcome"], answer["assignedAgentId"]) == ("AVAILABLE", BOB)


@pytest.mark.parametrize("zone", ["right/America/New_York", "posix/America/New_York",
                                  "localtime", "Not/AZone"])
def test_time_zone_must_be_a_canonical_iana_name(service: Service, sim: Simulator,
                                                 zone: str) -> None:
    """Only IANA names read local times: right/ would shift 12:00 by the leap seconds."""
    local = (T0 + timedelta(days=1)).strftime("%Y-%m-%dT12:00:00")
    answer = act(service, "validate-callback-time", agentId=BOB,
                 customerNumber="+1 415 555 2671", requestedLocalTime=local, timeZone=zone)
    assert (answer["outcome"], answer["reason"]) == ("INVALID", "UNKNOWN_TIME_ZONE")


def test_validate_with_an_unknown_agent_is_invalid_unknown_agent(service: Service,
                                                                sim: Simulator) -> None:
    """As create-callback would answer; the message names the id."""
    nobody = "a1000000-0000-4000-8000-00000000beef"
    answer = validate(service, nobody, T0 + timedelta(hours=1))
    assert (answer["outcome"], answer["reason"], answer["valid"]) == (
        "INVALID", "UNKNOWN_AGENT", False)
    assert nobody in answer["message"]


def test_create_with_an_unknown_agent_names_the_id(service: Service, sim: Simulator) -> None:
    """UNKNOWN_AGENT says which id Genesys does not know."""
    nobody = "a1000000-0000-4000-8000-00000000beef"
    answer = act(service, "create-callback", **create_body(agentId=nobody))
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "UNKNOWN_AGENT")
    assert nobody in answer["message"]


def test_resolve_owner_calls_a_time_without_offset_timezone_missing(
        service: Service, sim: Simulator) -> None:
    """Like every other action."""
    answer = act(service, "resolve-callback-owner", agentId=BOB, queueId=DEMO_QUEUE,
                 requestedTime=(T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"))
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "TIMEZONE_MISSING")


def test_invalid_number_names_the_country_it_was_read_as(service: Service,
                                                        sim: Simulator) -> None:
    """A US national number read as British says so and points at customerCountry."""
    answer = act(service, "create-callback", **create_body(
        customerNumber="(415) 555-2671", customerCountry="GB"))
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "INVALID_NUMBER")
    assert "GB" in answer["message"] and "customerCountry" in answer["message"]


def test_daily_cap_is_answered_in_the_number_step(make_service: Callable[..., Service],
                                                  sim: Simulator) -> None:
    """Over the cap, the answer is TOO_MANY_REQUESTS_FOR_NUMBER even when consent is missing
    too: the number step comes before consent and time."""
    service = make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1")
    first = act(service, "create-callback", **create_body())
    assert first["outcome"] == "CREATED", first
    cancelled = act(service, "cancel-callback", callbackId=first["callbackId"])
    assert cancelled["outcome"] == "CANCELLED"
    again = act(service, "create-callback", **create_body(
        consentGiven=False, requestedTime="not a time"))
    assert (again["outcome"], again["reason"]) == ("REJECTED", "TOO_MANY_REQUESTS_FOR_NUMBER")
