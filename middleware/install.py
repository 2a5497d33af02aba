"""``install-actions``: the integration, its credential and every action, through the API.

The order is the order an admin would click through: find or create the Web Services Data
Actions integration, find or create its credential and attach it, enable the integration,
then for each action of ``schemas/`` find it by name (its name carries the contract
version) or create it as a draft and publish it with a 10 s timeout.

Nothing is ever changed in place: an action of our name whose contract differs from ours
is *refused* (a changed contract is a new name), and so is an integration whose credential
slot holds another credential. A second run therefore finds everything and writes
nothing; ``dry_run`` only reads. Secrets go into the credential and nowhere else: not in
the table, not in a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from middleware.contracts import Contract
from middleware.genesys.integrations import CREDENTIAL_SLOT, IntegrationsApi
from middleware.web.export import Auth, action_definition

ACTION_TIMEOUT_S: Final = 10
CREATED: Final = "created"
THERE: Final = "already there"
REFUSED: Final = "refused"
WOULD_CREATE: Final = "would create"

Json = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One line of the report: what, its name, what happened, and why."""

    kind: str
    name: str
    result: str
    detail: str = ""


@dataclass(frozen=True)
class Secret:
    """The credential Genesys will send us: its type and fields (values never printed)."""

    type_name: str
    fields: dict[str, str]

    def __repr__(self) -> str:
        return f"Secret({self.type_name}, fields={sorted(self.fields)})"


def secret_for(auth: Auth, basic: tuple[tuple[str, str], ...], api_keys: tuple[str, ...]
               ) -> Secret:
    """The credential for ``auth`` from the service's own accepted credentials (the first)."""
    if auth == "basic":
        if not basic:
            raise ValueError("--auth basic needs ACTION_BASIC_CREDENTIALS")
        user, password = basic[0]
        return Secret("basicAuth", {"userName": user, "password": password})
    if not api_keys:
        raise ValueError("--auth apikey needs ACTION_API_KEYS")
    # A User Defined credential's field names are ours to choose; the action's header
    # template reads ${credentials.apiKey}.
    return Secret("userDefined", {"apiKey": api_keys[0]})


def draft_body(contract: Contract, base_url: str, auth: Auth, integration_id: str,
               category: str, secure: bool) -> Json:
    """The PostActionInput of one action: the exported definition plus timeout and owner."""
    definition = action_definition(contract, base_url, auth)
    return {
        "category": category,
        "name": definition["name"],
        "integrationId": integration_id,
        "config": {"timeoutSeconds": ACTION_TIMEOUT_S, **definition["config"]},
        "contract": definition["contract"],
        "secure": secure,
    }


def _contract_of(action: Json) -> Json:
    contract = action.get("contract") or {}
    return {"input": {"inputSchema": (contract.get("input") or {}).get("inputSchema")},
            "output": {"successSchema": (contract.get("output") or {}).get("successSchema")}}


def _config_drift(found: Json, wanted: Json) -> str:
    """What differs outside the contract (reported, left alone: it is not ours to change)."""
    config = found.get("config") or {}
    request = config.get("request") or {}
    notes = []
    if config.get("timeoutSeconds") != ACTION_TIMEOUT_S:
        notes.append(f"timeout {config.get('timeoutSeconds')} s, not {ACTION_TIMEOUT_S}")
    if request.get("requestUrlTemplate") != wanted["config"]["request"]["requestUrlTemplate"]:
        notes.append("another URL")
    if request.get("headers") != wanted["config"]["request"]["headers"]:
        notes.append("other headers")
    if bool(found.get("secure")) != wanted["secure"]:
        notes.append(f"secure={str(bool(found.get('secure'))).lower()}")
    return "; ".join(notes) + (" (left unchanged)" if notes else "")


class Installer:
    """Brings one org to the shipped integration and actions, or says why it will not."""

    def __init__(self, api: IntegrationsApi, contracts: dict[str, Contract], *,
                 base_url: str, auth: Auth, secret: Secret, integration_name: str,
                 secure: bool, dry_run: bool) -> None:
        self._api = api
        self._contracts = contracts
        self._base_url = base_url
        self._auth = auth
        self._secret = secret
        self._name = integration_name
        self._secure = secure
        self._dry = dry_run

    @property
    def credential_name(self) -> str:
        """The credential is named after the integration, so a second run finds it."""
        return f"{self._name} credential"

    def run(self) -> list[Step]:
        """Find or create everything, in order; the report of every step."""
        steps: list[Step] = []
        integration = self._api.find_integration(self._name)
        if integration is None:
            if self._dry:
                steps.append(Step("integration", self._name, WOULD_CREATE))
                steps.append(self._credential_found(self._api.find_credential(
                    self.credential_name)) or Step("credential", self.credential_name,
                                                   WOULD_CREATE, self._secret.type_name))
                steps += [Step("action", c.display_name, WOULD_CREATE)
                          for c in self._contracts.values()]
                return steps
            integration = self._api.create_integration(self._name)
            steps.append(Step("integration", self._name, CREATED))
        else:
            steps.append(Step("integration", self._name, THERE))
        integration_id = str(integration["id"])
        steps.append(self._credential(integration_id))
        if integration.get("intendedState") != "ENABLED":
            if not self._dry:
                self._api.enable_integration(integration_id)
            steps.append(Step("integration state", self._name,
                              WOULD_CREATE if self._dry else CREATED, "enabled"))
        published = {str(a["name"]): a for a in self._api.actions(integration_id)}
        drafts = {str(a["name"]): a for a in self._api.drafts(integration_id)}
        for contract in self._contracts.values():
            steps.append(self._action(contract, integration_id, published, drafts))
        return steps

    def _credential(self, integration_id: str) -> Step:
        name = self.credential_name
        credential = self._api.find_credential(name)
        created = credential is None
        mismatch = self._credential_found(credential)
        if mismatch is not None and mismatch.result == REFUSED:
            return mismatch
        if credential is None:
            if self._dry:
                return Step("credential", name, WOULD_CREATE, self._secret.type_name)
            credential = self._api.create_credential(name, self._secret.type_name,
                                                     self._secret.fields)
        config = self._api.config(integration_id)
        held = ((config.get("credentials") or {}).get(CREDENTIAL_SLOT) or {}).get("id")
        if held == credential["id"]:
            return Step("credential", name, CREATED if created else THERE,
                        self._secret.type_name)
        if held:
            return Step("credential", name, REFUSED,
                        "the integration holds another credential; left unchanged")
        if self._dry:
            return Step("credential", name, THERE, "would attach to the integration")
        self._api.attach_credential(integration_id, config, str(credential["id"]))
        return Step("credential", name, CREATED if created else THERE,
                    f"{self._secret.type_name}, attached to the integration")

    def _credential_found(self, credential: Json | None) -> Step | None:
        """``REFUSED`` when a credential of our name has another type than ``--auth`` asks
        for: it is never changed in place (Genesys would send the other kind), as for a
        changed contract; ``THERE`` when it matches; ``None`` when there is none."""
        if credential is None:
            return None
        found = str((credential.get("type") or {}).get("name") or "")
        if found and found != self._secret.type_name:
            return Step("credential", self.credential_name, REFUSED,
                        f"holds a {found} credential, not {self._secret.type_name}; left "
                        "unchanged (use another GENESYS_INTEGRATION_NAME)")
        return Step("credential", self.credential_name, THERE, self._secret.type_name)

    def _action(self, contract: Contract, integration_id: str, published: dict[str, Json],
                drafts: dict[str, Json]) -> Step:
        name = contract.display_name
        wanted = draft_body(contract, self._base_url, self._auth, integration_id,
                            self._name, self._secure)
        if name in published:
            found = self._api.action(str(published[name]["id"]))
            if _contract_of(found) != wanted["contract"]:
                return Step("action", name, REFUSED,
                            "published with another contract; a changed contract needs a new "
                            "name (v2), never a change in place")
            return Step("action", name, THERE, _config_drift(found, wanted))
        if name in drafts:
            # An earlier run stopped between creating the draft and publishing it.
            draft = self._api.draft(str(drafts[name]["id"]))
            if _contract_of(draft) != wanted["contract"]:
                return Step("action", name, REFUSED,
                            "an unpublished draft with another contract exists; left unchanged")
            if self._dry:
                return Step("action", name, WOULD_CREATE, "would publish the waiting draft")
            self._api.publish(str(draft["id"]), int(draft.get("version") or 1))
            return Step("action", name, CREATED, "published the waiting draft")
        if self._dry:
            return Step("action", name, WOULD_CREATE)
        draft = self._api.create_draft(wanted)
        self._api.publish(str(draft["id"]), int(draft.get("version") or 1))
        return Step("action", name, CREATED,
                    f"published, timeout {ACTION_TIMEOUT_S} s, secure={str(self._secure).lower()}")


def render_steps(steps: list[Step]) -> str:
    """The report as an aligned text table with a closing count by result."""
    rows = [("WHAT", "NAME", "RESULT", "DETAIL")] + [
        (s.kind, s.name, s.result, s.detail) for s in steps]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3]
             for r in rows]
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.result] = counts.get(step.result, 0) + 1
    lines.append(", ".join(f"{n} {result}" for result, n in counts.items()))
    return "\n".join(line.rstrip() for line in lines)
