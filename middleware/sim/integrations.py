"""The integrations API of the platform, as ``install-actions`` uses it, in memory.

Paths, query parameters and bodies follow the SDK's ``IntegrationsApi`` (PureCloudPlatform-
ClientV2 269.0.0); bodies are checked against the official models by the app's gate
(``BODY_MODELS`` below), query parameters here: a parameter the SDK does not list for the
route, or a value of the wrong type, is 400 ``bad.request``.

- ``GET|POST /api/v2/integrations``, ``GET|PATCH /api/v2/integrations/{integrationId}``,
  ``GET|PUT /api/v2/integrations/{integrationId}/config/current``: integrations of the
  types in ``INTEGRATION_TYPES``, created ``DISABLED``, enabled with a PATCH of
  ``intendedState``.
- ``GET|POST /api/v2/integrations/credentials``: credentials of the types in
  ``CREDENTIAL_TYPES``; answers never carry the secret fields.
- ``GET /api/v2/integrations/actions``, ``GET|POST /api/v2/integrations/actions/drafts``,
  ``GET /api/v2/integrations/actions/{actionId}``, ``GET .../{actionId}/draft``,
  ``POST .../{actionId}/draft/publish``: an action is created as a draft (version 1) and
  becomes the published action when its draft version is published.

Control: ``GET /sim/integrations`` lists integrations (with their current config),
credentials (type and the *names* of their fields, never the values), published actions
and drafts, all with their ids.

Where the platform's real behaviour is not documented the simulator picks the stricter
reading and says so beside the code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import falcon

from middleware.sim.directory import paged_listing
from middleware.sim.org import new_id
from middleware.sim.wire import ApiError, Json, bad_field, iso, not_found

if TYPE_CHECKING:
    from middleware.sim.api import BodyModel
    from middleware.sim.state import Simulator

_BASE: Final = "/api/v2/integrations"
_ACTIONS: Final = f"{_BASE}/actions"

#: Integration types the simulated org can install; the only credential slot of a Web
#: Services Data Actions integration is ``basicAuth`` whatever the credential's type
#: (the provider's examples attach Basic Auth there; the slot of a User Defined credential
#: is our reading of the UI, which offers one credential per integration).
INTEGRATION_TYPES: Final = {
    "custom-rest-actions": {"name": "Web Services Data Actions", "slots": ("basicAuth",)},
}
#: Credential types and their required fields (Basic Auth has two; User Defined any).
CREDENTIAL_TYPES: Final = {"basicAuth": ("userName", "password"), "userDefined": (),
                           "userDefinedOAuth": ()}
#: ``ActionConfig.timeoutSeconds``: "Optional 1-60 second timeout" (SDK docs).
TIMEOUT_RANGE: Final = range(1, 61)

_LISTING: Final = {"pageSize": int, "pageNumber": int, "nextPage": str, "previousPage": str,
                   "sortBy": str}
#: The query parameters the SDK sends on each GET route, with their types.
QUERY_PARAMETERS: Final[dict[str, dict[str, type]]] = {
    _BASE: {**_LISTING, "expand": str, "ids": str, "integrationType": str,
            "reportedState": str, "credentialId": str},
    f"{_BASE}/credentials": {"pageSize": int, "pageNumber": int},
    _ACTIONS: {**_LISTING, "sortOrder": str, "category": str, "name": str, "ids": str,
               "secure": bool, "includeAuthActions": bool, "includeConfig": bool},
    f"{_ACTIONS}/drafts": {**_LISTING, "sortOrder": str, "category": str, "name": str,
                           "ids": str, "secure": bool, "includeAuthActions": bool,
                           "includeConfig": bool},
    f"{_ACTIONS}/{{actionId}}": {"expand": str, "flatten": bool, "includeConfig": bool},
    f"{_ACTIONS}/{{actionId}}/draft": {"expand": str, "flatten": bool, "includeConfig": bool},
    f"{_BASE}/{{integrationId}}": {"expand": str},
    f"{_BASE}/{{integrationId}}/config/current": {},
}


def body_models() -> dict[str, BodyModel]:
    """The official model of each write route's body, keyed ``"VERB template"``."""
    from middleware.sim.api import BodyModel  # noqa: PLC0415 (api imports state, state us)

    return {
        f"POST {_BASE}": BodyModel("CreateIntegrationRequest"),
        f"PATCH {_BASE}/{{integrationId}}": BodyModel("Integration"),
        f"PUT {_BASE}/{{integrationId}}/config/current": BodyModel("IntegrationConfiguration"),
        f"POST {_BASE}/credentials": BodyModel("Credential"),
        f"POST {_ACTIONS}/drafts": BodyModel("PostActionInput"),
        f"POST {_ACTIONS}/{{actionId}}/draft/publish": BodyModel("PublishDraftInput"),
    }


@dataclass
class IntegrationStore:
    """Integrations, their configs, credentials, published actions and drafts, by id."""

    integrations: dict[str, Json] = field(default_factory=dict)
    configs: dict[str, Json] = field(default_factory=dict)
    credentials: dict[str, Json] = field(default_factory=dict)
    actions: dict[str, Json] = field(default_factory=dict)
    drafts: dict[str, Json] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget everything (``/sim/reset``)."""
        for table in (self.integrations, self.configs, self.credentials, self.actions,
                      self.drafts):
            table.clear()


def _query(req: falcon.Request) -> dict[str, Any]:
    """The request's query parameters, typed; 400 for one the SDK does not send here."""
    allowed = QUERY_PARAMETERS.get(str(req.uri_template), {})
    out: dict[str, Any] = {}
    for name, value in req.params.items():
        kind = allowed.get(name)
        text = value if isinstance(value, str) else ",".join(value)
        # The platform's handling of an unknown parameter is not documented; refusing it
        # keeps a client honest that passes here.
        if kind is None:
            raise ApiError(400, "bad.request", f"Unknown query parameter {name}.")
        if kind is int:
            if not text.isdigit():
                raise ApiError(400, "bad.request", f"{name} must be an integer.")
            out[name] = int(text)
        elif kind is bool:
            if text.lower() not in ("true", "false"):
                raise ApiError(400, "bad.request", f"{name} must be true or false.")
            out[name] = text.lower() == "true"
        else:
            out[name] = text
    return out


def _page(entities: list[Json], query: dict[str, Any], uri: str) -> Json:
    return paged_listing(entities, int(query.get("pageSize", 25)),
                         int(query.get("pageNumber", 1)), uri)


class Integrations:
    """The integrations API routes, against the simulator's ``integrations`` store."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    @property
    def _store(self) -> IntegrationStore:
        return self._sim.integrations

    def _now(self) -> str:
        return iso(self._sim.clock.now())

    # -- integrations -------------------------------------------------------------------

    def _render(self, integration: Json) -> Json:
        out = copy.deepcopy(integration)
        out["config"] = {"current": self._render_config(integration["id"])}
        state = integration["intendedState"]
        out["reportedState"] = {"code": "ACTIVE" if state == "ENABLED" else "INACTIVE",
                                "lastUpdated": self._now()}
        return out

    def _render_config(self, integration_id: str) -> Json:
        config = copy.deepcopy(self._store.configs[integration_id])
        config["credentials"] = {slot: self._credential_info(c["id"])
                                 for slot, c in config["credentials"].items()}
        return config

    def _integration(self, integration_id: str) -> Json:
        found = self._store.integrations.get(integration_id)
        if found is None:
            raise not_found("integration", integration_id)
        return found

    def on_get_integrations(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List integrations (IntegrationEntityListing), optionally of one type."""
        query = _query(req)
        kind = query.get("integrationType")
        with self._sim.lock:
            entities = [self._render(i) for i in self._store.integrations.values()
                        if kind is None or i["integrationType"]["id"] == kind]
        resp.media = _page(entities, query, _BASE)

    def on_post_integrations(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create an integration (CreateIntegrationRequest -> Integration), DISABLED."""
        _query(req)
        body: Json = req.context.body
        type_id = str(body["integrationType"].get("id") or "")
        if type_id not in INTEGRATION_TYPES:
            raise bad_field("integrationType.id", "invalid.value",
                            f"Unknown integration type {type_id!r}.")
        with self._sim.lock:
            integration_id = new_id()
            self._store.integrations[integration_id] = {
                "id": integration_id, "name": body["name"],
                "integrationType": {"id": type_id, "name": INTEGRATION_TYPES[type_id]["name"],
                                    "selfUri": f"{_BASE}/types/{type_id}"},
                "notes": "", "intendedState": "DISABLED", "attributes": {},
                "selfUri": f"{_BASE}/{integration_id}",
            }
            self._store.configs[integration_id] = {
                "id": integration_id, "name": body["name"], "version": 1, "properties": {},
                "advanced": {}, "notes": "", "credentials": {},
                "selfUri": f"{_BASE}/{integration_id}/config/current",
            }
            resp.media = self._render(self._store.integrations[integration_id])

    def on_get_integration(self, req: falcon.Request, resp: falcon.Response,
                           integrationId: str) -> None:
        """Read one integration (Integration)."""
        _query(req)
        with self._sim.lock:
            resp.media = self._render(self._integration(integrationId))

    def on_patch_integration(self, req: falcon.Request, resp: falcon.Response,
                             integrationId: str) -> None:
        """Change an integration's ``intendedState`` (Integration -> Integration)."""
        _query(req)
        body: Json = req.context.body
        with self._sim.lock:
            integration = self._integration(integrationId)
            integration["intendedState"] = body["intendedState"]
            resp.media = self._render(integration)

    def on_get_config(self, req: falcon.Request, resp: falcon.Response,
                      integrationId: str) -> None:
        """Read the current configuration (IntegrationConfiguration)."""
        _query(req)
        with self._sim.lock:
            self._integration(integrationId)
            resp.media = self._render_config(integrationId)

    def on_put_config(self, req: falcon.Request, resp: falcon.Response,
                      integrationId: str) -> None:
        """Replace the configuration; ``version`` must be the current one."""
        _query(req)
        body: Json = req.context.body
        with self._sim.lock:
            integration = self._integration(integrationId)
            current = self._store.configs[integrationId]
            # "Version number required for updates" (SDK docs); the status of a stale
            # version is not documented: 409, as the platform answers other version races.
            if body["version"] != current["version"]:
                raise ApiError(409, "conflict", "The configuration version is not current.")
            slots = INTEGRATION_TYPES[integration["integrationType"]["id"]]["slots"]
            credentials: Json = {}
            for slot, info in body["credentials"].items():
                if slot not in slots:
                    raise bad_field(f"credentials.{slot}", "invalid.value",
                                    f"This integration type has no credential {slot!r}.")
                credential_id = str(info.get("id") or "")
                if credential_id not in self._store.credentials:
                    raise bad_field(f"credentials.{slot}.id", "invalid.value",
                                    "No such credential.")
                credentials[slot] = {"id": credential_id}
            current.update(name=body["name"], properties=body["properties"],
                           advanced=body["advanced"], notes=body["notes"],
                           credentials=credentials, version=current["version"] + 1)
            resp.media = self._render_config(integrationId)

    # -- credentials --------------------------------------------------------------------

    def _credential_info(self, credential_id: str) -> Json:
        credential = self._store.credentials[credential_id]
        return {"id": credential_id, "name": credential["name"],
                "createdDate": credential["createdDate"],
                "modifiedDate": credential["createdDate"],
                "type": {"name": credential["type"]},
                "selfUri": f"{_BASE}/credentials/{credential_id}"}

    def on_get_credentials(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List credentials (CredentialInfoListing), without their secret fields."""
        query = _query(req)
        with self._sim.lock:
            entities = [self._credential_info(i) for i in self._store.credentials]
        resp.media = _page(entities, query, f"{_BASE}/credentials")

    def on_post_credentials(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a credential (Credential -> CredentialInfo)."""
        _query(req)
        body: Json = req.context.body
        kind = str(body["type"].get("name") or "")
        if kind not in CREDENTIAL_TYPES:
            raise bad_field("type.name", "invalid.value", f"Unknown credential type {kind!r}.")
        fields = body.get("credentialFields") or {}
        for needed in CREDENTIAL_TYPES[kind]:
            if not fields.get(needed):
                raise bad_field(f"credentialFields.{needed}", "required.field.missing",
                                f"A {kind} credential needs {needed}.")
        with self._sim.lock:
            credential_id = new_id()
            self._store.credentials[credential_id] = {
                "name": str(body.get("name") or ""), "type": kind, "fields": dict(fields),
                "createdDate": self._now()}
            resp.media = self._credential_info(credential_id)

    # -- actions ------------------------------------------------------------------------

    def _render_action(self, action: Json, query: dict[str, Any], *, listing: bool) -> Json:
        out = {k: copy.deepcopy(v) for k, v in action.items() if k not in ("config", "contract")}
        # Whether a listing or a read without ``expand=contract`` carries the contract is
        # not documented: the simulator leaves it out, so a client must ask for it.
        if not listing and query.get("expand") == "contract":
            out["contract"] = copy.deepcopy(action["contract"])
        if query.get("includeConfig"):
            out["config"] = copy.deepcopy(action["config"])
        return out

    def _list(self, table: dict[str, Json], req: falcon.Request, uri: str) -> Json:
        query = _query(req)
        name = str(query.get("name") or "").lower()
        ids = {i for i in str(query.get("ids") or "").split(",") if i}
        chosen = [a for a in table.values()
                  if name in a["name"].lower() and (not ids or a["id"] in ids)
                  and query.get("category") in (None, a["category"])
                  and query.get("secure") in (None, a["secure"])]
        chosen.sort(key=lambda a: (a["name"], a["id"]))
        return _page([self._render_action(a, query, listing=True) for a in chosen], query, uri)

    def _read(self, table: dict[str, Json], action_id: str, kind: str) -> Json:
        found = table.get(action_id)
        if found is None:
            raise not_found(kind, action_id)
        return found

    def on_get_actions(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List published actions (ActionEntityListing), filtered as the SDK allows."""
        with self._sim.lock:
            resp.media = self._list(self._store.actions, req, _ACTIONS)

    def on_get_drafts(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List action drafts (ActionEntityListing)."""
        with self._sim.lock:
            resp.media = self._list(self._store.drafts, req, f"{_ACTIONS}/drafts")

    def on_post_drafts(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create the draft of a new action (PostActionInput -> Action), version 1."""
        _query(req)
        body: Json = req.context.body
        timeout = (body.get("config") or {}).get("timeoutSeconds")
        if timeout is not None and timeout not in TIMEOUT_RANGE:
            raise bad_field("config.timeoutSeconds", "invalid.value",
                            "timeoutSeconds must be 1-60.")
        with self._sim.lock:
            if body["integrationId"] not in self._store.integrations:
                raise bad_field("integrationId", "invalid.value", "No such integration.")
            # Whether the platform refuses a second action of the same name in one
            # integration is not documented; refusing it makes a client that would create
            # duplicates fail here rather than in an org.
            for other in (*self._store.actions.values(), *self._store.drafts.values()):
                if other["integrationId"] == body["integrationId"] and \
                        other["name"] == body["name"]:
                    raise bad_field("name", "duplicate.value",
                                    f"An action named {body['name']!r} already exists.")
            action_id = f"custom_-_{new_id()}"
            contract = body["contract"]
            self._store.drafts[action_id] = {
                "id": action_id, "name": body["name"], "integrationId": body["integrationId"],
                "category": body["category"],
                "contract": {"input": {"inputSchema": contract["input"]["inputSchema"]},
                             "output": {"successSchema": contract["output"]["successSchema"]}},
                "version": 1, "secure": bool(body.get("secure", False)),
                "config": copy.deepcopy(body["config"]),
                "selfUri": f"{_ACTIONS}/{action_id}/draft",
            }
            resp.media = self._render_action(self._store.drafts[action_id],
                                             {"expand": "contract", "includeConfig": True},
                                             listing=False)

    def on_get_action(self, req: falcon.Request, resp: falcon.Response, actionId: str) -> None:
        """Read a published action (Action); ``expand=contract`` adds its contract."""
        query = _query(req)
        with self._sim.lock:
            action = self._read(self._store.actions, actionId, "action")
            resp.media = self._render_action(action, query, listing=False)

    def on_get_draft(self, req: falcon.Request, resp: falcon.Response, actionId: str) -> None:
        """Read an action's draft (Action)."""
        query = _query(req)
        with self._sim.lock:
            draft = self._read(self._store.drafts, actionId, "action draft")
            resp.media = self._render_action(draft, query, listing=False)

    def on_post_publish(self, req: falcon.Request, resp: falcon.Response,
                        actionId: str) -> None:
        """Publish a draft (PublishDraftInput -> Action): it becomes the action."""
        _query(req)
        body: Json = req.context.body
        with self._sim.lock:
            draft = self._read(self._store.drafts, actionId, "action draft")
            # The status of a stale draft version is not documented; 409 as for configs.
            if body["version"] != draft["version"]:
                raise ApiError(409, "conflict", "The draft version is not current.")
            published = {**draft, "selfUri": f"{_ACTIONS}/{actionId}"}
            self._store.actions[actionId] = published
            del self._store.drafts[actionId]
            resp.media = self._render_action(published,
                                             {"expand": "contract", "includeConfig": True},
                                             listing=False)


class IntegrationsControl:
    """``GET /sim/integrations``: what the org holds, secrets left out."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Integrations with config, credentials' types and field names, actions, drafts."""
        with self._sim.lock:
            store = self._sim.integrations
            resp.media = {
                "integrations": [{**copy.deepcopy(i), "config": copy.deepcopy(
                    store.configs[i["id"]])} for i in store.integrations.values()],
                "credentials": [{"id": k, "name": c["name"], "type": c["type"],
                                 "fieldNames": sorted(c["fields"])}
                                for k, c in store.credentials.items()],
                "actions": copy.deepcopy(list(store.actions.values())),
                "drafts": copy.deepcopy(list(store.drafts.values())),
            }


def routes(sim: Simulator) -> list[tuple[str, object, str | None]]:
    """Every integrations route: (path template, resource, responder suffix)."""
    api = Integrations(sim)
    return [
        (_BASE, api, "integrations"),
        (f"{_BASE}/{{integrationId}}", api, "integration"),
        (f"{_BASE}/{{integrationId}}/config/current", api, "config"),
        (f"{_BASE}/credentials", api, "credentials"),
        (_ACTIONS, api, "actions"),
        (f"{_ACTIONS}/drafts", api, "drafts"),
        (f"{_ACTIONS}/{{actionId}}", api, "action"),
        (f"{_ACTIONS}/{{actionId}}/draft", api, "draft"),
        (f"{_ACTIONS}/{{actionId}}/draft/publish", api, "publish"),
        ("/sim/integrations", IntegrationsControl(sim), None),
    ]
