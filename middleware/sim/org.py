"""The simulated organisation: users, teams, queues, WFM units and time off, built from a seed.

The seed is the JSON of ``demo_org.json`` (or ``SIM_ORG_FILE``). Relative times in it
(``daysFromToday`` of time off, ``startDaysFromToday``/``endDaysFromToday`` of out of
office) are resolved against the clock when the org is built, so the demo stays "two days
from now" whenever the simulator starts or is reset. A seed that refers to an unknown id
or zone raises ``OrgError`` naming the item.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from middleware.sim.wire import ApiError, bad_field, not_found, parse_instant

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
USER_STATES: Final = ("active", "inactive", "deleted")
SYSTEM_PRESENCES: Final = (
    "Available", "Away", "Busy", "Offline", "Idle", "OnQueue", "Meal", "Training", "Meeting",
    "Break",
)
ROUTING_STATUSES: Final = ("OFF_QUEUE", "IDLE", "INTERACTING", "NOT_RESPONDING", "COMMUNICATING")
TIME_OFF_STATUSES: Final = ("PENDING", "APPROVED", "DENIED", "CANCELED")


class OrgError(ValueError):
    """The seed org is inconsistent; the message names the item."""


@dataclass(frozen=True)
class WorkingHours:
    """One weekday's shift in the BU zone, as minutes after local midnight (end may pass 1440)."""

    start_minute: int
    end_minute: int


@dataclass
class OutOfOffice:
    """The user's out-of-office setting."""

    active: bool = False
    start: datetime | None = None
    end: datetime | None = None
    indefinite: bool = False


@dataclass
class User:
    """A Genesys user and everything the simulator answers about them."""

    id: str
    name: str
    email: str
    title: str
    department: str
    state: str
    manager_id: str | None
    team_id: str | None
    queue_ids: list[str]
    presence: str
    presence_since: datetime
    routing_status: str
    routing_since: datetime
    out_of_office: OutOfOffice
    management_unit_id: str | None
    weekly_hours: dict[int, WorkingHours]
    about: str
    version: int = 1


@dataclass(frozen=True)
class Team:
    """A Genesys team (membership lives on the users)."""

    id: str
    name: str
    description: str


@dataclass(frozen=True)
class Queue:
    """A routing queue with its agent-owned callback settings."""

    id: str
    name: str
    description: str
    agent_owned_routing: dict[str, Any]
    routing_rules: list[dict[str, Any]]
    callback_settings: dict[str, Any]


@dataclass(frozen=True)
class BusinessUnit:
    """A WFM business unit; its zone is where agents' shifts and dates are read."""

    id: str
    name: str
    time_zone: str
    start_day_of_week: str

    @property
    def zone(self) -> ZoneInfo:
        """The BU's zone."""
        return ZoneInfo(self.time_zone)


@dataclass(frozen=True)
class ManagementUnit:
    """A WFM management unit inside one business unit."""

    id: str
    name: str
    business_unit_id: str


@dataclass
class TimeOff:
    """A full-day time-off request for one date in the agent's BU zone."""

    id: str
    user_id: str
    day: date
    status: str
    submitted: datetime


@dataclass
class Org:
    """Everything the directory, routing and WFM routes read."""

    id: str
    name: str
    division_id: str
    users: dict[str, User]
    teams: dict[str, Team]
    queues: dict[str, Queue]
    business_units: dict[str, BusinessUnit]
    management_units: dict[str, ManagementUnit]
    time_off: list[TimeOff] = field(default_factory=list)

    def user(self, user_id: str) -> User:
        """The user with this id, deleted ones included; 404 when unknown."""
        found = self.users.get(user_id)
        if found is None:
            raise not_found("user", user_id)
        return found

    def visible_user(self, user_id: str) -> User:
        """A user the per-user routes show: any state but ``deleted``; 404 otherwise."""
        found = self.user(user_id)
        if found.state == "deleted":
            raise not_found("user", user_id)
        return found

    def queue(self, queue_id: str) -> Queue:
        """The queue with this id; 404 when unknown."""
        found = self.queues.get(queue_id)
        if found is None:
            raise not_found("queue", queue_id)
        return found

    def team(self, team_id: str) -> Team:
        """The team with this id; 404 when unknown."""
        found = self.teams.get(team_id)
        if found is None:
            raise not_found("team", team_id)
        return found

    def business_unit_of(self, user: User) -> BusinessUnit | None:
        """The BU of a WFM-managed user, ``None`` for users without WFM."""
        if user.management_unit_id is None:
            return None
        mu = self.management_units[user.management_unit_id]
        return self.business_units[mu.business_unit_id]


def new_id() -> str:
    """A fresh platform-style id."""
    return str(uuid.uuid4())


def _minutes(text: str, what: str) -> int:
    hours, sep, minutes = text.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise OrgError(f"{what}: {text!r} is not HH:MM")
    value = int(hours) * 60 + int(minutes)
    if value > 24 * 60 or int(minutes) >= 60:
        raise OrgError(f"{what}: {text!r} is past 24:00")
    return value


def parse_weekly_hours(raw: Mapping[str, Any], what: str) -> dict[int, WorkingHours]:
    """Read ``{"mon": ["09:00", "17:00"], ...}``; an end at or before the start ends next day."""
    hours: dict[int, WorkingHours] = {}
    for day, span in raw.items():
        if day not in WEEKDAYS:
            raise OrgError(f"{what}: {day!r} is not one of {', '.join(WEEKDAYS)}")
        if not (isinstance(span, list) and len(span) == 2):
            raise OrgError(f"{what}.{day}: expected [start, end]")
        start = _minutes(span[0], f"{what}.{day}")
        end = _minutes(span[1], f"{what}.{day}")
        hours[WEEKDAYS.index(day)] = WorkingHours(start, end if end > start else end + 24 * 60)
    return hours


def _out_of_office(raw: Mapping[str, Any] | None, now: datetime) -> OutOfOffice:
    if not raw:
        return OutOfOffice()
    start = raw.get("startDaysFromToday")
    end = raw.get("endDaysFromToday")
    return OutOfOffice(
        active=bool(raw.get("active", False)),
        start=now + timedelta(days=start) if start is not None else None,
        end=now + timedelta(days=end) if end is not None else None,
        indefinite=bool(raw.get("indefinite", False)),
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise OrgError(message)


def build_org(seed: Mapping[str, Any], now: datetime) -> Org:
    """Build the org from its seed JSON, resolving relative days against ``now``."""
    try:
        return _build(seed, now)
    except (KeyError, TypeError) as exc:
        raise OrgError(f"seed org is missing or mistypes {exc}") from exc


def _build(seed: Mapping[str, Any], now: datetime) -> Org:
    org_info = seed["organization"]
    business_units: dict[str, BusinessUnit] = {}
    for raw in seed["businessUnits"]:
        try:
            ZoneInfo(raw["timeZone"])
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise OrgError(f"business unit {raw['id']}: unknown zone {raw['timeZone']!r}") from exc
        business_units[raw["id"]] = BusinessUnit(
            raw["id"], raw["name"], raw["timeZone"], raw.get("startDayOfWeek", "Monday")
        )
    management_units: dict[str, ManagementUnit] = {}
    for raw in seed["managementUnits"]:
        _require(raw["businessUnitId"] in business_units,
                 f"management unit {raw['id']}: unknown business unit {raw['businessUnitId']}")
        management_units[raw["id"]] = ManagementUnit(raw["id"], raw["name"], raw["businessUnitId"])
    queues = {
        raw["id"]: Queue(
            raw["id"], raw["name"], raw.get("description", ""), dict(raw["agentOwnedRouting"]),
            list(raw.get("routingRules", [])), dict(raw.get("callbackSettings", {})),
        )
        for raw in seed["queues"]
    }
    teams = {
        raw["id"]: Team(raw["id"], raw["name"], raw.get("description", ""))
        for raw in seed["teams"]
    }
    users = {raw["id"]: _user(raw, now) for raw in seed["users"]}
    for user in users.values():
        what = f"user {user.id}"
        _require(user.manager_id is None or user.manager_id in users, f"{what}: unknown manager")
        _require(user.team_id is None or user.team_id in teams, f"{what}: unknown team")
        _require(all(q in queues for q in user.queue_ids), f"{what}: unknown queue")
        _require(user.management_unit_id is None or user.management_unit_id in management_units,
                 f"{what}: unknown management unit")
    org = Org(
        id=org_info["id"], name=org_info["name"], division_id=seed["divisionId"], users=users,
        teams=teams, queues=queues, business_units=business_units,
        management_units=management_units,
    )
    for raw in seed.get("timeOff", []):
        owner = users.get(raw["userId"])
        if owner is None:
            raise OrgError(f"time off {raw.get('id')}: unknown user {raw['userId']}")
        add_time_off(org, owner, raw["daysFromToday"], raw.get("status", "APPROVED"), now,
                     time_off_id=raw.get("id"))
    return org


def _user(raw: Mapping[str, Any], now: datetime) -> User:
    what = f"user {raw['id']}"
    state = raw.get("state", "active")
    presence = raw.get("presence", "Available")
    routing = raw.get("routingStatus", "OFF_QUEUE")
    _require(state in USER_STATES, f"{what}: state {state!r}")
    _require(presence in SYSTEM_PRESENCES, f"{what}: presence {presence!r}")
    _require(routing in ROUTING_STATUSES, f"{what}: routingStatus {routing!r}")
    return User(
        id=raw["id"], name=raw["name"], email=raw["email"], title=raw.get("title", ""),
        department=raw.get("department", ""), state=state, manager_id=raw.get("managerId"),
        team_id=raw.get("teamId"), queue_ids=list(raw.get("queueIds", [])), presence=presence,
        presence_since=now, routing_status=routing, routing_since=now,
        out_of_office=_out_of_office(raw.get("outOfOffice"), now),
        management_unit_id=raw.get("managementUnitId"),
        weekly_hours=parse_weekly_hours(raw.get("weeklyHours", {}), f"{what}.weeklyHours"),
        about=raw.get("_about", ""),
    )


def add_time_off(
    org: Org, user: User, day: int | date, status: str, now: datetime,
    *, time_off_id: str | None = None,
) -> TimeOff:
    """Record full-day time off on a BU-local date (or a day offset from ``now`` there)."""
    bu = org.business_unit_of(user)
    if bu is None:
        raise ApiError(400, "bad.request", f"user {user.id} has no WFM management unit")
    if status not in TIME_OFF_STATUSES:
        raise ApiError(400, "bad.request", f"status must be one of {', '.join(TIME_OFF_STATUSES)}")
    if isinstance(day, date):
        local_day = day
    else:
        local_day = (now.astimezone(bu.zone) + timedelta(days=day)).date()
    entry = TimeOff(time_off_id or new_id(), user.id, local_day, status, now)
    org.time_off.append(entry)
    return entry


_USER_CHANGES: Final = frozenset({
    "state", "presence", "routingStatus", "outOfOffice", "queueIds", "managerId", "teamId",
    "weeklyHours",
})


def _bad(field_name: str, message: str) -> ApiError:
    return bad_field(field_name, "invalid.value", message)


def update_user(org: Org, user: User, changes: Mapping[str, Any], now: datetime) -> None:
    """Apply a control-API change to a user, checking every value before changing any."""
    unknown = sorted(set(changes) - _USER_CHANGES)
    if unknown:
        raise bad_field(unknown[0], "unknown.field", f"cannot change {unknown[0]}")
    state = changes.get("state", user.state)
    if state not in USER_STATES:
        raise _bad("state", f"state must be one of {', '.join(USER_STATES)}")
    presence = changes.get("presence", user.presence)
    # The org catalogue says OnQueue while user presences read "On Queue"; accept both.
    presence = "OnQueue" if presence == "On Queue" else presence
    if presence not in SYSTEM_PRESENCES:
        raise _bad("presence", f"presence must be one of {', '.join(SYSTEM_PRESENCES)}")
    routing = changes.get("routingStatus", user.routing_status)
    if routing not in ROUTING_STATUSES:
        raise _bad("routingStatus", f"routingStatus must be one of {', '.join(ROUTING_STATUSES)}")
    queue_ids = changes.get("queueIds", user.queue_ids)
    if not (isinstance(queue_ids, list) and all(q in org.queues for q in queue_ids)):
        raise _bad("queueIds", "queueIds must be a list of existing queue ids")
    manager_id = changes.get("managerId", user.manager_id)
    if manager_id is not None and (manager_id not in org.users or manager_id == user.id):
        raise _bad("managerId", "managerId must be another existing user or null")
    team_id = changes.get("teamId", user.team_id)
    if team_id is not None and team_id not in org.teams:
        raise _bad("teamId", "teamId must be an existing team or null")
    out_of_office = user.out_of_office
    if "outOfOffice" in changes:
        out_of_office = _parse_out_of_office(changes["outOfOffice"])
    weekly = user.weekly_hours
    if "weeklyHours" in changes:
        raw = changes["weeklyHours"]
        if not isinstance(raw, dict):
            raise _bad("weeklyHours", 'weeklyHours must be like {"mon": ["22:00", "06:00"]}')
        weekly = parse_weekly_hours(raw, "weeklyHours")
    user.weekly_hours = weekly
    if presence != user.presence:
        user.presence, user.presence_since = presence, now
    if routing != user.routing_status:
        user.routing_status, user.routing_since = routing, now
    user.state, user.queue_ids, user.manager_id, user.team_id = (
        state, list(queue_ids), manager_id, team_id
    )
    user.out_of_office = out_of_office
    user.version += 1


def _parse_out_of_office(raw: Any) -> OutOfOffice:
    if not isinstance(raw, dict) or set(raw) - {"active", "startDate", "endDate", "indefinite"}:
        raise _bad("outOfOffice", "outOfOffice takes active, startDate, endDate, indefinite")
    bounds: list[datetime | None] = []
    for key in ("startDate", "endDate"):
        text = raw.get(key)
        instant = parse_instant(text) if isinstance(text, str) else None
        if text is not None and instant is None:
            raise _bad(f"outOfOffice.{key}", f"{key} must be an ISO-8601 instant with a zone")
        bounds.append(instant)
    return OutOfOffice(
        active=bool(raw.get("active", False)), start=bounds[0], end=bounds[1],
        indefinite=bool(raw.get("indefinite", False)),
    )
