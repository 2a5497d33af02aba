"""The check actions, ``validate-callback-time`` and ``resolve-callback-owner``, and what
gathers the facts their rules need from Genesys, the profile file and the store (the rules
themselves are ``rules/time.py``, ``rules/profiles.py`` and ``rules/owner.py``).

Genesys reads are cached by the Genesys client.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import UpstreamError, UpstreamUnavailable
from middleware.genesys.client import GenesysClient
from middleware.rules.calling_hours import Rule
from middleware.rules.number import CustomerNumber, invalid_number_message, number_of
from middleware.rules.profiles import (
    UNKNOWN_PROFILE,
    AgentProfile,
    FileProfile,
    file_profile,
    requested_of,
    shift_dates,
    time_context,
    wfm_profile,
)
from middleware.rules.time import (
    Requested,
    TimeCheck,
    TimeContext,
    TimePolicy,
    check_requested,
    format_local,
    format_utc,
)


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
            first, last = shift_dates(now, zone, self._policy.horizon)
            shifts = self._genesys.published_shifts(mu_id, agent_id, first, last, deadline)
            return wfm_profile(zone, mu_id, None if shifts is None
                               else tuple((s.start, s.end) for s in shifts))
        found = self._profiles.get(agent_id)
        if found is not None:
            return file_profile(found, now, self._policy.horizon)
        return UNKNOWN_PROFILE

    def context(self, now: datetime, profile: AgentProfile, number: CustomerNumber | None,
                queue: dict[str, Any] | None, *, strict_day: bool = False) -> TimeContext:
        """Everything the rules look at, for one agent, number and queue."""
        return time_context(now, self._policy, profile, self._rules, number, queue,
                            strict_day=strict_day)

    @staticmethod
    def parse(fields: dict[str, Any], profile: AgentProfile) -> Requested:
        """The requested instant; a local time is read in ``timeZone`` or the agent's zone."""
        return requested_of(fields, profile)

    @staticmethod
    def check(requested: Requested, ctx: TimeContext) -> TimeCheck:
        """Run the rules on the request (``as soon as possible`` when no time was given)."""
        return check_requested(requested, ctx)
