"""The wire contract of each action, read from ``schemas/``: validation, complete answers, OpenAPI.

``schemas/<action>.input.json`` and ``schemas/<action>.output.json`` are the single
source of every wire shape. This module checks requests against them, fills every
output field a flow may bind (SPEC §2: always present), and derives ``/openapi.json``.
The data action export (``export.py``) reads the same files.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import jsonschema

from middleware.errors import ContractViolation
from middleware.logs import redact
from middleware.reasons import is_retryable

#: ``schemas/`` of the repository, shipped inside the wheel as this package (pyproject maps it).
SCHEMAS_PACKAGE: Final = "middleware.schemas"

#: Action route name -> Genesys data action name. A changed contract is a new name (SPEC §7).
ACTIONS: Final[dict[str, str]] = {
    "create-callback": "Callback - Create v1",
    "find-pending-callbacks": "Callback - Find Pending v1",
    "cancel-callback": "Callback - Cancel v1",
    "validate-callback-time": "Callback - Validate Time v1",
    "reschedule-callback": "Callback - Reschedule v1",
    "resolve-callback-owner": "Callback - Resolve Owner v1",
    "record-consent": "Consent - Record v1",
    "revoke-consent": "Consent - Revoke v1",
}

_EMPTY: Final[dict[str, Any]] = {"string": "", "boolean": False, "integer": 0, "number": 0}


class Contract:
    """Input and output schema of one action."""

    def __init__(self, action: str, display_name: str, input_schema: dict[str, Any],
                 output_schema: dict[str, Any]) -> None:
        jsonschema.Draft4Validator.check_schema(input_schema)
        jsonschema.Draft4Validator.check_schema(output_schema)
        self.action = action
        self.display_name = display_name
        self.input_schema = input_schema
        self.output_schema = output_schema
        self._validator = jsonschema.Draft4Validator(input_schema)

    def parse(self, body: Any) -> dict[str, Any]:
        """Return the request's fields, empty strings dropped; raise ``ContractViolation``.

        An empty string for an optional field means absent (agent scripts send every
        field they know); for a required field it is as good as missing.
        """
        if not isinstance(body, dict):
            raise ContractViolation("The body must be a JSON object.")
        fields = {k: v for k, v in body.items() if v != "" and v is not None}
        errors = sorted(self._validator.iter_errors(fields), key=_error_order)
        if errors:
            raise ContractViolation(_describe(errors[0]))
        return fields

    def answer(self, **fields: Any) -> dict[str, Any]:
        """A complete output: every declared field present, ``retryable`` from the reason."""
        properties: dict[str, Any] = self.output_schema["properties"]
        unknown = set(fields) - set(properties)
        if unknown:
            raise KeyError(f"{self.action} output has no field(s) {sorted(unknown)}")
        out = {name: fields.get(name, _EMPTY[spec["type"]]) for name, spec in properties.items()}
        out["retryable"] = is_retryable(out["reason"])
        # Messages echo caller input (an id, a zone); a number typed in the wrong field must
        # not come back whole (SPEC §8), whichever action built the message.
        out["message"] = redact(str(out["message"]))
        return out


def _error_order(error: jsonschema.ValidationError) -> tuple[int, str]:
    # Report the structural problems (unknown or missing fields) before a wrong type.
    rank = {"additionalProperties": 0, "required": 1}.get(str(error.validator), 2)
    return rank, ".".join(str(p) for p in error.absolute_path)


def _describe(error: jsonschema.ValidationError) -> str:
    schema: Any = error.schema
    instance: Any = error.instance
    expected: Any = error.validator_value
    if error.validator == "additionalProperties":
        extra = sorted(set(instance) - set(schema.get("properties", {})))
        return f"Unknown field(s): {', '.join(extra)}."
    if error.validator == "required":
        missing = [f for f in expected if f not in instance]
        return f"Missing required field(s): {', '.join(missing)}."
    field = ".".join(str(p) for p in error.absolute_path) or "body"
    if error.validator == "type":
        return f"Field {field} must be of type {expected}."
    if error.validator == "enum":
        named = ", ".join(str(v) for v in expected if v != "")
        empty = " (or empty)" if "" in expected else ""
        return f"Field {field} must be one of {named}{empty}."
    return f"Field {field} is invalid."


def load_contracts(directory: Path | None = None) -> dict[str, Contract]:
    """Read every action's schemas (the shipped ones unless ``directory`` is given); fail at
    start-up, not at the first request."""
    source: Traversable = directory or resources.files(SCHEMAS_PACKAGE)
    contracts = {}
    for action, display in ACTIONS.items():
        contracts[action] = Contract(
            action=action,
            display_name=display,
            input_schema=json.loads(
                source.joinpath(f"{action}.input.json").read_text(encoding="utf-8")),
            output_schema=json.loads(
                source.joinpath(f"{action}.output.json").read_text(encoding="utf-8")),
        )
    return contracts


def openapi_document(contracts: dict[str, Contract], version: str) -> dict[str, Any]:
    """OpenAPI 3.0 description of every action, generated from the schemas."""
    error = {
        "type": "object",
        "required": ["title", "description", "requestId"],
        "properties": {k: {"type": "string"} for k in ("title", "description", "requestId")},
    }

    def failure(text: str) -> dict[str, Any]:
        return {"description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    paths: dict[str, Any] = {}
    for contract in contracts.values():
        paths[f"/v1/actions/{contract.action}"] = {"post": {
            "operationId": contract.action,
            "summary": contract.input_schema.get("description", contract.display_name),
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": contract.input_schema}}},
            "responses": {
                "200": {"description": "The business outcome.",
                        "content": {"application/json": {"schema": contract.output_schema}}},
                "400": failure("The body breaks the input contract."),
                "401": failure("Missing or wrong credentials."),
                "409": failure("The same idempotency key is still in flight."),
                "413": failure("Body over 64 KiB."),
                "415": failure("The body is not UTF-8 application/json."),
                "422": failure("Idempotency key reused with a different body."),
                "503": failure("Cannot accept work right now; retry after Retry-After."),
            },
        }}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Agent-owned callback middleware", "version": version},
        "security": [{"basic": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": {"Error": error},
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
