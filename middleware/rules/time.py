"""Time rules (SPEC §4 "Time"): one explicit UTC instant, validated and explained.

Pure functions of their arguments: no I/O and no clock (the caller passes ``now``), so
every rule can be tested on its own and by property. In the SPEC §3.8 order:

1. parse: ``requestedTime`` must carry an offset (``TIMEZONE_MISSING``); a
   ``requestedLocalTime`` is read in ``timeZone`` (default the agent's zone), refusing
   times a daylight-saving change skips (``NONEXISTENT_LOCAL_TIME``) or repeats
   (``AMBIGUOUS_LOCAL_TIME``), and unknown zone names (``UNKNOWN_TIME_ZONE``);
2. ``TIME_IN_PAST`` (also: sooner than the lead time), then ``TIME_TOO_FAR``;
3. an offset matching neither UTC, the agent's zone nor a customer zone: warning
   ``OFFSET_MISMATCH``, or ``TIMEZONE_MISMATCH`` under ``STRICT_OFFSETS``;
4. the customer's legal calling hours in every zone of the number
   (``OUTSIDE_CALLING_HOURS``, or only a warning under policy ``warn``);
5. the agent's hours: working that local date but not at that time is
   ``OUTSIDE_AGENT_HOURS``; not working that date at all is the owner rule's business
   (unless ``strict_day``, as ``validate-callback-time`` asks); unknown hours pass with
   warning ``AGENT_HOURS_UNKNOWN``.

A rejection carries ``suggested``: the earliest whole minute after the requested instant
that passes every rule at once: the agent working (when the hours are known), or on a
date the agent does not work at all, which the owner rule then hands to someone else.
"As soon as possible" is the same search from now plus the lead time. A shift that began
the local day before counts for the instants it covers.
"""

from __future__ import annotations

import math
import zoneinfo
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Final

_MINUTE: Final = timedelta(minutes=1)
_SKEW_SEARCH_DAYS: Final = 9  # a weekly calling window reopens within a week and a day
Interval = tuple[datetime, datetime]


@lru_cache(maxsize=512)
def zone_info(name: str) -> zoneinfo.ZoneInfo:
    """A cached ZoneInfo; raises ``ZoneInfoNotFoundError``/``ValueError`` for a bad name."""
    return zoneinfo.ZoneInfo(name)


# Zone files that are not IANA zone names: the leap-second and POSIX copies of the tree,
# and the machine's own zone (whatever it happens to be).
_NOT_ZONE_NAMES: Final = ("posix/", "right/")
_NOT_ZONE_FILES: Final = frozenset({"localtime", "posixrules", "Factory"})


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def iana_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone name (``America/New_York``, ``UTC``), not a
    file that merely loads as one (``right/...`` counts leap seconds, ``localtime`` is the
    machine's)."""
    if name.startswith(_NOT_ZONE_NAMES) or name in _NOT_ZONE_FILES:
        return False
    return name in _zone_names()


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
        """Whether every time rule passed (warnings allowed)."""
        return self.reason == "OK"


def format_utc(instant: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ``, the one format callbacks are scheduled in."""
    utc = instant.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_local(instant: datetime, zone: str) -> str:
    """The instant as wall-clock time in ``zone``, with its offset."""
    return instant.astimezone(zone_info(zone)).isoformat(timespec="seconds")


def ceil_minute(instant: datetime) -> datetime:
    """The first whole minute at or after ``instant``."""
    floor = instant.replace(second=0, microsecond=0)
    return floor if floor == instant else floor + _MINUTE


def _parse(text: str) -> datetime | None:
    """An ISO-8601 date-time, or ``None``; instants at the very ends of the calendar (which
    no conversion to UTC survives) count as unparseable."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if not 2 <= parsed.year <= 9998:
        return None
    return parsed


# -- 1. parsing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Requested:
    """What the caller asked for: an instant (with the offset written), ASAP, or a failure."""

    instant: datetime | None = None
    offset: timedelta | None = None
    failure: TimeCheck | None = None

    @property
    def asap(self) -> bool:
        """Neither time was given: as soon as possible."""
        return self.instant is None and self.failure is None


def parse_instant(text: str) -> datetime | None:
    """An ISO-8601 instant with offset, in UTC; ``None`` without offset or unparseable."""
    parsed = _parse(text)
    return parsed.astimezone(UTC) if parsed is not None and parsed.tzinfo else None


def parse_request(requested_time: str | None, local_time: str | None,
                  zone: str | None) -> Requested:
    """Turn ``requestedTime`` or ``requestedLocalTime`` + ``timeZone`` into one UTC instant."""
    if requested_time and local_time:
        return Requested(failure=TimeCheck(
            None, "INVALID_TIME", "Send either requestedTime or requestedLocalTime, not both."))
    if requested_time:
        parsed = _parse(requested_time)
        if parsed is None:
            return Requested(failure=TimeCheck(
                None, "INVALID_TIME", "requestedTime is not an ISO-8601 date and time."))
        if parsed.tzinfo is None:
            return Requested(failure=TimeCheck(
                None, "TIMEZONE_MISSING", "requestedTime has no UTC offset; add one (e.g. Z or "
                "-05:00) or send requestedLocalTime with timeZone."))
        return Requested(parsed.astimezone(UTC), parsed.utcoffset())
    if local_time:
        local = resolve_local(local_time, zone)
        if not local.ok:
            return Requested(failure=local)
        return Requested(local.instant)
    return Requested()


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
                         "America/New_York): the agent's own zone is not known.")
    try:
        if not iana_zone(zone):
            raise zoneinfo.ZoneInfoNotFoundError(zone)
        tz = zone_info(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return TimeCheck(None, "UNKNOWN_TIME_ZONE", f"timeZone {zone!r} is not an IANA time zone "
                         "name (such as America/New_York).")
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


# -- weekly hours, as the profile and calling-hours files write them --------------------

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekly = dict[int, tuple[int, int]]


def _hhmm(text: str, where: str) -> int:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"{where}: {text!r} is not HH:MM")
    hours, minutes = int(parts[0]), int(parts[1])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{where}: {text!r} is not HH:MM")
    return hours * 60 + minutes


def _day_range(spec: str, where: str) -> list[int]:
    first, _, last = spec.partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        raise ValueError(f"{where}: {spec!r} is not a weekday or range like mon-fri")
    start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
    return list(range(start, end + 1)) if start <= end else \
        list(range(start, 7)) + list(range(end + 1))


def parse_weekly(hours: dict[str, object], where: str) -> Weekly:
    """``{"mon-fri": ["09:00", "17:00"], "sat": [...]}`` → minutes per weekday (0 = Monday).

    Raises ``ValueError`` naming ``where`` and the bad entry.
    """
    weekly: Weekly = {}
    for spec, pair in hours.items():
        at = f"{where} {spec}"
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f'{at}: expected ["HH:MM", "HH:MM"]')
        start, end = _hhmm(str(pair[0]), at), _hhmm(str(pair[1]), at)
        if start >= end:
            raise ValueError(f"{at}: the window must end after it starts")
        for day in _day_range(spec.lower(), at):
            weekly[day] = (start, end)
    return weekly


def weekly_shifts(weekly: Weekly, zone: str, first_day: date, days: int) -> tuple[Interval, ...]:
    """The weekly hours as UTC intervals over ``days`` local dates from ``first_day``."""
    tz = zone_info(zone)
    shifts = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        window = weekly.get(day.weekday())
        if window:
            shifts.append((_local_instant(day, window[0], tz), _local_instant(day, window[1], tz)))
    return tuple(shifts)


# -- the inputs of the rules -----------------------------------------------------------


@dataclass(frozen=True)
class AgentHours:
    """The agent's zone and published working intervals (UTC, ``[start, end)``, sorted)."""

    zone: str
    shifts: tuple[Interval, ...]

    @cached_property
    def _start_days(self) -> frozenset[date]:
        tz = zone_info(self.zone)
        return frozenset(start.astimezone(tz).date() for start, _ in self.shifts)

    def works_on(self, day: date) -> bool:
        """Whether a shift starts on this local date."""
        return day in self._start_days

    def bound_at(self, instant: datetime) -> bool:
        """Whether the agent's hours rule the instant: a shift covers it (one that began the
        day before included) or the agent works that local date at all."""
        local_day = instant.astimezone(zone_info(self.zone)).date()
        return self.working_at(instant) or self.works_on(local_day)

    def next_open(self, instant: datetime) -> datetime | None:
        """The first instant at or after ``instant`` the agent's hours do not forbid: inside a
        shift, or on a local date the agent does not work (the owner rule's business)."""
        tz = zone_info(self.zone)
        local_day = instant.astimezone(tz).date()
        if not self.works_on(local_day) and not self.working_at(instant):
            return instant
        working = self.next_working(instant)
        free = self._next_free_day(local_day)
        candidates = [c for c in (working, free) if c is not None]
        return min(candidates) if candidates else None

    @cached_property
    def _free_after(self) -> dict[date, datetime | None]:
        # The same profile serves many requests (``TimeService`` reuses it), and they ask
        # about the same few days: each day's answer is worked out once.
        return {}

    def _next_free_day(self, local_day: date) -> datetime | None:
        """The first local midnight after ``local_day`` of a date the agent does not work."""
        known = self._free_after
        if local_day in known:
            return known[local_day]
        tz = zone_info(self.zone)
        free = None
        for offset in range(1, 400):
            day = local_day + timedelta(days=offset)
            if not self.works_on(day):
                free = _local_instant(day, 0, tz)
                break
        if len(known) < 400:
            known[local_day] = free
        return free

    def working_at(self, instant: datetime) -> bool:
        """Whether a shift covers the instant."""
        i = bisect_right(self.shifts, (instant, datetime.max.replace(tzinfo=UTC)))
        return any(start <= instant < end for start, end in self.shifts[max(i - 2, 0):i])

    def next_working(self, instant: datetime) -> datetime | None:
        """The first instant at or after ``instant`` inside a shift."""
        for start, end in self.shifts:
            if end > instant:
                return max(start, instant)
        return None


@dataclass(frozen=True)
class CallingHours:
    """Legal calling windows of a number: per weekday (0 = Monday) local minutes
    ``[start, end]``, the same in each of the number's zones."""

    zones: tuple[str, ...]
    windows: dict[int, tuple[int, int]]
    rule: str

    def allows(self, instant: datetime) -> bool:
        """Whether the instant is inside the window in every zone."""
        return all(self._allows_in(instant, zone) for zone in self.zones)

    def _allows_in(self, instant: datetime, zone: str) -> bool:
        local = instant.astimezone(zone_info(zone))
        window = self.windows.get(local.weekday())
        if window is None:
            return False
        minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        return window[0] <= minute <= window[1]

    def next_allowed(self, instant: datetime) -> datetime | None:
        """The first instant at or after ``instant`` allowed in the first failing zone."""
        for zone in self.zones:
            if not self._allows_in(instant, zone):
                return self._next_in(instant, zone)
        return instant

    def _next_in(self, instant: datetime, zone: str) -> datetime | None:
        tz = zone_info(zone)
        day = instant.astimezone(tz).date()
        for offset in range(_SKEW_SEARCH_DAYS):
            current = day + timedelta(days=offset)
            window = self.windows.get(current.weekday())
            if window is None:
                continue
            opens = _local_instant(current, window[0], tz)
            closes = _local_instant(current, window[1], tz)
            if instant <= closes:
                return max(opens, instant)
        return None


def _local_instant(day: date, minute: int, tz: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock minute of ``day`` (1440 = next midnight).

    ``fold=0`` reads a repeated minute as its first occurrence and a skipped one as just
    after the gap, the conservative choice for both ends of a calling window.
    """
    wall = datetime.combine(day, time(0)) + timedelta(minutes=minute)
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class TimePolicy:
    """The settings of the time rules."""

    min_lead: timedelta
    horizon: timedelta
    calling_policy: str = "enforce"
    strict_offsets: bool = False


@dataclass(frozen=True)
class TimeContext:
    """Everything the rules look at besides the instant itself."""

    now: datetime
    policy: TimePolicy
    agent: AgentHours | None = None
    customer: CallingHours | None = None
    agent_zone: str = ""
    strict_day: bool = False

    @property
    def earliest(self) -> datetime:
        """Now plus the lead time."""
        return self.now + self.policy.min_lead

    @property
    def latest(self) -> datetime:
        """Now plus the horizon."""
        return self.now + self.policy.horizon


# -- 2-5. the rules --------------------------------------------------------------------


def evaluate(instant: datetime, ctx: TimeContext, offset: timedelta | None = None) -> TimeCheck:
    """Apply rules 2-5 to one instant; a rejection carries the earliest later valid minute."""
    warnings: list[str] = []
    if instant < ctx.earliest:
        minutes = math.ceil(ctx.policy.min_lead.total_seconds() / 60)
        return TimeCheck(None, "TIME_IN_PAST", f"{format_utc(instant)} is in the past or less "
                         f"than {minutes} minutes ahead.", earliest_valid(instant, ctx))
    if instant > ctx.latest:
        return TimeCheck(None, "TIME_TOO_FAR", f"{format_utc(instant)} is beyond the "
                         f"scheduling horizon ({format_utc(ctx.latest)}).")
    if offset is not None and not _offset_explained(instant, offset, ctx):
        if ctx.policy.strict_offsets:
            return TimeCheck(None, "TIMEZONE_MISMATCH", "The time's UTC offset matches neither "
                             "UTC, the agent's zone nor the customer's; check the zone it was "
                             "entered in.", earliest_valid(instant, ctx))
        warnings.append("OFFSET_MISMATCH")
    customer = ctx.customer
    if customer is not None and ctx.policy.calling_policy != "off" \
            and not customer.allows(instant):
        if ctx.policy.calling_policy == "enforce":
            return TimeCheck(None, "OUTSIDE_CALLING_HOURS", f"{format_utc(instant)} is outside "
                             f"the legal calling hours in {', '.join(customer.zones)} "
                             f"({customer.rule}).", earliest_valid(instant, ctx))
        warnings.append("OUTSIDE_CALLING_HOURS")
    agent = ctx.agent
    if agent is None:
        warnings.append("AGENT_HOURS_UNKNOWN")
    elif not agent.working_at(instant):
        local_day = instant.astimezone(zone_info(agent.zone)).date()
        if ctx.strict_day or agent.works_on(local_day):
            return TimeCheck(None, "OUTSIDE_AGENT_HOURS", f"The agent does not work at "
                             f"{format_local(instant, agent.zone)} ({agent.zone}).",
                             earliest_valid(instant, ctx))
    return TimeCheck(instant, warnings=tuple(warnings))


def _offset_explained(instant: datetime, offset: timedelta, ctx: TimeContext) -> bool:
    zones = ([ctx.agent_zone] if ctx.agent_zone else []) + \
        (list(ctx.customer.zones) if ctx.customer else [])
    return offset == timedelta(0) or any(
        instant.astimezone(zone_info(z)).utcoffset() == offset for z in zones)


def passes(instant: datetime, ctx: TimeContext) -> bool:
    """Whether ``instant`` passes every rule at once: the agent working when hours are known,
    or (unless ``strict_day``) not working that date at all."""
    if not ctx.earliest <= instant <= ctx.latest:
        return False
    if ctx.customer is not None and ctx.policy.calling_policy == "enforce" \
            and not ctx.customer.allows(instant):
        return False
    if ctx.agent is None or ctx.agent.working_at(instant):
        return True
    return not ctx.strict_day and not ctx.agent.bound_at(instant)


def earliest_valid(after: datetime, ctx: TimeContext) -> datetime | None:
    """The earliest whole minute at or after ``after`` (and the lead time) passing every rule,
    or ``None`` when there is none within the horizon."""
    rules: list[Callable[[datetime], datetime | None]] = []
    if ctx.customer is not None and ctx.policy.calling_policy == "enforce":
        rules.append(ctx.customer.next_allowed)
    if ctx.agent is not None:
        # A date the agent does not work is the owner rule's business, unless the caller
        # asks about this agent alone (validate-callback-time).
        rules.append(ctx.agent.next_working if ctx.strict_day else ctx.agent.next_open)
    candidate = ceil_minute(max(after, ctx.earliest))
    # Each rule jumps the candidate to its own next opening; the loop ends when none has to
    # jump, or the candidate leaves the horizon. Every jump moves forward by at least a minute.
    for _ in range(10_000):
        if candidate > ctx.latest:
            return None
        moved = False
        for next_ok in rules:
            opening = next_ok(candidate)
            if opening is None:
                return None
            if opening > candidate:
                candidate = ceil_minute(opening)
                moved = True
        if not moved and passes(candidate, ctx):
            return candidate
        if not moved:
            candidate += _MINUTE
    return None


def as_soon_as_possible(ctx: TimeContext) -> TimeCheck:
    """The first instant from now + lead passing every rule (``ASAP_DEFERRED`` when later)."""
    first = earliest_valid(ctx.earliest, ctx)
    if first is None and ctx.agent is not None and not ctx.strict_day:
        # The agent never works in the horizon: schedule by the customer's hours alone and
        # let the owner rule find someone who does.
        first = earliest_valid(ctx.earliest, TimeContext(ctx.now, ctx.policy, None,
                                                         ctx.customer, ctx.agent_zone))
    if first is None:
        return TimeCheck(None, "OUTSIDE_CALLING_HOURS", "No time within the horizon is inside "
                         "the customer's calling hours.")
    check = evaluate(first, ctx)
    warnings = check.warnings + (("ASAP_DEFERRED",) if first > ceil_minute(ctx.earliest)
                                 else ())
    return TimeCheck(first, warnings=warnings)


def check_requested(requested: Requested, ctx: TimeContext) -> TimeCheck:
    """Run the rules on a request (``as soon as possible`` when no time was given)."""
    if requested.failure is not None:
        return requested.failure
    if requested.instant is None:
        return as_soon_as_possible(ctx)
    return evaluate(requested.instant, ctx, requested.offset)
