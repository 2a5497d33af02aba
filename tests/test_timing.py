"""The time rules that are live: offsets, local times with their DST traps, lead and horizon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from middleware.timing import check_window, format_utc, resolve

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
LEAD = timedelta(minutes=5)
HORIZON = timedelta(days=30)


def run(requested: str | None = None, local: str | None = None, zone: str | None = None,
        now: datetime = NOW):
    return resolve(requested, local, zone, now, LEAD, HORIZON)


@pytest.mark.parametrize(("text", "utc"), [
    ("2026-11-23T16:00:00Z", "2026-11-23T16:00:00.000Z"),
    ("2026-11-23T11:00:00-05:00", "2026-11-23T16:00:00.000Z"),
    ("2026-11-23T21:30:00+05:30", "2026-11-23T16:00:00.000Z"),
    ("2026-11-24T04:45:00+12:45", "2026-11-23T16:00:00.000Z"),
    ("2026-11-23T12:30:00-03:30", "2026-11-23T16:00:00.000Z"),
])
def test_instant_with_offset_is_converted_to_utc(text: str, utc: str) -> None:
    """Any offset, including half- and three-quarter-hour ones, lands on the same UTC instant."""
    check = run(text)
    assert check.ok and check.instant is not None
    assert format_utc(check.instant) == utc


def test_time_without_offset_is_timezone_missing() -> None:
    """A bare wall-clock time in requestedTime is refused rather than guessed."""
    check = run("2026-11-23T16:00:00")
    assert check.reason == "TIMEZONE_MISSING"


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01T10:00:00Z", "16:00"])
def test_unparseable_time_is_invalid(text: str) -> None:
    """Text that is not an ISO-8601 date-time is INVALID_TIME."""
    assert run(text).reason == "INVALID_TIME"


def test_both_time_inputs_is_invalid() -> None:
    """requestedTime and requestedLocalTime together are ambiguous, so refused."""
    assert run("2026-11-23T16:00:00Z", "2026-11-23T11:00", "America/New_York").reason == \
        "INVALID_TIME"


def test_past_time_is_refused_with_earliest_suggestion() -> None:
    """A time already gone suggests the first whole minute after the lead time."""
    check = run("2026-11-23T14:00:00Z")
    assert check.reason == "TIME_IN_PAST"
    assert check.suggested == datetime(2026, 11, 23, 15, 5, tzinfo=UTC)


def test_time_inside_lead_is_refused_and_lead_boundary_passes() -> None:
    """Four minutes ahead is too soon; exactly the lead time is fine."""
    assert run("2026-11-23T15:04:00Z").reason == "TIME_IN_PAST"
    assert run("2026-11-23T15:05:00Z").ok


def test_time_beyond_horizon_is_too_far() -> None:
    """Thirty days and a minute ahead is beyond the horizon; thirty days exactly is not."""
    assert run("2026-12-23T15:01:00Z").reason == "TIME_TOO_FAR"
    assert run("2026-12-23T15:00:00Z").ok


def test_no_time_means_as_soon_as_possible() -> None:
    """Without a time the callback is scheduled at the lead time."""
    check = run()
    assert check.ok and check.instant == datetime(2026, 11, 23, 15, 5, tzinfo=UTC)


def test_local_time_is_read_in_its_zone() -> None:
    """11:00 in New York in November is 16:00 UTC."""
    check = run(local="2026-11-23T11:00", zone="America/New_York")
    assert check.ok and check.instant == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(("local", "zone", "after_gap"), [
    ("2027-03-14T02:30", "America/New_York", datetime(2027, 3, 14, 7, 0, tzinfo=UTC)),
    ("2027-03-28T01:30", "Europe/London", datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
    ("2026-10-04T02:30", "Australia/Sydney", datetime(2026, 10, 3, 16, 0, tzinfo=UTC)),
])
def test_spring_forward_gap_is_nonexistent(local: str, zone: str, after_gap: datetime) -> None:
    """A wall-clock time the clocks skip is refused, suggesting the first instant after."""
    check = resolve(None, local, zone, datetime(2026, 9, 1, tzinfo=UTC), LEAD,
                    timedelta(days=400))
    assert check.reason == "NONEXISTENT_LOCAL_TIME"
    assert check.suggested == after_gap


def test_fall_back_fold_is_ambiguous_naming_both() -> None:
    """01:30 on the New York fall-back night happens twice; both are named, earlier suggested."""
    check = resolve(None, "2026-11-01T01:30", "America/New_York",
                    datetime(2026, 10, 1, tzinfo=UTC), LEAD, HORIZON)
    assert check.reason == "AMBIGUOUS_LOCAL_TIME"
    assert "01:30:00-04:00" in check.message and "01:30:00-05:00" in check.message
    assert check.suggested == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_unknown_zone_is_refused() -> None:
    """A zone name that is not IANA is UNKNOWN_TIME_ZONE."""
    assert run(local="2026-11-23T11:00", zone="Eastern").reason == "UNKNOWN_TIME_ZONE"


def test_local_time_without_zone_is_timezone_missing() -> None:
    """Until agent zones are read from WFM, a local time needs its zone."""
    assert run(local="2026-11-23T11:00").reason == "TIMEZONE_MISSING"


def test_window_check_is_pure() -> None:
    """The window check depends only on its arguments."""
    inside = NOW + timedelta(hours=1)
    assert check_window(inside, NOW, LEAD, HORIZON).instant == inside
