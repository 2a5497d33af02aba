"""The check actions, ``validate-callback-time`` and ``resolve-callback-owner``, and what
gathers the facts their rules need from Genesys, the profile file and the store (the rules
themselves are ``rules/time.py``, ``rules/profiles.py`` and ``rules/owner.py``).

Genesys reads are cached by the Genesys client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, Final

from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import UpstreamError, UpstreamUnavailable
from middleware.genesys.client import GenesysClient
from middleware.rules.calling_hours import Rule
from middleware.rules.number import CustomerNumber, invalid_number_message, number_of
from middleware.rules.owner import Availability, OwnerDecision, availability, new_owner
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
    parse_request,
    zone_info,
)
from middleware.store import Store

_PAST_TOLERANCE: Final = timedelta(minutes=1)
_MAX_AHEAD: Final = timedelta(days=366)
# Agents whose built profiles are kept (one per agent and day); past it, all are dropped.
_PROFILES_KEPT: Final = 4096


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
        # Profiles built from the same inputs, reused: laying hours out over the horizon
        # (and the rules' per-profile caches) would otherwise be redone twice a request.
        self._built: dict[tuple[str, ...], tuple[object, AgentProfile]] = {}

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
            return self._reused(("wfm", agent_id, mu_id, zone), shifts, lambda: wfm_profile(
                zone, mu_id, None if shifts is None else tuple((s.start, s.end)
                                                               for s in shifts)))
        found = self._profiles.get(agent_id)
        if found is not None:
            day = now.astimezone(zone_info(found.zone)).date().isoformat()
            return self._reused(("file", agent_id, day), found,
                                lambda: file_profile(found, now, self._policy.horizon))
        return UNKNOWN_PROFILE

    def _reused(self, key: tuple[str, ...], source: object,
                build: Callable[[], AgentProfile]) -> AgentProfile:
        """The profile built from ``source`` (the very object: a shift list stays the same
        object while the read cache holds it) under ``key``, or a new one."""
        seen = self._built.get(key)
        if seen is not None and seen[0] is source and source is not None:
            return seen[1]
        profile = build()
        if len(self._built) >= _PROFILES_KEPT:
            self._built.clear()
        self._built[key] = (source, profile)
        return profile

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


class _Agent:
    """The availability rule's view of one agent, read from Genesys when asked."""

    def __init__(self, genesys: GenesysClient, times: TimeService, agent_id: str,
                 queue_id: str, now: datetime, deadline: Deadline) -> None:
        self._genesys = genesys
        self._times = times
        self._agent = agent_id
        self._queue = queue_id
        self._now = now
        self._deadline = deadline

    def in_queue(self) -> bool:
        """Whether the agent is a member of the queue."""
        return self._queue in self._genesys.user_queue_ids(self._agent, self._deadline)

    def profile(self) -> AgentProfile:
        """The agent's zone, hours and management unit."""
        return self._times.profile(self._agent, self._now, self._deadline)

    def on_time_off(self, profile: AgentProfile, local_day: date) -> bool:
        """Whether approved WFM time off covers the local date."""
        return local_day in self._genesys.approved_time_off_days(
            profile.management_unit, self._agent, local_day, local_day, profile.zone,
            self._deadline)


class _StandIns:
    """The reassignment rule's candidates for one agent, read when asked."""

    def __init__(self, owners: OwnerRule, genesys: GenesysClient, agent_id: str,
                 queue_id: str, instant: datetime, deadline: Deadline) -> None:
        self._owners = owners
        self._genesys = genesys
        self._agent = agent_id
        self._queue = queue_id
        self._instant = instant
        self._deadline = deadline

    def _user(self) -> dict[str, Any]:
        return self._genesys.user(self._agent, self._deadline) or {}

    def teammates(self) -> list[tuple[str, Availability]]:
        """Available teammates who work at the instant."""
        team_id = str((self._user().get("team") or {}).get("id") or "")
        mates = [m for m in self._genesys.team_member_ids(team_id, self._deadline)
                 if m != self._agent] if team_id else []
        found = []
        for mate in mates:
            seen = self._owners.availability(mate, self._queue, self._instant, self._deadline,
                                             must_work_at=True)
            if seen is not None and seen.available:
                found.append((mate, seen))
        return found

    def pending_owned(self, agent_ids: list[str]) -> Mapping[str, int]:
        """Pending owned callbacks per agent, in this service's ledger."""
        return self._owners.pending_owned(agent_ids)

    def manager(self) -> tuple[str, Availability] | None:
        """The manager and their availability at the instant."""
        manager_id = str((self._user().get("manager") or {}).get("id") or "")
        if not manager_id or manager_id == self._agent:
            return None
        seen = self._owners.availability(manager_id, self._queue, self._instant,
                                         self._deadline, must_work_at=True)
        return None if seen is None else (manager_id, seen)


class OwnerRule:
    """The owner rule (``rules/owner.py``) over Genesys reads and the store's counts."""

    def __init__(self, genesys: GenesysClient, times: TimeService, store: Store,
                 immediate_window: timedelta, fallback: str, clock: Clock) -> None:
        self._genesys = genesys
        self._times = times
        self._store = store
        self._immediate = immediate_window
        self._fallback = fallback
        self._clock = clock

    def availability(self, agent_id: str, queue_id: str, instant: datetime,
                     deadline: Deadline, *, must_work_at: bool = False) -> Availability | None:
        """Why the agent cannot own a callback at ``instant`` (``None``: no such user)."""
        user = self._genesys.user(agent_id, deadline)
        if user is None:
            return None
        now = self._clock.now()
        facts = _Agent(self._genesys, self._times, agent_id, queue_id, now, deadline)
        return availability(user, facts, instant, now, self._immediate,
                            must_work_at=must_work_at)

    def pending_owned(self, agent_ids: list[str]) -> Mapping[str, int]:
        """Pending owned callbacks per agent, in this service's ledger."""
        return self._store.pending_owned_counts(agent_ids,
                                                int(self._clock.now().timestamp() * 1000))

    def resolve(self, agent_id: str, queue_id: str, instant: datetime, deadline: Deadline,
                *, allow_reassignment: bool = True) -> OwnerDecision:
        """Keep the owner if available, else apply the reassignment rule."""
        own = self.availability(agent_id, queue_id, instant, deadline)
        return new_owner(agent_id, own, _StandIns(self, self._genesys, agent_id, queue_id,
                                                   instant, deadline),
                         self._fallback, allow_reassignment=allow_reassignment)


class OwnerService:
    """The ``resolve-callback-owner`` action: the owner rule alone; writes nothing."""

    def __init__(self, rule: OwnerRule, contract: Contract, clock: Clock) -> None:
        self._rule = rule
        self._contract = contract
        self._clock = clock

    def resolve_owner(self, fields: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """Who would own a callback for this agent and queue at the requested time."""
        answer = self._contract.answer
        common = {"requestId": ctx.request_id}
        now = self._clock.now()
        text = str(fields.get("requestedTime") or "")
        instant = now
        if text:
            requested = parse_request(text, None, None)
            if requested.failure is not None or requested.instant is None:
                failure = requested.failure
                return answer(outcome="REJECTED", **common,
                              reason=failure.reason if failure else "INVALID_TIME",
                              message=failure.message if failure else
                              "requestedTime must be an ISO-8601 instant with offset.")
            instant = requested.instant
        if instant < now - _PAST_TOLERANCE or instant > now + _MAX_AHEAD:
            reason = "TIME_IN_PAST" if instant < now else "TIME_TOO_FAR"
            return answer(outcome="REJECTED", reason=reason, **common,
                          message="requestedTime must lie between now and a year ahead.")
        try:
            decision = self._rule.resolve(str(fields["agentId"]), str(fields["queueId"]),
                                          instant, ctx.deadline,
                                          allow_reassignment=fields.get("allowReassignment",
                                                                        True) is not False)
        except UpstreamError as exc:
            reason = "UPSTREAM_UNAVAILABLE" if isinstance(exc, UpstreamUnavailable) \
                else "UPSTREAM_REJECTED"
            return answer(outcome="REJECTED", reason=reason, **common,
                          message="Genesys Cloud could not answer who is available; retry.")
        when = format_utc(instant)
        if decision.outcome == "UNKNOWN_AGENT":
            return answer(outcome="REJECTED", reason="UNKNOWN_AGENT", **common,
                          message=f"The agent id {fields['agentId']} is not a Genesys user.")
        fields_out = {"assignedAgentId": decision.assigned, "reassigned": decision.reassigned,
                      "reassignReason": decision.reassign_reason, **common}
        if decision.outcome == "AVAILABLE":
            return answer(outcome="AVAILABLE", reason="OK", available=True, **fields_out,
                          message=f"The agent can own a callback at {when}.")
        if decision.outcome == "REASSIGNED":
            return answer(outcome="REASSIGNED", reason="OK", **fields_out,
                          message=f"The agent is unavailable ({decision.reassign_reason}); "
                          "another agent would own it.")
        if decision.outcome == "QUEUE":
            return answer(outcome="NO_OWNER", reason="OK", **fields_out,
                          message=f"No agent can own it ({decision.reassign_reason}); it would "
                          "go to the queue without an owner.")
        return answer(outcome="NO_OWNER", reason="NO_AVAILABLE_OWNER", **fields_out,
                      message=f"No agent can own it ({decision.reassign_reason}).")
