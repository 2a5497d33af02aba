"""Gathering what the time rules need, then applying them (``timing.py`` holds the rules).

* The agent's profile: time zone from Genesys WFM (agent → management unit → business
  unit ``settings.timeZone``) and working time from published WFM shifts (time off removes
  a day's shift); for agents without WFM, ``AGENT_PROFILES_FILE`` (per agent or per team:
  IANA zone and weekly hours). Reads are cached by the Genesys client.
* The customer's calling hours from the number (``calling_hours.py``).
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
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import UpstreamError, UpstreamUnavailable
from middleware.genesys.client import GenesysClient
from middleware.rules.calling_hours import Rule, calling_hours
from middleware.rules.number import CustomerNumber, invalid_number_message, number_of
from middleware.rules.time import (
    AgentHours,
    Requested,
    TimeCheck,
    TimeContext,
    TimePolicy,
    Weekly,
    as_soon_as_possible,
    evaluate,
    format_local,
    format_utc,
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


class TimeService:
    """Builds each request's time context from Genesys and the files, and runs the rules;
    serves ``validate-callback-time``."""

    def __init__(self, genesys: GenesysClient, profiles: dict[str, FileProfile],
                 rules: list[Rule], policy: TimePolicy, *, contract: Contract,
                 default_country: str, clock: Clock) -> None:
        self._genesys = genesys
        self._profiles = profiles
        self._rules = rules
        self._policy = policy
        self._contract = contract
        self._country = default_country
        self._clock = clock

    @property
    def min_lead(self) -> timedelta:
        """The configured lead time."""
        return self._policy.min_lead

    def validate(self, fields: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """The time rules for one agent and number, a day off included; writes nothing."""
        answer = self._contract.answer
        common: dict[str, Any] = {"requestId": ctx.request_id}
        number = number_of(fields, self._country)
        if number is None:
            return answer(outcome="INVALID", reason="INVALID_NUMBER", **common,
                          message=invalid_number_message(fields, self._country))
        now = self._clock.now()
        agent_id = str(fields["agentId"])
        try:
            known = self._genesys.user(agent_id, ctx.deadline) is not None
            profile = self.profile(agent_id, now, ctx.deadline) if known else None
        except UpstreamError as exc:
            reason = "UPSTREAM_UNAVAILABLE" if isinstance(exc, UpstreamUnavailable) \
                else "UPSTREAM_REJECTED"
            return answer(outcome="INVALID", reason=reason, **common,
                          message="Genesys Cloud could not give the agent's schedule; retry.")
        if profile is None:
            # What create-callback would answer for this agent (SPEC §3.3).
            return answer(outcome="INVALID", reason="UNKNOWN_AGENT", **common,
                          message=f"The agent id {agent_id} is not a Genesys user.")
        time_ctx = self.context(now, profile, number, None, strict_day=True)
        check = self.check(self.parse(fields, profile), time_ctx)
        common.update(agentTimeZone=profile.zone, customerTimeZone=",".join(number.zones))
        if not check.ok or check.instant is None:
            return answer(outcome="INVALID", reason=check.reason, message=check.message,
                          suggestedTimeUtc=format_utc(check.suggested) if check.suggested
                          else "", **common)
        instant = check.instant
        first_zone = number.zones[0] if number.zones else ""
        return answer(outcome="VALID", reason="OK", valid=True, **common,
                      scheduledTimeUtc=format_utc(instant), warnings=",".join(check.warnings),
                      agentLocalTime=format_local(instant, profile.zone) if profile.zone else "",
                      customerLocalTime=format_local(instant, first_zone) if first_zone else "",
                      message=f"{format_utc(instant)} passes every time rule.")

    def profile(self, agent_id: str, now: datetime, deadline: Deadline) -> AgentProfile:
        """The agent's zone and working hours over the scheduling horizon."""
        wfm = self._genesys.agent_time_zone(agent_id, deadline)
        if wfm is not None:
            mu_id, zone = wfm
            first = (now.astimezone(zone_info(zone)) - _DAY).date()
            last = first + self._policy.horizon + 3 * _DAY
            shifts = self._genesys.published_shifts(mu_id, agent_id, first, last, deadline)
            hours = None if shifts is None else AgentHours(
                zone, tuple((s.start, s.end) for s in shifts))
            return AgentProfile(zone, hours, "wfm", mu_id)
        file_profile = self._profiles.get(agent_id)
        if file_profile is not None:
            zone = file_profile.zone
            first = (now.astimezone(zone_info(zone)) - _DAY).date()
            days = self._policy.horizon.days + 4
            return AgentProfile(zone, AgentHours(zone, weekly_shifts(
                file_profile.weekly, zone, first, days)), "file")
        return AgentProfile("", None, "none")

    def context(self, now: datetime, profile: AgentProfile, number: CustomerNumber | None,
                queue: dict[str, Any] | None, *, strict_day: bool = False) -> TimeContext:
        """Everything the rules look at, for one agent, number and queue."""
        horizon = self._policy.horizon
        owned = ((queue or {}).get("agentOwnedRouting") or {})
        delay_hours = owned.get("maxOwnedCallbackDelayHours")
        if isinstance(delay_hours, int) and delay_hours > 0:
            horizon = min(horizon, timedelta(hours=delay_hours))
        policy = TimePolicy(self._policy.min_lead, horizon, self._policy.calling_policy,
                            self._policy.strict_offsets)
        customer = calling_hours(self._rules, number) if number is not None else None
        return TimeContext(now, policy, profile.hours, customer, profile.zone, strict_day)

    @staticmethod
    def parse(fields: dict[str, Any], profile: AgentProfile) -> Requested:
        """The requested instant; a local time is read in ``timeZone`` or the agent's zone."""
        return parse_request(fields.get("requestedTime"), fields.get("requestedLocalTime"),
                             fields.get("timeZone") or profile.zone or None)

    @staticmethod
    def check(requested: Requested, ctx: TimeContext) -> TimeCheck:
        """Run the rules on the request (``as soon as possible`` when no time was given)."""
        if requested.failure is not None:
            return requested.failure
        if requested.instant is None:
            return as_soon_as_possible(ctx)
        return evaluate(requested.instant, ctx, requested.offset)
