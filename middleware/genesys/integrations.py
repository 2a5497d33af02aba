"""The Genesys Cloud integrations API as ``install-actions`` uses it (SDK ``IntegrationsApi``).

Every call goes through ``GenesysClient.call``: the same OAuth token, shared call budget,
timeouts, retries and error mapping as the callback calls. Reads page through listings;
writes are one call each, so a caller can tell exactly what it changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, cast
from urllib.parse import quote

from middleware.deadline import Deadline
from middleware.genesys.client import GenesysClient

WEB_SERVICES_TYPE: Final = "custom-rest-actions"
#: The one credential slot of a Web Services Data Actions integration's configuration.
CREDENTIAL_SLOT: Final = "basicAuth"
_PAGE_SIZE: Final = 100
_MAX_PAGES: Final = 50
# An admin command, not a data action: each call may take as long as Genesys needs.
_CALL_BUDGET_S: Final = 30.0

Json = dict[str, Any]


def _seg(value: str) -> str:
    return quote(value, safe="")


class IntegrationsApi:
    """Reads and writes of integrations, credentials and actions for one OAuth client."""

    def __init__(self, genesys: GenesysClient) -> None:
        self._genesys = genesys

    def _call(self, method: str, path: str, *, body: Any = None,
              params: dict[str, str] | None = None) -> Any:
        return self._genesys.call(method, path, Deadline(_CALL_BUDGET_S), body=body,
                                  params=params)

    def _pages(self, path: str, params: dict[str, str] | None = None) -> Iterator[Json]:
        for number in range(1, _MAX_PAGES + 1):
            answer = self._call("GET", path, params={
                **(params or {}), "pageSize": str(_PAGE_SIZE), "pageNumber": str(number)})
            yield from answer.get("entities", [])
            if number >= int(answer.get("pageCount") or 1):
                return

    # -- integrations -------------------------------------------------------------------

    def find_integration(self, name: str) -> Json | None:
        """The Web Services Data Actions integration of that exact name, if the org has one."""
        for entity in self._pages("/api/v2/integrations", {"integrationType": WEB_SERVICES_TYPE}):
            if entity.get("name") == name and \
                    (entity.get("integrationType") or {}).get("id") == WEB_SERVICES_TYPE:
                return entity
        return None

    def create_integration(self, name: str) -> Json:
        """``POST /api/v2/integrations``: a new Web Services Data Actions integration."""
        return cast(Json, self._call("POST", "/api/v2/integrations", body={
            "name": name, "integrationType": {"id": WEB_SERVICES_TYPE}}))

    def enable_integration(self, integration_id: str) -> Json:
        """``PATCH /api/v2/integrations/{id}`` to ``intendedState`` ENABLED."""
        return cast(Json, self._call("PATCH", f"/api/v2/integrations/{_seg(integration_id)}",
                                     body={"intendedState": "ENABLED"}))

    def config(self, integration_id: str) -> Json:
        """The integration's current configuration (with its version and credentials)."""
        return cast(Json, self._call(
            "GET", f"/api/v2/integrations/{_seg(integration_id)}/config/current"))

    def attach_credential(self, integration_id: str, current: Json, credential_id: str) -> Json:
        """``PUT .../config/current`` with the credential in its slot, the rest unchanged."""
        return cast(Json, self._call(
            "PUT", f"/api/v2/integrations/{_seg(integration_id)}/config/current", body={
                "name": current.get("name") or "",
                "version": int(current.get("version") or 1),
                "properties": current.get("properties") or {},
                "advanced": current.get("advanced") or {},
                "notes": current.get("notes") or "",
                "credentials": {CREDENTIAL_SLOT: {"id": credential_id}},
            }))

    # -- credentials --------------------------------------------------------------------

    def find_credential(self, name: str) -> Json | None:
        """The credential of that exact name (its info only: Genesys never returns secrets)."""
        for entity in self._pages("/api/v2/integrations/credentials"):
            if entity.get("name") == name:
                return entity
        return None

    def create_credential(self, name: str, type_name: str, fields: dict[str, str]) -> Json:
        """``POST /api/v2/integrations/credentials``; the answer carries no secret."""
        return cast(Json, self._call("POST", "/api/v2/integrations/credentials", body={
            "name": name, "type": {"name": type_name}, "credentialFields": fields}))

    # -- actions ------------------------------------------------------------------------

    def actions(self, integration_id: str) -> list[Json]:
        """Published actions of the integration (listing entries, without contracts)."""
        return [a for a in self._pages("/api/v2/integrations/actions")
                if a.get("integrationId") == integration_id]

    def drafts(self, integration_id: str) -> list[Json]:
        """Unpublished drafts of the integration's actions."""
        return [a for a in self._pages("/api/v2/integrations/actions/drafts")
                if a.get("integrationId") == integration_id]

    def action(self, action_id: str) -> Json:
        """A published action with its contract and config."""
        return cast(Json, self._call("GET", f"/api/v2/integrations/actions/{_seg(action_id)}",
                                     params={"expand": "contract", "includeConfig": "true"}))

    def draft(self, action_id: str) -> Json:
        """An action's draft with its contract and config."""
        return cast(Json, self._call(
            "GET", f"/api/v2/integrations/actions/{_seg(action_id)}/draft",
            params={"expand": "contract", "includeConfig": "true"}))

    def create_draft(self, definition: Json) -> Json:
        """``POST /api/v2/integrations/actions/drafts`` (PostActionInput); the new draft."""
        return cast(Json, self._call("POST", "/api/v2/integrations/actions/drafts",
                                     body=definition))

    def publish(self, action_id: str, version: int) -> Json:
        """``POST .../{actionId}/draft/publish``: the draft becomes the live action."""
        return cast(Json, self._call(
            "POST", f"/api/v2/integrations/actions/{_seg(action_id)}/draft/publish",
            body={"version": version}))
