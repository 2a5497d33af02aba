"""Users, presences, teams and queues as the Platform API shows them.

Choices where the reference leaves the real behaviour open:

- a user's ``presenceDefinition.systemPresence`` reads ``"On Queue"`` (with a space) while
  the org catalogue enum says ``OnQueue``, so clients must normalise as the reference warns;
- ``manager`` is always present as a reference (it is not an expand), ``superiors`` is the
  direct manager only;
- ``expand`` accepts the values the SDK documents for users; the ones the simulator has
  data for are filled in (presence, routingStatus, team, outOfOffice, and empty lists for
  groups, skills, languages, locations), the others are ignored ("best effort", as the
  platform says); anything else is 400;
- the list read filters by ``state`` (``active`` by default, or ``inactive``, ``deleted``,
  ``any``), as the SDK documents; the single-user read accepts only ``active`` or
  ``deleted`` (the gate refuses anything else with 400). What the single read answers for
  an inactive user is not documented: the simulator shows every user that is not deleted
  (a deleted one only with ``state=deleted``) and hides nothing else, so a client cannot
  rely on it to learn a user's state; the list read with ``state=any`` is the way.
- a ``division`` reference carries ``id`` and ``selfUri`` only.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Final

from middleware.sim.fidelity import USER_EXPANDS, USER_LIST_STATES
from middleware.sim.org import Org, Queue, Team, User
from middleware.sim.wire import ApiError, Json, iso, not_found, ref

STATE_FILTERS: Final = USER_LIST_STATES
MAX_BULK_PRESENCE_IDS: Final = 50

# Fixed ids for the system presence definitions, so a client can compare them across calls.
_PRESENCE_IDS: Final = {
    name: f"9e000000-0000-4000-8000-{index:012d}"
    for index, name in enumerate(
        ("Available", "Away", "Busy", "Offline", "Idle", "OnQueue", "Meal", "Training",
         "Meeting", "Break"), start=1)
}


def user_uri(user_id: str) -> str:
    """The selfUri of a user."""
    return f"/api/v2/users/{user_id}"


def check_expand(values: Sequence[str]) -> set[str]:
    """The requested expands; 400 for a value the API does not document."""
    unknown = [v for v in values if v not in USER_EXPANDS]
    if unknown:
        raise ApiError(400, "bad.request", f"Invalid expand value: {unknown[0]}")
    return set(values)


def check_state(value: str | None, default: str = "active",
                allowed: tuple[str, ...] = USER_LIST_STATES) -> str:
    """The ``state`` filter of a user read; 400 for a value the read does not take."""
    state = value or default
    if state not in allowed:
        raise ApiError(400, "bad.request", f"Invalid state value: {state}")
    return state


def shows(user: User, state: str) -> bool:
    """Whether a read filtered by ``state`` includes this user."""
    return state in ("any", user.state)


def render_user(org: Org, user: User, expand: set[str]) -> Json:
    """The User model, with the requested expands the simulator has data for."""
    out: Json = {
        "id": user.id,
        "name": user.name,
        "division": ref(org.division_id, f"/api/v2/authorization/divisions/{org.division_id}"),
        "email": user.email,
        "primaryContactInfo": [
            {"address": user.email, "mediaType": "EMAIL", "type": "PRIMARY"}
        ],
        "state": user.state,
        "title": user.title,
        "department": user.department,
        "username": user.email,
        "version": user.version,
        "acdAutoAnswer": False,
        "selfUri": user_uri(user.id),
    }
    if user.manager_id is not None:
        out["manager"] = {"id": user.manager_id, "selfUri": user_uri(user.manager_id)}
    if "presence" in expand:
        out["presence"] = render_presence(user)
    if "routingStatus" in expand:
        out["routingStatus"] = render_routing_status(user.id, user)
    if "outOfOffice" in expand:
        out["outOfOffice"] = render_out_of_office(user)
    if "team" in expand and user.team_id is not None:
        out["team"] = render_team(org, org.teams[user.team_id])
    for listed in ("groups", "skills", "languages", "locations"):
        if listed in expand:
            out[listed] = []
    return out


def _presence_definition(user: User) -> Json:
    definition_id = _PRESENCE_IDS[user.presence]
    return {
        "id": definition_id,
        "systemPresence": "On Queue" if user.presence == "OnQueue" else user.presence,
        "selfUri": f"/api/v2/presencedefinitions/{definition_id}",
    }


def render_presence(user: User) -> Json:
    """The UserPresence model of a user's Genesys Cloud presence."""
    return {
        "source": "PURECLOUD",
        "sourceId": "PURECLOUD",
        "primary": True,
        "presenceDefinition": _presence_definition(user),
        "message": "",
        "modifiedDate": iso(user.presence_since),
        "selfUri": f"{user_uri(user.id)}/presences/purecloud",
    }


def render_uc_presence(user: User) -> Json:
    """The UcUserPresence model of the bulk presence read."""
    return {
        "userId": user.id,
        "source": "PURECLOUD",
        "presenceDefinition": _presence_definition(user),
        "message": "",
        "modifiedDate": iso(user.presence_since),
    }


def render_routing_status(user_id: str, user: User | None) -> Json:
    """The RoutingStatus model; OFF_QUEUE for an unknown user, as the API documents."""
    if user is None:
        return {"userId": user_id, "status": "OFF_QUEUE"}
    return {"userId": user.id, "status": user.routing_status,
            "startTime": iso(user.routing_since)}


def render_out_of_office(user: User) -> Json:
    """The OutOfOffice model (inactive when the user never set one)."""
    ooo = user.out_of_office
    out: Json = {
        "id": user.id,
        "user": {"id": user.id, "selfUri": user_uri(user.id)},
        "active": ooo.active,
        "indefinite": ooo.indefinite,
        "selfUri": f"{user_uri(user.id)}/outofoffice",
    }
    if ooo.start is not None:
        out["startDate"] = iso(ooo.start)
    if ooo.end is not None:
        out["endDate"] = iso(ooo.end)
    return out


def render_team(org: Org, team: Team) -> Json:
    """The Team model."""
    return {
        "id": team.id,
        "name": team.name,
        "description": team.description,
        "memberCount": len(team_members(org, team.id)),
        "selfUri": f"/api/v2/teams/{team.id}",
    }


def team_members(org: Org, team_id: str) -> list[User]:
    """The team's members (deleted users excluded), ordered by id for stable cursors."""
    return sorted(
        (u for u in org.users.values() if u.team_id == team_id and u.state != "deleted"),
        key=lambda u: u.id,
    )


def _encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"i:{index}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "i" or not number.isdigit():
            raise ValueError(cursor)
        return int(number)
    except ValueError as exc:
        raise ApiError(400, "bad.request", "Invalid cursor") from exc


def render_team_members(
    org: Org, team_id: str, page_size: int, after: str | None, before: str | None
) -> Json:
    """The TeamMemberEntityListing of one page, with cursor paging like the API."""
    org.team(team_id)
    if not 1 <= page_size <= 100:
        raise ApiError(400, "bad.request", "pageSize must be between 1 and 100")
    members = team_members(org, team_id)
    if after is not None:
        start = _decode_cursor(after)
    elif before is not None:
        start = max(0, _decode_cursor(before) - page_size)
    else:
        start = 0
    end = min(start + page_size, len(members))
    base = f"/api/v2/teams/{team_id}/members?pageSize={page_size}"
    out: Json = {
        "entities": [
            {"id": u.id, "name": u.name, "selfUri": user_uri(u.id)} for u in members[start:end]
        ],
        "selfUri": base,
    }
    if end < len(members):
        out["nextUri"] = f"{base}&after={_encode_cursor(end)}"
    if start > 0:
        out["previousUri"] = f"{base}&before={_encode_cursor(start)}"
    return out


def paged_listing(entities: list[Json], page_size: int, page_number: int, base_uri: str) -> Json:
    """An EntityListing page (UserEntityListing, UserQueueEntityListing) over ``entities``."""
    if not 1 <= page_size <= 500 or page_number < 1:
        raise ApiError(400, "bad.request", "pageSize must be 1-500 and pageNumber at least 1")
    total = len(entities)
    page_count = max(1, -(-total // page_size))
    start = (page_number - 1) * page_size
    sep = "&" if "?" in base_uri else "?"

    def uri(number: int) -> str:
        return f"{base_uri}{sep}pageSize={page_size}&pageNumber={number}"

    out: Json = {
        "entities": entities[start:start + page_size],
        "pageSize": page_size,
        "pageNumber": page_number,
        "total": total,
        "pageCount": page_count,
        "firstUri": uri(1),
        "selfUri": uri(page_number),
        "lastUri": uri(page_count),
    }
    if page_number < page_count:
        out["nextUri"] = uri(page_number + 1)
    if page_number > 1:
        out["previousUri"] = uri(page_number - 1)
    return out


def superiors(org: Org, user: User) -> list[User]:
    """The user's direct manager, as the org chart's superiors (empty at the top)."""
    if user.manager_id is None:
        return []
    return [org.users[user.manager_id]]


def queue_members(org: Org, queue: Queue) -> list[User]:
    """Users who are members of the queue (all joined, in the simulator)."""
    return [u for u in org.users.values() if queue.id in u.queue_ids and u.state != "deleted"]


def render_queue(org: Org, queue: Queue) -> Json:
    """The Queue model with its callback and agent-owned routing settings."""
    members = queue_members(org, queue)
    return {
        "id": queue.id,
        "name": queue.name,
        "description": queue.description,
        "division": ref(org.division_id, f"/api/v2/authorization/divisions/{org.division_id}"),
        "memberCount": len(members),
        "userMemberCount": len(members),
        "joinedMemberCount": sum(1 for u in members if u.state == "active"),
        "mediaSettings": {"callback": dict(queue.callback_settings)},
        "routingRules": [dict(rule) for rule in queue.routing_rules],
        "agentOwnedRouting": dict(queue.agent_owned_routing),
        "scoringMethod": "TimestampAndPriority",
        "skillEvaluationMethod": "BEST",
        "selfUri": f"/api/v2/routing/queues/{queue.id}",
    }


def render_user_queue(org: Org, queue: Queue) -> Json:
    """One entity of UserQueueEntityListing (UserQueue is not in the extract)."""
    return {
        "id": queue.id,
        "name": queue.name,
        "division": ref(org.division_id, f"/api/v2/authorization/divisions/{org.division_id}"),
        "memberCount": len(queue_members(org, queue)),
        "joined": True,
        "selfUri": f"/api/v2/routing/queues/{queue.id}",
    }


def require_user(org: Org, user_id: str, state: str) -> User:
    """The user a single-user read shows (``state`` is ``active`` or ``deleted``): any user
    not deleted, a deleted one only when asked for; 404 otherwise."""
    user = org.users.get(user_id)
    if user is None or (user.state == "deleted") != (state == "deleted"):
        raise not_found("user", user_id)
    return user
