"""Genesys data action definitions, generated from ``schemas/`` (SPEC §7).

Each action becomes ``data_actions/<Action Name>.custom.json`` with exactly the keys of
a real Genesys export. ``contract_problems`` lists everything in a schema that Genesys
would refuse to import or that flows and scripts could not bind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, Literal

from middleware.contracts import Contract

Auth = Literal["basic", "apikey"]

ALLOWED_KEYWORDS: Final = frozenset({
    "type", "properties", "required", "enum", "description", "title", "default",
    "additionalProperties", "items",
})
FLAT_TYPES: Final = frozenset({"string", "integer", "number", "boolean"})
RESERVED_NAMES: Final = frozenset({"orgId", "integrationId", "rawRequest"})
_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
#: What the Genesys UI writes at the top of every exported contract.
DRAFT_04: Final = "http://json-schema.org/draft-04/schema#"


def _exported(schema: dict[str, Any]) -> dict[str, Any]:
    """A contract schema as the UI exports it: ``$schema`` draft-04 first."""
    return {"$schema": DRAFT_04, **{k: v for k, v in schema.items() if k != "$schema"}}


def action_definition(contract: Contract, base_url: str, auth: Auth,
                      secure: bool = False) -> dict[str, Any]:
    """The importable definition of one action; ``secure`` hides its inputs and outputs
    from Genesys' execution logs (the flag of a secure data action)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if auth == "apikey":
        headers["X-API-Key"] = "${credentials.apiKey}"
    return {
        "name": contract.display_name,
        "integrationType": "custom-rest-actions",
        "actionType": "custom",
        "config": {
            "request": {
                "requestUrlTemplate": f"{base_url.rstrip('/')}/v1/actions/{contract.action}",
                "requestType": "POST",
                "headers": headers,
                "requestTemplate": "${input.rawRequest}",
            },
            "response": {
                "translationMap": {},
                "translationMapDefaults": {},
                "successTemplate": "${rawResult}",
            },
        },
        "contract": {
            "input": {"inputSchema": _exported(contract.input_schema)},
            "output": {"successSchema": _exported(contract.output_schema)},
        },
        "secure": secure,
    }


def render(definition: dict[str, Any]) -> str:
    """The file text: stable key order and indentation, so a re-export diffs cleanly."""
    return json.dumps(definition, indent=2, ensure_ascii=False) + "\n"


def export_actions(contracts: dict[str, Contract], base_url: str, auth: Auth,
                   directory: Path, secure: bool = False) -> list[Path]:
    """Write every action's file into ``directory``; refuse if a contract breaks a limit."""
    problems = [f"{c.action}: {p}" for c in contracts.values() for p in contract_problems(c)]
    if problems:
        raise ValueError("contracts Genesys would refuse:\n" + "\n".join(problems))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for contract in contracts.values():
        path = directory / f"{contract.display_name}.custom.json"
        path.write_text(render(action_definition(contract, base_url, auth, secure)))
        written.append(path)
    return written


def contract_problems(contract: Contract) -> list[str]:
    """Every way the action's schemas break the data action limits of SPEC §2."""
    problems = []
    for kind, schema in (("input", contract.input_schema), ("output", contract.output_schema)):
        problems += [f"{kind}: {p}" for p in _keyword_problems(schema, "")]
        if schema.get("type") != "object":
            problems.append(f"{kind}: top level must be an object")
        for name, prop in schema.get("properties", {}).items():
            if not _NAME.match(name):
                problems.append(f"{kind}: property name {name!r} is not allowed")
            if name in RESERVED_NAMES:
                problems.append(f"{kind}: property name {name!r} is reserved by Genesys")
            if prop.get("type") not in FLAT_TYPES:
                problems.append(f"{kind}: {name} must be a flat string/integer/number/boolean")
    if contract.output_schema.get("additionalProperties") is not True:
        problems.append("output: additionalProperties must be true")
    return problems


def _keyword_problems(schema: Any, where: str) -> list[str]:
    if not isinstance(schema, dict):
        return []
    problems = [f"{where or '/'}: keyword {key!r} is not draft-04 data action safe"
                for key in schema if key not in ALLOWED_KEYWORDS]
    for name, prop in schema.get("properties", {}).items():
        problems += _keyword_problems(prop, f"{where}/{name}")
    if isinstance(schema.get("items"), dict):
        problems += _keyword_problems(schema["items"], f"{where}/items")
    return problems
