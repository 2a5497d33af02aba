"""The right owner (SPEC §4 "Owner"): is the agent there at that time, and if not, who is.

An agent is unavailable at an instant for the first of these reasons, checked in order:

1. ``AGENT_INACTIVE``: the user is not active (users are read with ``state=any``, since
   the API hides inactive ones by default);
2. ``AGENT_NOT_IN_QUEUE``: not a member of the callback's queue;
3. ``AGENT_ON_TIME_OFF``: approved WFM time off on that local date;
4. ``AGENT_OUT_OF_OFFICE``: an out-of-office period covering the instant;
5. ``AGENT_OFF_SHIFT``: no published shift (or profile hours) that local date;
6. ``AGENT_OFFLINE``: for callbacks due within ``IMMEDIATE_WINDOW_MINUTES`` only, routing
   status ``OFF_QUEUE`` or presence Offline.

The reassignment rule, when the owner is unavailable and reassignment is allowed:
an available teammate (same Genesys team) who is a queue member and works at that
instant, fewest pending owned callbacks in this service's ledger first, ties by id; else
the agent's manager if available and working; else the queue without an owner
(``REASSIGN_FALLBACK=queue``) or ``NO_AVAILABLE_OWNER`` (``REASSIGN_FALLBACK=reject``).
A stand-in must be working at the instant by their own zone and hours (unknown hours
cannot prove that, so such agents are passed over).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from middleware.actions.checks import TimeService
from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import UpstreamError, UpstreamUnavailable
from middleware.genesys.client import GenesysClient
from middleware.rules.profiles import AgentProfile
from middleware.rules.time import format_utc, parse_request, zone_info
from middleware.store import Store

log = logging.getLogger(__name__)

OFFLINE_PRESENCES: Final = frozenset({"offline"})
_PAST_TOLERANCE: Final = timedelta(minutes=1)
_MAX_AHEAD: Final = timedelta(days=366)


@dataclass(frozen=True)
class Availability:
    """``reason`` is empty when the agent is available; ``profile`` is the agent's."""

    reason: str
    profile: AgentProfile | None = None

    @property
    def available(self) -> bool:
        """Whether the agent can own the callback."""
        return not self.reason


@dataclass(frozen=True)
class OwnerDecision:
    """Who owns the callback: ``assigned`` is empty when it goes to the queue.

    ``outcome`` is ``AVAILABLE``, ``REASSIGNED``, ``QUEUE`` (no agent; the queue takes it),
    ``NONE`` (refused: ``NO_AVAILABLE_OWNER``) or ``UNKNOWN_AGENT``.
    """

    outcome: str
    assigned: str
    reassign_reason: str = ""
    profile: AgentProfile | None = None

    @property
    def reassigned(self) -> bool:
        """Whether ownership moved away from the agent asked for."""
        return self.outcome in ("REASSIGNED", "QUEUE")


def _normalised(text: str) -> str:
    return "".join(text.split()).lower()


class OwnerRule:
    """Availability checks and the reassignment rule, over Genesys reads."""

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
        """Why the agent cannot own a callback at ``instant`` (``None``: no such user).

        ``must_work_at`` asks for a shift covering the instant itself (stand-ins), not only
        one on that date (the owner asked for, whose hours the time rules checked).
        """
        user = self._genesys.user(agent_id, deadline)
        if user is None:
            return None
        if user.get("state") != "active":
            return Availability("AGENT_INACTIVE")
        if queue_id not in self._genesys.user_queue_ids(agent_id, deadline):
            return Availability("AGENT_NOT_IN_QUEUE")
        now = self._clock.now()
        profile = self._times.profile(agent_id, now, deadline)
        local_day = instant.astimezone(zone_info(profile.zone)).date() if profile.zone \
            else instant.date()
        if profile.management_unit and local_day in self._genesys.approved_time_off_days(
                profile.management_unit, agent_id, local_day, local_day, profile.zone,
                deadline):
            return Availability("AGENT_ON_TIME_OFF", profile)
        if _out_of_office(user.get("outOfOffice") or {}, instant):
            return Availability("AGENT_OUT_OF_OFFICE", profile)
        hours = profile.hours
        if must_work_at and (hours is None or not hours.working_at(instant)):
            return Availability("AGENT_OFF_SHIFT", profile)
        if hours is not None and not hours.works_on(local_day) \
                and not hours.working_at(instant):
            # A shift that began the day before and still runs counts.
            return Availability("AGENT_OFF_SHIFT", profile)
        if instant - now <= self._immediate and _offline(user):
            return Availability("AGENT_OFFLINE", profile)
        return Availability("", profile)

    def resolve(self, agent_id: str, queue_id: str, instant: datetime, deadline: Deadline,
                *, allow_reassignment: bool = True) -> OwnerDecision:
        """Keep the owner if available, else apply the reassignment rule."""
        own = self.availability(agent_id, queue_id, instant, deadline)
        if own is None:
            return OwnerDecision("UNKNOWN_AGENT", "")
        if own.available:
            return OwnerDecision("AVAILABLE", agent_id, profile=own.profile)
        if not allow_reassignment:
            return OwnerDecision("NONE", "", own.reason)
        user = self._genesys.user(agent_id, deadline) or {}
        team_id = str((user.get("team") or {}).get("id") or "")
        teammates = [m for m in self._genesys.team_member_ids(team_id, deadline)
                     if m != agent_id] if team_id else []
        stand_ins = []
        for mate in teammates:
            found = self.availability(mate, queue_id, instant, deadline, must_work_at=True)
            if found is not None and found.available:
                stand_ins.append((mate, found))
        if stand_ins:
            counts = self._store.pending_owned_counts(
                [m for m, _ in stand_ins], int(self._clock.now().timestamp() * 1000))
            mate, found = min(stand_ins, key=lambda item: (counts[item[0]], item[0]))
            log.info("owner reassigned to teammate", extra={
                "agentId": agent_id, "newAgentId": mate, "reason": own.reason})
            return OwnerDecision("REASSIGNED", mate, own.reason, found.profile)
        manager_id = str((user.get("manager") or {}).get("id") or "")
        if manager_id and manager_id != agent_id:
            found = self.availability(manager_id, queue_id, instant, deadline,
                                      must_work_at=True)
            if found is not None and found.available:
                log.info("owner reassigned to manager", extra={
                    "agentId": agent_id, "newAgentId": manager_id, "reason": own.reason})
                return OwnerDecision("REASSIGNED", manager_id, own.reason, found.profile)
        if self._fallback == "queue":
            log.info("owner reassigned to the queue", extra={"agentId": agent_id,
                                                             "reason": own.reason})
            return OwnerDecision("QUEUE", "", own.reason)
        return OwnerDecision("NONE", "", own.reason)


def _out_of_office(ooo: dict[str, Any], instant: datetime) -> bool:
    if not ooo.get("active"):
        return False
    if ooo.get("indefinite"):
        return True
    try:
        start = datetime.fromisoformat(str(ooo.get("startDate")).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(ooo.get("endDate")).replace("Z", "+00:00"))
    except ValueError:
        # Active without readable dates: trust "active".
        return True
    return start <= instant <= end


def _offline(user: dict[str, Any]) -> bool:
    routing = str((user.get("routingStatus") or {}).get("status") or "")
    presence = str(((user.get("presence") or {}).get("presenceDefinition") or {})
                   .get("systemPresence") or "")
    return routing == "OFF_QUEUE" or _normalised(presence) in OFFLINE_PRESENCES


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
