"""Configuration: read once, every bad value stops start-up naming its variable."""

from __future__ import annotations

import re

import pytest

from middleware.config import SETTINGS, Config, ConfigError
from tests.conftest import ROOT

BASE = {
    "GENESYS_CLIENT_ID": "id",
    "GENESYS_CLIENT_SECRET": "secret",
    "ACTION_API_KEYS": "k1",
    "PII_KEYS": "p1",
}


def test_minimal_environment_gives_documented_defaults() -> None:
    """With only the required variables, every other setting takes its default."""
    config = Config.from_env(BASE)
    assert config.genesys_api_url == "https://api.mypurecloud.com"
    assert config.genesys_login_url == "https://login.mypurecloud.com"
    assert config.request_deadline_s == 5.0
    assert config.default_country == "US"


def test_region_derives_api_and_login_hosts() -> None:
    """GENESYS_REGION picks the api. and login. hosts of that region."""
    config = Config.from_env({**BASE, "GENESYS_REGION": "mypurecloud.de"})
    assert config.genesys_api_url == "https://api.mypurecloud.de"
    assert config.genesys_login_url == "https://login.mypurecloud.de"


@pytest.mark.parametrize("missing", ["GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET", "PII_KEYS"])
def test_missing_required_variable_is_named(missing: str) -> None:
    """A required variable that is absent stops start-up with its name."""
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        Config.from_env(env)


@pytest.mark.parametrize(("name", "value"), [
    ("REQUEST_DEADLINE_MS", "soon"),
    ("MIN_LEAD_MINUTES", "0"),
    ("DEFAULT_COUNTRY", "USA"),
    ("GENESYS_API_URL", "ftp://x"),
    ("REDIS_URL", "localhost:6379"),
    ("ACTION_BASIC_CREDENTIALS", "user-without-password"),
    ("LOG_LEVEL", "LOUD"),
])
def test_malformed_value_is_named(name: str, value: str) -> None:
    """A malformed value stops start-up with the variable's name."""
    with pytest.raises(ConfigError, match=name):
        Config.from_env({**BASE, name: value})


def test_service_refuses_to_run_without_credentials() -> None:
    """No Basic credential and no API key: the service would be open, so it will not start."""
    env = {k: v for k, v in BASE.items() if k != "ACTION_API_KEYS"}
    with pytest.raises(ConfigError, match="ACTION_BASIC_CREDENTIALS or ACTION_API_KEYS"):
        Config.from_env(env)


def test_secrets_stay_out_of_repr() -> None:
    """Printing the config (e.g. in a crash report) shows no secret."""
    text = repr(Config.from_env({**BASE, "GENESYS_CLIENT_SECRET": "s3cr3t-value"}))
    assert "s3cr3t-value" not in text
    assert "p1" not in re.sub(r"[a-z_]+=", "", text)


def test_readme_documents_every_setting() -> None:
    """Each setting has a row in the README's configuration table, with its default."""
    readme = (ROOT / "README.md").read_text()
    for setting in SETTINGS:
        row = re.search(rf"^\| `{setting.name}` \|([^|]*)\|", readme, re.M)
        assert row, f"README has no row for {setting.name}"
        default = setting.default if setting.default is not None else "required"
        assert (default or "(empty)") in row.group(1), f"{setting.name} default not documented"
