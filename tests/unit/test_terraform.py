"""terraform/: equals a fresh export, parses as HCL, and carries exactly the schemas' contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hcl2
import pytest

from middleware.config import SetupConfig
from middleware.contracts import load_contracts
from middleware.web.terraform import hcl_string, terraform_files
from tests.conftest import ROOT
from tests.system.test_contracts import COMMITTED

TERRAFORM = ROOT / "terraform"


def _fresh() -> dict[str, str]:
    setup = SetupConfig.from_env({})
    return terraform_files(load_contracts(), *COMMITTED, setup.integration_name,
                           setup.aws_region())


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted and escaped: read them back as values."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value.replace("$${", "${").replace("%%{", "%{"))
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _jsonencoded(expression: str) -> Any:
    """The value inside ``${jsonencode(...)}``, parsed as HCL again."""
    assert expression.startswith("${jsonencode(") and expression.endswith(")}")
    inner = expression[len("${jsonencode("):-2]
    return _unquote(hcl2.loads(f"value = {inner}\n")["value"])


def _actions() -> dict[str, dict[str, Any]]:
    parsed = hcl2.loads((TERRAFORM / "actions.tf").read_text())
    out = {}
    for resource in parsed["resource"]:
        for kind, named in resource.items():
            assert _unquote(kind) == "genesyscloud_integration_action"
            for name, body in named.items():
                out[_unquote(name)] = body
    return out


def test_committed_terraform_equals_a_fresh_export() -> None:
    """The files in terraform/ are exactly what export-terraform writes today."""
    committed = {p.name: p.read_text() for p in TERRAFORM.glob("*.tf")}
    assert committed == _fresh(), "run: python -m middleware export-terraform " \
        f"--base-url {COMMITTED[0]} --auth {COMMITTED[1]}"


@pytest.mark.parametrize("name", sorted(p.name for p in TERRAFORM.glob("*.tf")))
def test_every_file_parses_as_hcl(name: str) -> None:
    """python-hcl2 reads each file without error."""
    assert hcl2.loads((TERRAFORM / name).read_text())


def test_each_contract_equals_the_schema_it_came_from() -> None:
    """contract_input/contract_output decode to schemas/<action>.input/output.json."""
    actions = _actions()
    contracts = load_contracts()
    assert set(actions) == {c.replace("-", "_") for c in contracts}
    for action, contract in contracts.items():
        body = actions[action.replace("-", "_")]
        assert _jsonencoded(body["contract_input"]) == json.loads(
            (ROOT / "schemas" / f"{action}.input.json").read_text()), action
        assert _jsonencoded(body["contract_output"]) == json.loads(
            (ROOT / "schemas" / f"{action}.output.json").read_text()), action
        assert _unquote(body["name"]) == contract.display_name
        assert body["config_timeout_seconds"] == 10
        request = _unquote(body["config_request"])[0]
        assert request["request_template"] == "${input.rawRequest}"
        assert request["request_url_template"] == f"{COMMITTED[0]}/v1/actions/{action}"


def test_no_secret_is_in_the_files() -> None:
    """The credential's fields are variables; no configured secret value appears."""
    text = "".join(p.read_text() for p in TERRAFORM.glob("*.tf"))
    assert "var.action_basic_password" in text
    integration = _unquote(hcl2.loads((TERRAFORM / "integration.tf").read_text()))
    credential = integration["resource"][0]["genesyscloud_integration_credential"]
    fields = credential["callback_middleware"]["fields"]
    assert fields == {"userName": "${var.action_basic_user}",
                      "password": "${var.action_basic_password}"}
    variables = hcl2.loads((TERRAFORM / "variables.tf").read_text())["variable"]
    assert all(v[name]["sensitive"] is True for v in variables for name in v)


def test_region_follows_genesys_region(tmp_path: Path) -> None:
    """GENESYS_REGION mypurecloud.de gives the provider eu-central-1."""
    setup = SetupConfig.from_env({"GENESYS_REGION": "mypurecloud.de"})
    files = terraform_files(load_contracts(), *COMMITTED, setup.integration_name,
                            setup.aws_region())
    assert 'aws_region = "eu-central-1"' in files["provider.tf"]


def test_strings_are_literal_in_hcl() -> None:
    """Interpolation and directive markers in a text are escaped, quotes and newlines too."""
    text = 'say "${x}" %{if} \\ \n'
    assert _unquote(hcl2.loads(f"v = {hcl_string(text)}\n")["v"]) == text
