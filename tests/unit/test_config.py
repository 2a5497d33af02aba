"""Configuration: read once, every bad value stops start-up naming its variable."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from middleware.config import SETTINGS, Config, ConfigError, ReadConfig
from tests.conftest import ROOT, service_env

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


def test_two_bad_settings_are_both_named() -> None:
    """Every problem is reported at once, not the first one only."""
    with pytest.raises(ConfigError) as raised:
        Config.from_env({**BASE, "REQUEST_DEADLINE_MS": "soon", "DEFAULT_COUNTRY": "XX"})
    problems = raised.value.problems
    assert len(problems) == 2, problems
    assert sorted(p.split("=")[0] for p in problems) == ["DEFAULT_COUNTRY",
                                                         "REQUEST_DEADLINE_MS"], problems


@pytest.mark.parametrize("content", ["{not json", "[]", '{"rules": [{"id": "x"}]}',
                                     '{"rules": []}'])
def test_malformed_calling_hours_file_is_named(tmp_path: Path, content: str) -> None:
    """The file is read by the service's own loader: what fails there fails here."""
    path = tmp_path / "hours.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="CALLING_HOURS_FILE"):
        Config.from_env({**BASE, "CALLING_HOURS_FILE": str(path)})


@pytest.mark.parametrize("content", [
    "{not json", "[]", '{"agents": {"a": {"timeZone": "Mars/Olympus"}}}',
    '{"agents": {"a": {"team": "nope"}}}'])
def test_malformed_agent_profiles_file_is_named(tmp_path: Path, content: str) -> None:
    """A profile file the scheduler could not read stops start-up, naming the variable."""
    path = tmp_path / "profiles.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="AGENT_PROFILES_FILE"):
        Config.from_env({**BASE, "AGENT_PROFILES_FILE": str(path)})


def test_read_config_needs_only_pii_keys_and_reads_the_same_fields() -> None:
    """The read-only commands' config reads each variable exactly as the service's does."""
    env = {"PII_KEYS": "p1,p2", "REDIS_URL": "redis://r:1/2", "DEFAULT_COUNTRY": "gb"}
    small = ReadConfig.from_env(env)
    full = Config.from_env({**BASE, **env})
    assert {f.name for f in fields(ReadConfig)} < {f.name for f in fields(Config)}
    for f in fields(ReadConfig):
        assert getattr(small, f.name) == getattr(full, f.name), f.name
    with pytest.raises(ConfigError, match="PII_KEYS"):
        ReadConfig.from_env({"PII_KEYS": " , "})


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "99999"), ("WORKER_METRICS_PORT", "70000"),
    ("REDIS_URL", "redis://127.0.0.1:notaport/0"),
])
def test_ports_out_of_range_are_refused_naming_the_variable(name: str, value: str) -> None:
    """A port gunicorn or redis-py would die on later stops the configuration now."""
    with pytest.raises(ConfigError, match=name):
        Config.from_env(service_env("redis://127.0.0.1:6379/0", "http://127.0.0.1:1",
                                    **{name: value}))
