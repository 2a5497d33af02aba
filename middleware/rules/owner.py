"""The right owner (SPEC §4 "Owner"): is the agent there at that time, and if not, who is.

Pure code: the facts about agents come through ``AgentFacts`` and ``StandIns``, each read
only when the rule reaches it (``actions/checks.py`` reads them from Genesys and the store).

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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, Protocol

from middleware.rules.profiles import AgentProfile
from middleware.rules.time import zone_info

log = logging.getLogger(__name__)

OFFLINE_PRESENCES: Final = frozenset({"offline"})


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


class AgentFacts(Protocol):
    """What the availability rule reads about one agent beyond the Genesys user."""

    def in_queue(self) -> bool:
        """Whether the agent is a member of the callback's queue."""

    def profile(self) -> AgentProfile:
        """The agent's zone, hours and management unit."""

    def on_time_off(self, profile: AgentProfile, local_day: date) -> bool:
        """Whether approved WFM time off covers the agent's local date."""


def availability(user: Mapping[str, Any], facts: AgentFacts, instant: datetime,
                 now: datetime, immediate: timedelta, *,
                 must_work_at: bool = False) -> Availability:
    """The first reason, in SPEC order, the agent cannot own a callback at ``instant``.

    ``must_work_at`` asks for a shift covering the instant itself (stand-ins), not only
    one on that date (the owner asked for, whose hours the time rules checked).
    """
    if user.get("state") != "active":
        return Availability("AGENT_INACTIVE")
    if not facts.in_queue():
        return Availability("AGENT_NOT_IN_QUEUE")
    profile = facts.profile()
    local_day = instant.astimezone(zone_info(profile.zone)).date() if profile.zone \
        else instant.date()
    if profile.management_unit and facts.on_time_off(profile, local_day):
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
    if instant - now <= immediate and _offline(user):
        return Availability("AGENT_OFFLINE", profile)
    return Availability("", profile)


class StandIns(Protocol):
    """Who could own the callback instead of an unavailable agent."""

    def teammates(self) -> list[tuple[str, Availability]]:
        """The agent's teammates (not the agent) who are available and work at the instant."""

    def pending_owned(self, agent_ids: list[str]) -> Mapping[str, int]:
        """How many pending callbacks each of these agents owns."""

    def manager(self) -> tuple[str, Availability] | None:
        """The agent's manager (not the agent) and whether they can stand in; ``None``: none."""


def new_owner(agent_id: str, own: Availability | None, stand_ins: StandIns, fallback: str,
              *, allow_reassignment: bool = True) -> OwnerDecision:
    """Keep the owner if available, else the reassignment rule: the teammate with the fewest
    pending owned callbacks (ties by id), else the manager, else ``fallback``."""
    if own is None:
        return OwnerDecision("UNKNOWN_AGENT", "")
    if own.available:
        return OwnerDecision("AVAILABLE", agent_id, profile=own.profile)
    if not allow_reassignment:
        return OwnerDecision("NONE", "", own.reason)
    mates = stand_ins.teammates()
    if mates:
        counts = stand_ins.pending_owned([m for m, _ in mates])
        mate, found = min(mates, key=lambda item: (counts[item[0]], item[0]))
        log.info("owner reassigned to teammate", extra={
            "agentId": agent_id, "newAgentId": mate, "reason": own.reason})
        return OwnerDecision("REASSIGNED", mate, own.reason, found.profile)
    manager = stand_ins.manager()
    if manager is not None and manager[1].available:
        manager_id, found = manager
        log.info("owner reassigned to manager", extra={
            "agentId": agent_id, "newAgentId": manager_id, "reason": own.reason})
        return OwnerDecision("REASSIGNED", manager_id, own.reason, found.profile)
    if fallback == "queue":
        log.info("owner reassigned to the queue", extra={"agentId": agent_id,
                                                         "reason": own.reason})
        return OwnerDecision("QUEUE", "", own.reason)
    return OwnerDecision("NONE", "", own.reason)


def _out_of_office(ooo: Mapping[str, Any], instant: datetime) -> bool:
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


def _offline(user: Mapping[str, Any]) -> bool:
    routing = str((user.get("routingStatus") or {}).get("status") or "")
    presence = str(((user.get("presence") or {}).get("presenceDefinition") or {})
                   .get("systemPresence") or "")
    return routing == "OFF_QUEUE" or _normalised(presence) in OFFLINE_PRESENCES
