"""Turning the requested time into one UTC instant, and the rules every instant must pass.

Pure functions of their arguments (the caller passes ``now``): no I/O, no clock.
Live rules: an offset is required on ``requestedTime``; ``requestedLocalTime`` is read
in an explicit ``timeZone`` with daylight-saving gaps and folds refused; the instant
must lie between now + ``MIN_LEAD_MINUTES`` and now + ``MAX_SCHEDULE_DAYS``.
"""

from __future__ import annotations

import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

_MINUTE: Final = timedelta(minutes=1)


@dataclass(frozen=True)
class TimeCheck:
    """The outcome of the time rules: an instant, or a reason with an optional suggestion."""

    instant: datetime | None
    reason: str = "OK"
    message: str = ""
    suggested: datetime | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether every time rule passed."""
        return self.reason == "OK"


def format_utc(instant: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ``, the one format callbacks are scheduled in."""
    utc = instant.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_local(instant: datetime, zone: str) -> str:
    """The instant as wall-clock time in ``zone``, with its offset."""
    return instant.astimezone(zoneinfo.ZoneInfo(zone)).isoformat(timespec="seconds")


def ceil_minute(instant: datetime) -> datetime:
    """The first whole minute at or after ``instant``."""
    floor = instant.replace(second=0, microsecond=0)
    return floor if floor == instant else floor + _MINUTE


def _parse(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def resolve(requested_time: str | None, local_time: str | None, zone: str | None,
            now: datetime, min_lead: timedelta, horizon: timedelta) -> TimeCheck:
    """Apply the time rules in the SPEC §3.8 order and return the instant or the first failure.

    With neither time given, the answer is the earliest allowed instant ("as soon as
    possible").
    """
    earliest = ceil_minute(now + min_lead)
    if requested_time and local_time:
        return TimeCheck(None, "INVALID_TIME",
                         "Send either requestedTime or requestedLocalTime, not both.")
    if requested_time:
        parsed = _parse(requested_time)
        if parsed is None:
            return TimeCheck(None, "INVALID_TIME",
                             "requestedTime is not an ISO-8601 date and time.")
        if parsed.tzinfo is None:
            return TimeCheck(None, "TIMEZONE_MISSING",
                             "requestedTime has no UTC offset; add one (e.g. Z or -05:00) or "
                             "send requestedLocalTime with timeZone.")
        instant = parsed.astimezone(UTC)
    elif local_time:
        local = resolve_local(local_time, zone)
        if not local.ok:
            return local
        assert local.instant is not None  # noqa: S101  (ok implies an instant)
        instant = local.instant
    else:
        return TimeCheck(earliest)
    return check_window(instant, now, min_lead, horizon)


def resolve_local(local_time: str, zone: str | None) -> TimeCheck:
    """Read a wall-clock time in an IANA zone, refusing times a DST change skips or repeats."""
    parsed = _parse(local_time)
    if parsed is None:
        return TimeCheck(None, "INVALID_TIME",
                         "requestedLocalTime is not an ISO-8601 date and time.")
    if parsed.tzinfo is not None:
        return TimeCheck(None, "INVALID_TIME",
                         "requestedLocalTime must not carry an offset; use requestedTime.")
    if not zone:
        return TimeCheck(None, "TIMEZONE_MISSING",
                         "requestedLocalTime needs timeZone (an IANA name such as "
                         "America/New_York).")
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return TimeCheck(None, "UNKNOWN_TIME_ZONE", f"timeZone {zone!r} is not an IANA time zone.")
    first = parsed.replace(tzinfo=tz, fold=0)
    second = parsed.replace(tzinfo=tz, fold=1)
    first_utc, second_utc = first.astimezone(UTC), second.astimezone(UTC)
    if first_utc == second_utc:
        return TimeCheck(first_utc)
    if first_utc.astimezone(tz).replace(tzinfo=None) != parsed:
        after_gap = _transition(second_utc, first_utc, tz)
        return TimeCheck(None, "NONEXISTENT_LOCAL_TIME",
                         f"{parsed.isoformat(timespec='minutes')} does not exist in {zone} "
                         "(clocks skip it); the first valid time after the gap is "
                         f"{format_local(after_gap, zone)}.", suggested=after_gap)
    return TimeCheck(None, "AMBIGUOUS_LOCAL_TIME",
                     f"{parsed.isoformat(timespec='minutes')} happens twice in {zone}: "
                     f"{format_local(first_utc, zone)} and {format_local(second_utc, zone)}; "
                     "send requestedTime with the offset you mean.", suggested=first_utc)


def _transition(low: datetime, high: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    """The instant in (low, high] where the zone's offset changes, to the second."""
    offset = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == offset:
            low = mid
        else:
            high = mid
    # Offsets change on whole seconds, and (low, high] is at most a second wide.
    return low.replace(microsecond=0) + timedelta(seconds=1)


def check_window(instant: datetime, now: datetime, min_lead: timedelta,
                 horizon: timedelta) -> TimeCheck:
    """Lead time and horizon: not sooner than now + lead, not later than now + horizon."""
    earliest = ceil_minute(now + min_lead)
    latest = now + horizon
    if instant < now + min_lead:
        minutes = math.ceil(min_lead.total_seconds() / 60)
        return TimeCheck(None, "TIME_IN_PAST",
                         f"{format_utc(instant)} is in the past or less than {minutes} minutes "
                         "ahead.", suggested=earliest)
    if instant > latest:
        return TimeCheck(None, "TIME_TOO_FAR",
                         f"{format_utc(instant)} is beyond the scheduling horizon "
                         f"({format_utc(latest)}).")
    return TimeCheck(instant)
