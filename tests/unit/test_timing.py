"""The pure time rules: offsets, local times and DST, lead and horizon, calling and agent hours,
and the suggestion (checked by property)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middleware.rules.calling_hours import calling_hours, load_rules
from middleware.rules.number import normalise
from middleware.rules.time import (
    AgentHours,
    CallingHours,
    TimeContext,
    TimePolicy,
    as_soon_as_possible,
    earliest_valid,
    evaluate,
    format_utc,
    parse_request,
    passes,
    weekly_shifts,
)

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # a Monday
POLICY = TimePolicy(timedelta(minutes=5), timedelta(days=30))
RULES = load_rules()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def customer(number: str) -> CallingHours:
    parsed = normalise(number, "US")
    assert parsed is not None
    hours = calling_hours(RULES, parsed)
    assert hours is not None
    return hours


def agent(zone: str, hours: dict[str, object], start: date = date(2026, 11, 20),
          days: int = 40) -> AgentHours:
    from middleware.rules.time import parse_weekly
    return AgentHours(zone, weekly_shifts(parse_weekly(hours, "test"), zone, start, days))


def ctx(**kw: object) -> TimeContext:
    values: dict[str, object] = {"now": NOW, "policy": POLICY}
    values.update(kw)
    return TimeContext(**values)  # type: ignore[arg-type]


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-23T16:00:00Z", utc(2026, 11, 23, 16)),
    ("2026-11-23T11:00:00-05:00", utc(2026, 11, 23, 16)),
    ("2026-11-23T21:30:00+05:30", utc(2026, 11, 23, 16)),   # Asia/Kolkata
    ("2026-11-24T04:45:00+12:45", utc(2026, 11, 23, 16)),   # Pacific/Chatham (standard)
    ("2026-11-24T05:45:00+13:45", utc(2026, 11, 23, 16)),   # Pacific/Chatham (summer)
    ("2026-11-23T12:30:00-03:30", utc(2026, 11, 23, 16)),   # America/St_Johns
])
def test_instant_with_offset_is_converted_to_utc(text: str, expected: datetime) -> None:
    """Any offset, including half- and three-quarter-hour ones, lands on one UTC instant."""
    assert parse_request(text, None, None).instant == expected


@pytest.mark.parametrize(("local", "zone", "expected"), [
    ("2026-11-23T21:30", "Asia/Kolkata", utc(2026, 11, 23, 16)),
    ("2026-11-23T12:30", "America/St_Johns", utc(2026, 11, 23, 16)),
    ("2026-11-24T05:45", "Pacific/Chatham", utc(2026, 11, 23, 16)),
    ("2026-07-01T12:00", "Europe/London", utc(2026, 7, 1, 11)),
    ("2026-07-01T12:00", "Australia/Sydney", utc(2026, 7, 1, 2)),
])
def test_local_time_is_read_in_its_zone(local: str, zone: str, expected: datetime) -> None:
    """requestedLocalTime + timeZone gives the instant of that wall clock in that zone."""
    assert parse_request(None, local, zone).instant == expected


def test_time_without_offset_is_timezone_missing() -> None:
    """A bare wall-clock time in requestedTime is refused rather than guessed."""
    failure = parse_request("2026-11-23T16:00:00", None, None).failure
    assert failure is not None and failure.reason == "TIMEZONE_MISSING"


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01T10:00:00Z", "16:00"])
def test_unparseable_time_is_invalid(text: str) -> None:
    """Text that is not an ISO-8601 date-time is INVALID_TIME."""
    failure = parse_request(text, None, None).failure
    assert failure is not None and failure.reason == "INVALID_TIME"


def test_both_time_inputs_is_invalid() -> None:
    """requestedTime and requestedLocalTime together are refused."""
    failure = parse_request("2026-11-23T16:00:00Z", "2026-11-23T11:00", "UTC").failure
    assert failure is not None and failure.reason == "INVALID_TIME"


def test_unknown_zone_is_refused() -> None:
    """A zone name that is not IANA is UNKNOWN_TIME_ZONE."""
    failure = parse_request(None, "2026-11-23T11:00", "Eastern").failure
    assert failure is not None and failure.reason == "UNKNOWN_TIME_ZONE"


@pytest.mark.parametrize(("local", "zone", "after_gap"), [
    ("2027-03-14T02:30", "America/New_York", utc(2027, 3, 14, 7)),
    ("2027-03-28T01:30", "Europe/London", utc(2027, 3, 28, 1)),
    ("2026-10-04T02:30", "Australia/Sydney", utc(2026, 10, 3, 16)),
    ("2027-09-26T03:00", "Pacific/Chatham", utc(2027, 9, 25, 14)),
])
def test_spring_forward_gap_is_nonexistent(local: str, zone: str, after_gap: datetime) -> None:
    """A wall-clock time the clocks skip is refused, suggesting the first instant after."""
    failure = parse_request(None, local, zone).failure
    assert failure is not None and failure.reason == "NONEXISTENT_LOCAL_TIME"
    assert failure.suggested == after_gap


@pytest.mark.parametrize(("local", "zone", "first", "second", "earlier"), [
    ("2026-11-01T01:30", "America/New_York", "01:30:00-04:00", "01:30:00-05:00",
     utc(2026, 11, 1, 5, 30)),
    ("2026-10-25T01:30", "Europe/London", "01:30:00+01:00", "01:30:00+00:00",
     utc(2026, 10, 25, 0, 30)),
    ("2027-04-04T02:30", "Australia/Sydney", "02:30:00+11:00", "02:30:00+10:00",
     utc(2027, 4, 3, 15, 30)),
])
def test_fall_back_fold_is_ambiguous_naming_both(local: str, zone: str, first: str,
                                                 second: str, earlier: datetime) -> None:
    """A wall-clock time that happens twice names both instants and suggests the earlier."""
    failure = parse_request(None, local, zone).failure
    assert failure is not None and failure.reason == "AMBIGUOUS_LOCAL_TIME"
    assert first in failure.message and second in failure.message
    assert failure.suggested == earlier


# -- lead, horizon, offsets ------------------------------------------------------------


def test_past_time_is_refused_with_earliest_suggestion() -> None:
    """A time already gone suggests the first whole minute after the lead time."""
    check = evaluate(utc(2026, 11, 23, 14), ctx())
    assert check.reason == "TIME_IN_PAST" and check.suggested == utc(2026, 11, 23, 15, 5)


def test_lead_boundary() -> None:
    """Four minutes ahead is too soon; exactly the lead time is fine."""
    assert evaluate(utc(2026, 11, 23, 15, 4), ctx()).reason == "TIME_IN_PAST"
    assert evaluate(utc(2026, 11, 23, 15, 5), ctx()).ok


def test_horizon_boundary_has_no_later_suggestion() -> None:
    """Beyond the horizon is TIME_TOO_FAR with no suggestion; the horizon itself passes."""
    check = evaluate(utc(2026, 12, 23, 15, 1), ctx())
    assert check.reason == "TIME_TOO_FAR" and check.suggested is None
    assert evaluate(utc(2026, 12, 23, 15), ctx()).ok


def test_offset_of_no_involved_zone_warns_or_refuses() -> None:
    """+09:00 for a New York agent and a San Francisco customer: a warning, or refused when
    STRICT_OFFSETS is on; the agent's own offset is fine."""
    instant = utc(2026, 11, 23, 18)
    base = {"agent_zone": "America/New_York", "customer": customer("+14155552671")}
    assert evaluate(instant, ctx(**base), timedelta(hours=9)).warnings == ("OFFSET_MISMATCH",
                                                                          "AGENT_HOURS_UNKNOWN")
    strict = TimePolicy(POLICY.min_lead, POLICY.horizon, strict_offsets=True)
    assert evaluate(instant, ctx(policy=strict, **base), timedelta(hours=9)).reason == \
        "TIMEZONE_MISMATCH"
    assert "OFFSET_MISMATCH" not in evaluate(instant, ctx(**base), timedelta(hours=-5)).warnings


# -- calling hours ---------------------------------------------------------------------


@pytest.mark.parametrize(("number", "instant", "allowed"), [
    ("+12125550199", utc(2026, 11, 23, 13, 0), True),    # 08:00 New York
    ("+12125550199", utc(2026, 11, 23, 12, 59), False),  # 07:59
    ("+12125550199", utc(2026, 11, 24, 2, 0), True),     # 21:00 exactly
    ("+12125550199", utc(2026, 11, 24, 2, 1), False),    # 21:01
    ("+13055550123", utc(2026, 11, 24, 1, 30), False),   # 20:30 Miami: Florida stops at 20:00
    ("+13055550123", utc(2026, 11, 24, 1, 0), True),     # 20:00 Miami
    ("+16135550123", utc(2026, 11, 28, 23, 30), False),  # Saturday 18:30 Ottawa (CRTC)
    ("+16135550123", utc(2026, 11, 24, 2, 30), True),    # Monday 21:30 Ottawa
    ("+442079460958", utc(2026, 11, 23, 21, 0), True),   # 21:00 London (default rule)
    ("+12085550123", utc(2026, 11, 23, 15, 30), False),  # 08:30 Boise but 07:30 Los Angeles
    ("+12085550123", utc(2026, 11, 23, 16, 0), True),    # 08:00 in Los Angeles too
])
def test_calling_hours_in_every_zone(number: str, instant: datetime, allowed: bool) -> None:
    """US 08-21, Florida 08-20, CRTC weekend hours, default elsewhere, all zones of a number."""
    assert customer(number).allows(instant) is allowed


def test_calling_hours_refuse_and_suggest_first_allowed() -> None:
    """07:00 in New York is refused, suggesting 08:00 that day."""
    check = evaluate(utc(2026, 11, 24, 12), ctx(customer=customer("+12125550199")))
    assert check.reason == "OUTSIDE_CALLING_HOURS"
    assert check.suggested == utc(2026, 11, 24, 13)


def test_two_zone_area_code_suggests_when_both_allow() -> None:
    """An Idaho number spanning Mountain and Pacific time waits for 08:00 Pacific."""
    check = evaluate(utc(2026, 11, 24, 14, 30), ctx(customer=customer("+12085550123")))
    assert check.reason == "OUTSIDE_CALLING_HOURS"
    assert check.suggested == utc(2026, 11, 24, 16)


def test_warn_policy_allows_with_warning() -> None:
    """Under CALLING_HOURS_POLICY=warn the time passes with OUTSIDE_CALLING_HOURS warned."""
    warn = TimePolicy(POLICY.min_lead, POLICY.horizon, "warn")
    check = evaluate(utc(2026, 11, 24, 12), ctx(policy=warn, customer=customer("+12125550199")))
    assert check.ok and "OUTSIDE_CALLING_HOURS" in check.warnings


# -- agent hours -----------------------------------------------------------------------


def test_agent_in_other_zone_slip_is_outside_agent_hours() -> None:
    """A London agent (09-17) asked for 18:00 London (13:00 in New York): refused, and the
    suggestion is the agent's next working minute the customer may be called."""
    london = agent("Europe/London", {"mon-fri": ["09:00", "17:00"]})
    check = evaluate(utc(2026, 11, 24, 18), ctx(agent=london,
                                                 customer=customer("+12125550199")))
    assert check.reason == "OUTSIDE_AGENT_HOURS"
    assert check.suggested == utc(2026, 11, 25, 13)  # 13:00 London = 08:00 New York


def test_day_off_is_not_a_time_error_unless_strict() -> None:
    """A Saturday for a Monday-Friday agent passes (the owner rule decides), except strict."""
    weekdays = agent("America/New_York", {"mon-fri": ["09:00", "17:00"]})
    saturday = utc(2026, 11, 28, 16)
    assert evaluate(saturday, ctx(agent=weekdays)).ok
    strict = evaluate(saturday, ctx(agent=weekdays, strict_day=True))
    assert strict.reason == "OUTSIDE_AGENT_HOURS"
    assert strict.suggested == utc(2026, 11, 30, 14)  # Monday 09:00 New York


def test_unknown_hours_pass_with_warning() -> None:
    """No hours known: the time passes with AGENT_HOURS_UNKNOWN."""
    assert evaluate(utc(2026, 11, 24, 16), ctx()).warnings == ("AGENT_HOURS_UNKNOWN",)


def test_agent_shift_across_dst_change_follows_wall_clock() -> None:
    """09:00 New York is 14:00Z before the spring change and 13:00Z after it."""
    ny = agent("America/New_York", {"mon-fri": ["09:00", "17:00"]}, date(2027, 3, 10), 10)
    assert ny.working_at(utc(2027, 3, 12, 14)) and not ny.working_at(utc(2027, 3, 12, 13, 30))
    assert ny.working_at(utc(2027, 3, 15, 13)) and not ny.working_at(utc(2027, 3, 15, 12, 30))


def test_asap_defers_to_first_valid_minute() -> None:
    """At 03:00 New York, as soon as possible is 08:00 (customer) and says ASAP_DEFERRED."""
    check = as_soon_as_possible(ctx(now=utc(2026, 11, 24, 8), customer=customer("+12125550199")))
    assert check.instant == utc(2026, 11, 24, 13)
    assert "ASAP_DEFERRED" in check.warnings
    assert format_utc(check.instant) == "2026-11-24T13:00:00.000Z"


# -- the suggestion, by property --------------------------------------------------------

ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata",
         "America/St_Johns", "Pacific/Chatham", "America/Los_Angeles"]
NUMBERS = ["+12125550199", "+13055550123", "+16135550123", "+442079460958", "+12085550123",
           "+919876543210", "+61291234567"]
SHORT = TimePolicy(timedelta(minutes=5), timedelta(days=3))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    start_minute=st.integers(0, 3 * 24 * 60),
    now_offset=st.integers(0, 400 * 24 * 60),
    zone=st.sampled_from(ZONES),
    number=st.sampled_from(NUMBERS),
    shift_start=st.integers(0, 20) .map(lambda h: h * 60),
    shift_len=st.integers(1, 16).map(lambda h: h * 60),
    days=st.sampled_from(["mon-fri", "mon-sun", "sat-sun", "tue-thu"]),
    with_agent=st.booleans(),
)
def test_suggestion_validates_and_no_earlier_minute_does(
        start_minute: int, now_offset: int, zone: str, number: str, shift_start: int,
        shift_len: int, days: str, with_agent: bool) -> None:
    """Every suggestion passes every rule, and no whole minute between the request and it
    does (bounded: three-day horizon, seeded)."""
    now = utc(2026, 1, 1) + timedelta(minutes=now_offset)
    end = min(shift_start + shift_len, 24 * 60)
    hours = {days: [f"{shift_start // 60:02d}:{shift_start % 60:02d}",
                    f"{end // 60:02d}:{end % 60:02d}"]}
    hours_agent = agent(zone, hours, (now - timedelta(days=1)).date(), 6) if with_agent else None
    context = TimeContext(now, SHORT, hours_agent, customer(number), zone)
    requested = now + timedelta(minutes=start_minute)
    suggestion = earliest_valid(requested, context)
    first = max(requested, context.earliest)
    minute = first.replace(second=0, microsecond=0)
    if minute < first:
        minute += timedelta(minutes=1)
    stop = suggestion or context.latest
    while minute < stop:
        assert not passes(minute, context), f"{minute} passes before {suggestion}"
        minute += timedelta(minutes=1)
    if suggestion is not None:
        assert passes(suggestion, context)
        assert evaluate(suggestion, context).ok
