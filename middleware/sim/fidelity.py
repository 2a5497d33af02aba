"""What the official SDK says a request may be: its path, its query parameters, its body.

``ENDPOINTS`` maps ``"METHOD /path/{template}"`` of every SDK 269.0.0 method the product
or the simulator touches to the query parameters that method declares
(``reference/genesys-models.json`` ``endpoints[].query_params``, values from the SDK's
generated docs ``build/docs/*Api.md``). ``None`` as a spec means the SDK declares the
method but this table does not check its parameters (routes the product never calls).

``query_departures`` is what the simulator's gate refuses with 400 on every route it
serves, and ``Recorder`` keeps a verdict on every request the product sent (by its
``User-Agent``), so the test suite can prove that no call it made would be refused by a
real org.

Where the SDK is silent the behaviour is unknown, and the table says so:

- the platform may well ignore a query parameter it does not declare; the simulator refuses
  one (``unknown.query.parameter``) so that a misspelt name cannot pass unnoticed;
- the SDK documents no maximum page size for these listings; the simulator takes the
  limits written beside each entry, which are assumptions.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from middleware.sim.models import ModelCatalog


@dataclass(frozen=True)
class Param:
    """One declared query parameter: its kind, its allowed values or range, list or not."""

    kind: str  # "str", "int", "bool", "enum"
    values: frozenset[str] = frozenset()
    minimum: int | None = None
    maximum: int | None = None
    multi: bool = False


def _enum(*values: str, multi: bool = False) -> Param:
    return Param("enum", frozenset(values), multi=multi)


def _int(minimum: int, maximum: int | None = None) -> Param:
    return Param("int", minimum=minimum, maximum=maximum)


#: The ``User-Agent`` the product sends on every API call (``middleware.genesys.client``).
PRODUCT_AGENT: Final = "agent-owned-callback-middleware"

_STR: Final = Param("str")
_STRS: Final = Param("str", multi=True)
_BOOL: Final = Param("bool")

#: UsersApi.md, get_users / get_user ``expand`` values (SDK 269.0.0 docs).
USER_EXPANDS: Final = frozenset({
    "routingStatus", "presence", "integrationPresence", "conversationSummary", "outOfOffice",
    "geolocation", "station", "authorization", "lasttokenissued", "authorization.unusedRoles",
    "team", "workPlanBidRanks", "externalContactsSettings", "groups", "customAttributes",
    "profileSkills", "certifications", "locations", "skills", "languages",
    "languagePreference", "employerInfo", "biography", "dateLastLogin", "dateWelcomeSent",
})
#: WorkforceManagementApi.md, get_workforcemanagement_businessunit ``expand`` values.
BU_EXPANDS: Final = frozenset({
    "settings", "settings.timeZone", "settings.startDayOfWeek", "settings.shortTermForecasting",
    "settings.scheduling", "settings.notifications.scheduling", "settings.learning",
    "settings.coaching",
})
#: Only list users of this state (get_users) / search for a user with this state (get_user).
USER_LIST_STATES: Final = ("active", "inactive", "deleted", "any")
USER_GET_STATES: Final = ("active", "deleted")
_PRESENCE_SOURCES: Final = ("MicrosoftTeams", "ZoomPhone", "EightByEight", "RingCentral")
# The SDK writes the default as 'ASC' and lists the values ascending/descending.
_SORT: Final = _enum("ascending", "descending", "ASC", "DESC")
# Assumed: the SDK docs state no maximum; 500 is what the platform's listings commonly allow.
_PAGE_SIZE: Final = _int(1, 500)
_PAGE_NUMBER: Final = _int(1)

_WFM: Final = "/api/v2/workforcemanagement"
ENDPOINTS: Final[dict[str, Mapping[str, Param] | None]] = {
    "POST /api/v2/conversations/callbacks": {},
    "PATCH /api/v2/conversations/callbacks": {},
    "GET /api/v2/conversations/callbacks": {},
    "POST /api/v2/conversations/callbacks/bulk/disconnect": {},
    "POST /api/v2/conversations/callbacks/bulk/update": {},
    "GET /api/v2/conversations/callbacks/{conversationId}": {},
    "PATCH /api/v2/conversations/callbacks/{conversationId}": {},
    "GET /api/v2/conversations/{conversationId}": {},
    "DELETE /api/v2/conversations/{conversationId}": {},
    "POST /api/v2/analytics/conversations/details/query": {},
    "GET /api/v2/users": {
        "pageSize": _PAGE_SIZE, "pageNumber": _PAGE_NUMBER, "id": _STRS, "jabberId": _STRS,
        "sortOrder": _SORT, "expand": Param("enum", USER_EXPANDS, multi=True),
        "integrationPresenceSource": _enum(*_PRESENCE_SOURCES),
        "userCustomAttributeSchemaIds": _STRS, "state": _enum(*USER_LIST_STATES),
    },
    "GET /api/v2/users/{userId}": {
        "expand": Param("enum", USER_EXPANDS, multi=True),
        "integrationPresenceSource": _enum(*_PRESENCE_SOURCES),
        "userCustomAttributeSchemaIds": _STRS, "state": _enum(*USER_GET_STATES),
    },
    # Assumed: the SDK documents a limit of 50 ids in prose only; it declares no values.
    "GET /api/v2/users/presences/purecloud/bulk": {"id": _STRS},
    "GET /api/v2/users/{userId}/presences/purecloud": {},
    "GET /api/v2/users/{userId}/routingstatus": {},
    "GET /api/v2/users/{userId}/outofoffice": {},
    "GET /api/v2/users/{userId}/state": {},
    "GET /api/v2/users/{userId}/queues": {
        "pageSize": _PAGE_SIZE, "pageNumber": _PAGE_NUMBER, "joined": _BOOL,
        "divisionId": _STRS,
    },
    "GET /api/v2/users/{userId}/superiors": {"expand": Param("enum", USER_EXPANDS, multi=True)},
    # Team members: cursor paging; the SDK declares no expand values (any string passes) and
    # no page-size limit (100 assumed).
    "GET /api/v2/teams/{teamId}/members": {
        "pageSize": _int(1, 100), "before": _STR, "after": _STR, "expand": _STRS,
    },
    # The SDK declares expand here without listing its values: any string passes.
    "GET /api/v2/routing/queues/{queueId}": {"expand": _STRS},
    f"GET {_WFM}/agents/{{agentId}}/managementunit": {},
    f"GET {_WFM}/managementunits/{{managementUnitId}}": {"expand": _STRS},
    f"GET {_WFM}/businessunits/{{businessUnitId}}": {
        "expand": Param("enum", BU_EXPANDS, multi=True),
        "includeSchedulingDefaultMessageSeverities": _BOOL,
    },
    f"POST {_WFM}/managementunits/{{managementUnitId}}/agentschedules/search": {
        "forceAsync": _BOOL, "forceDownloadService": _BOOL,
    },
    f"POST {_WFM}/businessunits/{{businessUnitId}}/agentschedules/search": {
        "forceAsync": _BOOL, "forceDownloadService": _BOOL,
    },
    f"POST {_WFM}/managementunits/{{managementUnitId}}/timeoffrequests/query": {
        "forceDownloadService": _BOOL,
    },
    # IntegrationsApi (install-actions): declared by the SDK; parameters not checked here.
    "GET /api/v2/integrations": None,
    "POST /api/v2/integrations": None,
    "GET /api/v2/integrations/{integrationId}": None,
    "PATCH /api/v2/integrations/{integrationId}": None,
    "GET /api/v2/integrations/{integrationId}/config/current": None,
    "PUT /api/v2/integrations/{integrationId}/config/current": None,
    "GET /api/v2/integrations/types": None,
    "GET /api/v2/integrations/credentials": None,
    "POST /api/v2/integrations/credentials": None,
    "GET /api/v2/integrations/credentials/{credentialId}": None,
    "PUT /api/v2/integrations/credentials/{credentialId}": None,
    "GET /api/v2/integrations/actions": None,
    "POST /api/v2/integrations/actions": None,
    "GET /api/v2/integrations/actions/drafts": None,
    "POST /api/v2/integrations/actions/drafts": None,
    "GET /api/v2/integrations/actions/{actionId}": None,
    "PATCH /api/v2/integrations/actions/{actionId}": None,
    "GET /api/v2/integrations/actions/{actionId}/draft": None,
    "PATCH /api/v2/integrations/actions/{actionId}/draft": None,
    "POST /api/v2/integrations/actions/{actionId}/draft": None,
    "POST /api/v2/integrations/actions/{actionId}/draft/publish": None,
}


@dataclass(frozen=True)
class Departure:
    """One way a request differs from what the SDK declares."""

    field_name: str
    error_code: str
    message: str


def _value_departure(name: str, value: str, spec: Param) -> Departure | None:
    if spec.kind == "enum" and value not in spec.values:
        allowed = ", ".join(sorted(spec.values))
        return Departure(name, "invalid.query.value",
                         f"{name}={value!r} is not one of: {allowed}")
    if spec.kind == "bool" and value not in ("true", "false"):
        return Departure(name, "invalid.query.value", f"{name}={value!r} is not true or false")
    if spec.kind == "int":
        if not value.lstrip("-").isdigit():
            return Departure(name, "invalid.query.value", f"{name}={value!r} is not an integer")
        number = int(value)
        if (spec.minimum is not None and number < spec.minimum) or \
                (spec.maximum is not None and number > spec.maximum):
            return Departure(name, "invalid.query.value",
                             f"{name}={number} is outside {spec.minimum}-{spec.maximum or ''}")
    return None


def query_departures(route: str, query: Mapping[str, Sequence[str]]) -> list[Departure]:
    """Every query parameter of ``route`` ("METHOD /template") the SDK does not allow."""
    specs = ENDPOINTS.get(route)
    if specs is None:
        return []
    out: list[Departure] = []
    for name, values in query.items():
        spec = specs.get(name)
        if spec is None:
            out.append(Departure(name, "unknown.query.parameter",
                                 f"{route} declares no query parameter {name!r}"))
            continue
        if len(values) > 1 and not spec.multi:
            out.append(Departure(name, "invalid.query.value", f"{name} given more than once"))
            continue
        parts = [p.strip() for v in values for p in (v.split(",") if spec.multi else [v])]
        for part in parts:
            found = _value_departure(name, part, spec)
            if found is not None:
                out.append(found)
                break
    return out


def sdk_route(method: str, path: str) -> str | None:
    """The SDK's ``"METHOD /template"`` a concrete path belongs to, if any (an id may hold
    any character once percent-decoded, even a slash, so a looser match comes second)."""
    for segment in ("[^/]+", ".+"):
        for route in ENDPOINTS:
            verb, _, template = route.partition(" ")
            pattern = re.sub(r"\\\{[^/]+?\\\}", segment, re.escape(template))
            if verb == method and re.fullmatch(pattern, path):
                return route
    return None


def request_departures(route: str, query: Mapping[str, Sequence[str]], body: Any,
                       body_model: tuple[str, bool] | None,
                       catalog: ModelCatalog, *, path: str = "") -> list[str]:
    """Why a request would not pass a real org's validation: unknown method and path, a bad
    query value, or a body that breaks its model (``body_model`` is (model, partial)).
    ``route`` is the simulator's template; a request it has no route for is looked up in
    the SDK by its ``path``."""
    if route not in ENDPOINTS and path:
        route = sdk_route(route.partition(" ")[0], path) or f"{route.partition(' ')[0]} {path}"
    if route not in ENDPOINTS:
        return [f"{route}: no such method and path in the SDK"]
    out = [f"{route}: query {d.message}" for d in query_departures(route, query)]
    if body_model is not None:
        name, partial = body_model
        details = catalog.validate(name, body, partial=partial)
        out += [f"{route}: body {d.field_name} ({d.error_code}) against {name}"
                for d in details]
    return out


@dataclass
class Recorder:
    """Verdicts on every request the product sent, kept across resets for the whole run."""

    checked: int = 0
    departures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, verdict: Callable[[], list[str]]) -> None:
        """Count one request and keep its departures (at most the first 100 overall)."""
        found = verdict()
        with self._lock:
            self.checked += 1
            room = 100 - len(self.departures)
            self.departures.extend(found[:max(room, 0)])

    def report(self) -> dict[str, Any]:
        """``{"checked": n, "departures": [...]}``, first departure first."""
        with self._lock:
            return {"checked": self.checked, "departures": list(self.departures)}

    def clear(self) -> None:
        """Forget every verdict."""
        with self._lock:
            self.checked = 0
            self.departures.clear()
