"""Agent profiles (SPEC §4 "Time"): an agent's zone and working hours, and what the time
rules make of them; pure code, the reads are ``actions/checks.py``'s.

* The profile: time zone and published shifts from Genesys WFM; for agents without WFM,
  ``AGENT_PROFILES_FILE`` (per agent or per team: IANA zone and weekly hours).
* The horizon: ``MAX_SCHEDULE_DAYS``, or the queue's ``maxOwnedCallbackDelayHours`` when
  that is shorter.

Profile file format (JSON)::

    {"agents": {"<agentId>": {"timeZone": "America/Chicago",
                              "weeklyHours": {"mon-fri": ["09:00", "17:00"]}},
                "<agentId>": {"team": "<teamId>"}},
     "teams":  {"<teamId>":  {"timeZone": "Europe/Berlin",
                              "weeklyHours": {"mon-thu": ["08:00", "16:00"]}}}}
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from middleware.rules.calling_hours import Rule, calling_hours
from middleware.rules.number import CustomerNumber
from middleware.rules.time import (
    AgentHours,
    Interval,
    Requested,
    TimeContext,
    TimePolicy,
    Weekly,
    parse_request,
    parse_weekly,
    weekly_shifts,
    zone_info,
)

_DAY: Final = timedelta(days=1)


class ProfileFileError(ValueError):
    """``AGENT_PROFILES_FILE`` is malformed; the message names the entry."""


@dataclass(frozen=True)
class FileProfile:
    """An agent's zone and weekly hours from the profile file."""

    zone: str
    weekly: Weekly


def load_profiles(path: str) -> dict[str, FileProfile]:
    """Read the profile file into one profile per agent (team entries resolved)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ProfileFileError(f"AGENT_PROFILES_FILE {path}: {exc}") from exc

    def profile(raw: dict[str, Any], where: str) -> FileProfile:
        zone = str(raw.get("timeZone", ""))
        try:
            zone_info(zone)
            weekly = parse_weekly(dict(raw.get("weeklyHours", {})), where)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ProfileFileError(f"AGENT_PROFILES_FILE {where}: {exc}") from exc
        return FileProfile(zone, weekly)

    teams = {tid: profile(raw, f"teams.{tid}") for tid, raw in data.get("teams", {}).items()}
    agents = {}
    for aid, raw in data.get("agents", {}).items():
        if "team" in raw:
            if raw["team"] not in teams:
                raise ProfileFileError(f"AGENT_PROFILES_FILE agents.{aid}: unknown team "
                                       f"{raw['team']!r}")
            agents[aid] = teams[raw["team"]]
        else:
            agents[aid] = profile(raw, f"agents.{aid}")
    return agents


@dataclass(frozen=True)
class AgentProfile:
    """The agent's zone (empty when unknown) and hours (``None`` when unknown); the WFM
    management unit when the agent has one."""

    zone: str
    hours: AgentHours | None
    source: str
    management_unit: str = ""


UNKNOWN_PROFILE: Final = AgentProfile("", None, "none")


def shift_dates(now: datetime, zone: str, horizon: timedelta) -> tuple[date, date]:
    """The local dates whose WFM shifts cover the scheduling horizon (a day either side)."""
    first = (now.astimezone(zone_info(zone)) - _DAY).date()
    return first, first + horizon + 3 * _DAY


def wfm_profile(zone: str, management_unit: str,
                shifts: tuple[Interval, ...] | None) -> AgentProfile:
    """The profile of a WFM agent: hours from published shifts (``None``: none published)."""
    hours = None if shifts is None else AgentHours(zone, shifts)
    return AgentProfile(zone, hours, "wfm", management_unit)


def file_profile(profile: FileProfile, now: datetime, horizon: timedelta) -> AgentProfile:
    """The profile of a file agent: weekly hours laid out over the scheduling horizon."""
    first = (now.astimezone(zone_info(profile.zone)) - _DAY).date()
    days = horizon.days + 4
    return AgentProfile(profile.zone, AgentHours(profile.zone, weekly_shifts(
        profile.weekly, profile.zone, first, days)), "file")


def time_context(now: datetime, policy: TimePolicy, profile: AgentProfile,
                 rules: list[Rule], number: CustomerNumber | None,
                 queue: Mapping[str, Any] | None, *, strict_day: bool = False) -> TimeContext:
    """Everything the time rules look at, for one agent, number and queue."""
    horizon = policy.horizon
    owned = ((queue or {}).get("agentOwnedRouting") or {})
    delay_hours = owned.get("maxOwnedCallbackDelayHours")
    if isinstance(delay_hours, int) and delay_hours > 0:
        horizon = min(horizon, timedelta(hours=delay_hours))
    policy = TimePolicy(policy.min_lead, horizon, policy.calling_policy, policy.strict_offsets)
    customer = calling_hours(rules, number) if number is not None else None
    return TimeContext(now, policy, profile.hours, customer, profile.zone, strict_day)


def requested_of(fields: Mapping[str, Any], profile: AgentProfile) -> Requested:
    """The requested instant; a local time is read in ``timeZone`` or the agent's zone."""
    return parse_request(fields.get("requestedTime"), fields.get("requestedLocalTime"),
                         fields.get("timeZone") or profile.zone or None)
