"""Wire contracts: schemas import into Genesys, the export matches, OpenAPI is generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from middleware.contracts import ACTIONS, Contract, load_contracts
from middleware.errors import ContractViolation
from middleware.web.export import action_definition, contract_problems, export_actions, render
from tests.conftest import ROOT

REAL_EXPORTS = Path("/nonexistent")
EXPORT_KEYS = {"name", "integrationType", "actionType", "config", "contract", "secure"}
#: The arguments the committed files were exported with (README, "Genesys setup").
COMMITTED = ("https://callbacks.example.com", "basic")


def test_every_action_has_both_schemas() -> None:
    """Each action route has an input and an output schema file."""
    contracts = load_contracts()
    assert set(contracts) == set(ACTIONS)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_schemas_respect_genesys_contract_limits(action: str) -> None:
    """Draft-04 keywords only, flat, allowed names, outputs open: Genesys will import them."""
    assert contract_problems(load_contracts()[action]) == []


def test_limit_check_catches_what_genesys_refuses() -> None:
    """A nested object, a $ref, a reserved name and a closed output are each reported."""
    bad = Contract("bad", "Bad v1",
                   {"type": "object", "properties": {
                       "rawRequest": {"type": "string"},
                       "nested": {"type": "object", "properties": {}},
                       "ref": {"$ref": "#/x"}}},
                   {"type": "object", "additionalProperties": False, "properties": {}})
    problems = "\n".join(contract_problems(bad))
    for expected in ("reserved", "nested must be a flat", "'$ref'", "additionalProperties"):
        assert expected in problems


def test_committed_data_actions_equal_a_fresh_export(tmp_path: Path) -> None:
    """The files in data_actions/ are exactly what export-actions writes today."""
    export_actions(load_contracts(), *COMMITTED, tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.custom.json")}
    committed = {p.name: p.read_text() for p in (ROOT / "data_actions").glob("*.custom.json")}
    assert committed == fresh, "run: python -m middleware export-actions " \
        f"--base-url {COMMITTED[0]} --auth {COMMITTED[1]}"


def test_export_has_exactly_the_keys_of_a_real_genesys_export() -> None:
    """Top-level and config keys match real exports; apikey auth templates the header."""
    contract = load_contracts()["create-callback"]
    definition = action_definition(contract, "https://svc.example.com", "apikey")
    assert set(definition) == EXPORT_KEYS
    assert set(definition["config"]["request"]) == {
        "requestUrlTemplate", "requestType", "headers", "requestTemplate"}
    assert set(definition["config"]["response"]) == {
        "translationMap", "translationMapDefaults", "successTemplate"}
    assert definition["config"]["request"]["headers"]["X-API-Key"] == "${credentials.apiKey}"
    assert definition["config"]["request"]["requestTemplate"] == "${input.rawRequest}"
    assert json.loads(render(definition)) == definition


def test_reference_exports_share_our_top_level_keys() -> None:
    """Every real export in shared/reference has the same top-level keys as ours."""
    folder = ROOT.parent / "shared" / "reference" / "data-actions"
    files = sorted(folder.glob("*.custom.json"))
    if not files:
        pytest.skip("shared/reference is not beside this checkout")
    for path in files:
        assert set(json.loads(path.read_text())) == EXPORT_KEYS, path.name


def test_unknown_field_is_refused_naming_it() -> None:
    """An unexpected field is a contract violation that names the field."""
    with pytest.raises(ContractViolation, match="colour"):
        load_contracts()["create-callback"].parse({"colour": "red"})


def test_empty_optional_fields_mean_absent() -> None:
    """Scripts send every field; an empty string is dropped before validation."""
    fields = load_contracts()["create-callback"].parse({
        "customerNumber": "+14155552671", "agentId": "a", "queueId": "q",
        "consentGiven": True, "requestedTime": "", "priority": ""})
    assert "requestedTime" not in fields and "priority" not in fields


def test_answer_fills_every_output_field() -> None:
    """An answer carries every declared output field, typed, with retryable from the reason."""
    contract = load_contracts()["create-callback"]
    out = contract.answer(outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", requestId="r")
    assert set(out) == set(contract.output_schema["properties"])
    assert out["retryable"] is True and out["reassigned"] is False and out["callbackId"] == ""


def _sample(prop: dict[str, Any]) -> Any:
    """A value a full input would send for one property."""
    if "enum" in prop:
        return next(v for v in prop["enum"] if v != "")
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True}[prop["type"]]


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_exported_input_schema_takes_a_full_input_and_empty_optional_strings(
        action: str) -> None:
    """Genesys validates inputs against the imported draft-04 schema before calling us, and
    agent scripts send "" for unset optional fields: both must pass."""
    definition = action_definition(load_contracts()[action], *COMMITTED)
    schema = definition["contract"]["input"]["inputSchema"]
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert definition["contract"]["output"]["successSchema"]["$schema"] == schema["$schema"]
    validator = jsonschema.Draft4Validator(schema)
    full = {name: _sample(prop) for name, prop in schema["properties"].items()}
    assert list(validator.iter_errors(full)) == []
    required = set(schema.get("required", []))
    empty = {**full, **{name: "" for name, prop in schema["properties"].items()
                        if prop["type"] == "string" and name not in required}}
    errors = [e.message for e in validator.iter_errors(empty)]
    assert errors == []


def test_secure_export_marks_every_action_secure(tmp_path: Path) -> None:
    """export-actions --secure writes secure: true."""
    export_actions(load_contracts(), *COMMITTED, tmp_path, secure=True)
    files = list(tmp_path.glob("*.custom.json"))
    assert files and all(json.loads(p.read_text())["secure"] is True for p in files)


def test_unknown_consent_source_is_a_400_naming_the_allowed_values(service: Any) -> None:
    """consentSource "IVR" is refused before anything runs, with the values a flow may send."""
    from tests.conftest import create_body
    result = service.action("create-callback", create_body(consentSource="IVR"))
    assert result.status_code == 400
    description = result.json["description"]
    assert "consentSource" in description and "IVR_KEYPRESS" in description
    assert "EMAIL" in description
