"""Workforce management: agent -> management unit -> business unit, published shifts, time off.

Shifts are generated on demand from each agent's weekly hours, read as wall-clock times in
the business unit's zone (zoneinfo), so a 09:00 shift is 14:00Z before a US spring-forward
and 13:00Z after it, and a 00:00-24:00 day lasts 23 or 25 hours on a change day. A schedule
search returns every shift that overlaps ``[startDate, endDate)``, including one that began
the local day before. Approved full-day time off removes that local day's shift and yields
a ``fullDayTimeOffMarker``; pending, denied or cancelled requests only show in the
time-off query. Each shift carries one ``On Queue Work`` activity (activity code ``0``),
time off uses activity code ``5``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from middleware.sim.org import BusinessUnit, Org, TimeOff, User
from middleware.sim.wire import Json, bad_field, iso, not_found, parse_date, parse_instant, ref

ON_QUEUE_ACTIVITY: Final = "0"
TIME_OFF_ACTIVITY: Final = "5"
MAX_SEARCH_DAYS: Final = 62
_SHIFT_NAMESPACE: Final = uuid.UUID("5f1b7f0e-2d4c-4a8e-9b7a-2f4f1f6d0c11")


def _mu_uri(mu_id: str) -> str:
    return f"/api/v2/workforcemanagement/managementunits/{mu_id}"


def _bu_uri(bu_id: str) -> str:
    return f"/api/v2/workforcemanagement/businessunits/{bu_id}"


def agent_management_unit(org: Org, agent_id: str) -> Json:
    """The AgentManagementUnitReference of a WFM agent; 404 for users without WFM.

    No ``businessUnit``: the model says it is "populated with expand=businessUnit", but
    the endpoint takes no expand, so a real org leaves it out and the client reads the
    business unit from the management unit.
    """
    user = org.users.get(agent_id)
    if user is None or user.management_unit_id is None:
        raise not_found("WFM agent", agent_id)
    mu = org.management_units[user.management_unit_id]
    return {
        "user": {"id": user.id, "selfUri": f"/api/v2/users/{user.id}"},
        "managementUnit": {"id": mu.id, "selfUri": _mu_uri(mu.id)},
    }


def management_unit(org: Org, mu_id: str) -> Json:
    """The ManagementUnit model; its (deprecated) ``timeZone`` is the BU's."""
    mu = org.management_units.get(mu_id)
    if mu is None:
        raise not_found("management unit", mu_id)
    bu = org.business_units[mu.business_unit_id]
    return {
        "id": mu.id,
        "name": mu.name,
        "businessUnit": {"id": bu.id, "selfUri": _bu_uri(bu.id)},
        "startDayOfWeek": bu.start_day_of_week,
        "timeZone": bu.time_zone,
        "version": 1,
        "selfUri": _mu_uri(mu.id),
    }


def business_unit(org: Org, bu_id: str, expand: Iterable[str]) -> Json:
    """The BusinessUnitResponse; ``settings`` only with ``expand=settings[...]``."""
    bu = org.business_units.get(bu_id)
    if bu is None:
        raise not_found("business unit", bu_id)
    out: Json = {
        "id": bu.id,
        "name": bu.name,
        "division": ref(org.division_id, f"/api/v2/authorization/divisions/{org.division_id}"),
        "selfUri": _bu_uri(bu.id),
    }
    wanted = {e for e in expand if e == "settings" or e.startswith("settings.")}
    if wanted:
        settings: Json = {}
        if wanted & {"settings", "settings.timeZone"}:
            settings["timeZone"] = bu.time_zone
        if wanted & {"settings", "settings.startDayOfWeek"}:
            settings["startDayOfWeek"] = bu.start_day_of_week
        if "settings" in wanted:
            settings["metadata"] = {"version": 1}
        out["settings"] = settings
    return out


def _agents_of(org: Org, mu_ids: set[str], user_ids: list[str] | None) -> list[User]:
    agents = [
        u for u in org.users.values()
        if u.management_unit_id in mu_ids and u.state != "deleted"
    ]
    if user_ids is not None:
        wanted = set(user_ids)
        agents = [u for u in agents if u.id in wanted]
    return sorted(agents, key=lambda u: u.id)


def _approved_days(org: Org, user_id: str) -> dict[date, TimeOff]:
    return {
        t.day: t for t in org.time_off if t.user_id == user_id and t.status == "APPROVED"
    }


def _local(day: date, minute: int, bu: BusinessUnit) -> datetime:
    # Wall-clock arithmetic in the zone, then one conversion: DST-correct by construction.
    wall = datetime.combine(day, time(0), tzinfo=bu.zone) + timedelta(minutes=minute)
    return wall.astimezone(UTC)


def _agent_schedule(
    org: Org, user: User, bu: BusinessUnit, start: datetime, end: datetime
) -> Json:
    time_off = _approved_days(org, user.id)
    first = start.astimezone(bu.zone).date() - timedelta(days=1)
    last = end.astimezone(bu.zone).date()
    shifts: list[Json] = []
    markers: list[Json] = []
    day = first
    while day <= last:
        hours = user.weekly_hours.get(day.weekday())
        day_start, day_end = _local(day, 0, bu), _local(day, 24 * 60, bu)
        off = time_off.get(day)
        if off is not None and day_start < end and day_end > start:
            length = hours.end_minute - hours.start_minute if hours else 8 * 60
            markers.append({
                "businessUnitDate": day.isoformat(),
                "lengthMinutes": length,
                "description": "Time Off",
                "activityCodeId": TIME_OFF_ACTIVITY,
                "paid": True,
                "timeOffRequestId": off.id,
            })
        if hours is not None and off is None:
            shift_start = _local(day, hours.start_minute, bu)
            shift_end = _local(day, hours.end_minute, bu)
            if shift_start < end and shift_end > start:
                minutes = int((shift_end - shift_start).total_seconds() // 60)
                shifts.append({
                    "id": str(uuid.uuid5(_SHIFT_NAMESPACE, f"{user.id}/{day.isoformat()}")),
                    "startDate": iso(shift_start),
                    "lengthMinutes": minutes,
                    "activities": [{
                        "startDate": iso(shift_start),
                        "lengthMinutes": minutes,
                        "description": "On Queue Work",
                        "activityCodeId": ON_QUEUE_ACTIVITY,
                        "paid": True,
                    }],
                    "manuallyEdited": False,
                })
        day += timedelta(days=1)
    return {
        "user": {"id": user.id, "selfUri": f"/api/v2/users/{user.id}"},
        "shifts": shifts,
        "fullDayTimeOffMarkers": markers,
    }


def _instant(body: Mapping[str, Any], key: str) -> datetime:
    value = body.get(key)
    instant = parse_instant(value) if isinstance(value, str) else None
    if instant is None:
        raise bad_field(key, "invalid.datetime", f"{key} must be an ISO-8601 instant")
    return instant


def search_schedules(
    org: Org, bu: BusinessUnit, mu_ids: set[str], body: Mapping[str, Any]
) -> Json:
    """The BuAgentSchedulesSearchResponse for a checked BuSearchAgentSchedulesRequest."""
    start = _instant(body, "startDate")
    end = _instant(body, "endDate")
    if end <= start:
        raise bad_field("endDate", "invalid.value", "endDate must be after startDate")
    if end - start > timedelta(days=MAX_SEARCH_DAYS):
        raise bad_field("endDate", "invalid.value",
                        f"the search may span at most {MAX_SEARCH_DAYS} days")
    return {
        "agentSchedules": [
            _agent_schedule(org, user, bu, start, end)
            for user in _agents_of(org, mu_ids, body.get("userIds") or None)
        ],
        "businessUnitTimeZone": bu.time_zone,
        "publishedSchedules": [],
    }


def units_of_management_unit(org: Org, mu_id: str) -> tuple[BusinessUnit, set[str]]:
    """The BU and the single management unit a unit-level schedule search covers."""
    mu = org.management_units.get(mu_id)
    if mu is None:
        raise not_found("management unit", mu_id)
    return org.business_units[mu.business_unit_id], {mu.id}


def units_of_business_unit(org: Org, bu_id: str) -> tuple[BusinessUnit, set[str]]:
    """The BU and all its management units, for a BU-level schedule search."""
    bu = org.business_units.get(bu_id)
    if bu is None:
        raise not_found("business unit", bu_id)
    return bu, {m.id for m in org.management_units.values() if m.business_unit_id == bu.id}


def render_time_off(org: Org, entry: TimeOff) -> Json:
    """The TimeOffRequestListItem of a full-day request."""
    user = org.users[entry.user_id]
    mu_id = user.management_unit_id or ""
    return {
        "id": entry.id,
        "user": {"id": user.id, "selfUri": f"/api/v2/users/{user.id}"},
        "isFullDayRequest": True,
        "markedAsRead": False,
        "activityCodeId": TIME_OFF_ACTIVITY,
        "paid": True,
        "status": entry.status,
        "fullDayManagementUnitDates": [entry.day.isoformat()],
        "dailyDurationMinutes": 480,
        "submittedBy": {"id": user.id, "selfUri": f"/api/v2/users/{user.id}"},
        "submittedDate": iso(entry.submitted),
        "syncVersion": 1,
        "selfUri": f"{_mu_uri(mu_id)}/users/{user.id}/timeoffrequests/{entry.id}",
    }


def query_time_off(org: Org, mu_id: str, body: Mapping[str, Any]) -> Json:
    """The TimeOffRequestListing for a checked TimeOffRequestQueryBody."""
    if mu_id not in org.management_units:
        raise not_found("management unit", mu_id)
    first = last = None
    date_range = body.get("dateRange") or {}
    for key in ("startDate", "endDate"):
        text = date_range.get(key)
        if text is not None and parse_date(text) is None:
            raise bad_field(f"dateRange.{key}", "invalid.date", f"{key} must be yyyy-MM-dd")
    if date_range.get("startDate"):
        first = parse_date(date_range["startDate"])
    if date_range.get("endDate"):
        last = parse_date(date_range["endDate"])
    filters = {key: set(body[key]) for key in ("ids", "userIds", "statuses", "teamIds")
               if body.get(key)}
    entities = []
    for entry in org.time_off:
        user = org.users[entry.user_id]
        if user.management_unit_id != mu_id:
            continue
        if not all(
            value in filters[key]
            for key, value in (("ids", entry.id), ("userIds", user.id),
                               ("statuses", entry.status), ("teamIds", user.team_id))
            if key in filters
        ):
            continue
        # Both ends of DateRange are inclusive, read in the unit's zone like the dates.
        if (first and entry.day < first) or (last and entry.day > last):
            continue
        entities.append(render_time_off(org, entry))
    return {"entities": entities}
