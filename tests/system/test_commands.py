"""Commands a person can use: the right program name, one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from middleware.__main__ import run as main_run
from middleware.clock import FixedClock
from middleware.config import SETTINGS
from tests.conftest import PII_KEY, ROOT, T0, RedisServer, Service, free_port, service_env


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command of the package with exactly ``env`` added."""
    return subprocess.run(list(args), cwd=ROOT, env={**os.environ, **env}, text=True,
                          capture_output=True, timeout=60, check=False)


def test_help_names_the_program_as_it_was_called() -> None:
    """`python -m middleware --help` and `callback-middleware --help` each name themselves."""
    module = run(sys.executable, "-m", "middleware", "--help", env={})
    assert module.stdout.startswith("usage: python -m middleware")
    script = Path(sys.executable).parent / "callback-middleware"
    entry = run(str(script), "--help", env={})
    assert entry.stdout.startswith("usage: callback-middleware")


def test_unreachable_redis_is_one_line_not_a_traceback() -> None:
    """dead-letters list against a Redis nobody runs: exit 2 and one line naming Redis."""
    env = service_env(f"redis://127.0.0.1:{free_port()}/0", "http://127.0.0.1:9")
    result = run(sys.executable, "-m", "middleware", "dead-letters", "list", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redis error"), result.stderr
    assert "Traceback" not in result.stderr


# -- in-process: what each command needs, and what it says -----------------------------

READ_ONLY_ENV_NAMES = ("REDIS_URL", "PII_KEYS")


def run_here(argv: list[str], environ: dict[str, str], clock: FixedClock | None = None
             ) -> int:
    """Run a command in this process on exactly ``environ`` (nothing of os.environ)."""
    return main_run(argv, environ, clock or FixedClock(T0), own_logging=False)


def read_only_env(redis_server: RedisServer) -> dict[str, str]:
    """Only the two variables a read-only command needs."""
    return {"REDIS_URL": redis_server.url, "PII_KEYS": PII_KEY}


def test_consent_evidence_needs_only_redis_and_pii_keys(
        service: Service, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A consent recorded through the service is printed by a command that was given no
    Genesys or action credentials."""
    answer = service.action("record-consent", {
        "customerNumber": "+14155552671", "consentSource": "IVR_KEYPRESS",
        "consentText": "Press 1 to be called back (script v3)"}).json
    assert answer["outcome"] == "RECORDED", answer
    capsys.readouterr()
    status = run_here(["consent-evidence", "--number", "+1 415 555 2671", "--format", "json"],
                      read_only_env(redis_server), service.clock)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "IVR_KEYPRESS" in out and "script v3" in out, out


def test_dead_letters_list_needs_only_redis_and_pii_keys(
        redis_client: redis.Redis, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letters list` on an empty outbox: exit 0, no credential asked for."""
    status = run_here(["dead-letters", "list"], read_only_env(redis_server))
    out, err = capsys.readouterr()
    assert (status, err) == (0, ""), err
    assert out.strip().endswith("0 dead letter(s)"), out


def test_check_config_read_only_needs_only_redis_and_pii_keys(
        redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`check-config --read-only` passes on the two variables; plain `check-config` checks
    the service's settings and names what the service would lack."""
    assert run_here(["check-config", "--read-only"], read_only_env(redis_server)) == 0
    assert capsys.readouterr().out.strip() == "configuration ok"
    assert run_here(["check-config"], read_only_env(redis_server)) == 2
    err = capsys.readouterr().err
    for name in ("GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET", "ACTION_API_KEYS"):
        assert name in err, err


@pytest.mark.parametrize("argv", [["consent-evidence", "--number", "+14155552671"],
                                  ["dead-letters", "list"], ["check-config", "--read-only"]])
def test_read_only_command_without_pii_keys_names_it(
        argv: list[str], redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without PII_KEYS a read-only command stops, naming it, and only it."""
    assert run_here(argv, {"REDIS_URL": redis_server.url}) == 2
    err = capsys.readouterr().err
    assert "PII_KEYS" in err and "GENESYS" not in err, err


def test_every_bad_setting_is_named_in_one_run(
        redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Two bad settings (and a missing one) are all reported by one `check-config`, one
    line each, each naming its variable."""
    env = {"REDIS_URL": redis_server.url, "GENESYS_CLIENT_ID": "id",
           "ACTION_API_KEYS": "k", "PII_KEYS": " , ", "DEFAULT_COUNTRY": "XX",
           "CALLING_HOURS_FILE": "/nonexistent/calling-hours.json"}
    assert run_here(["check-config"], env) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    for name in ("PII_KEYS", "DEFAULT_COUNTRY", "CALLING_HOURS_FILE", "GENESYS_CLIENT_SECRET"):
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert all(line.startswith("configuration error: ") for line in lines), lines


@pytest.mark.parametrize(("command", "names"), [
    ("consent-evidence", READ_ONLY_ENV_NAMES),
    ("dead-letters", READ_ONLY_ENV_NAMES),
    ("check-config", ("GENESYS_CLIENT_ID", "PII_KEYS", "CALLING_HOURS_FILE")),
    ("worker", ("GENESYS_CLIENT_ID", "OUTBOX_INTERVAL_SECONDS")),
    ("install-actions", ("GENESYS_CLIENT_SECRET", "GENESYS_INTEGRATION_NAME")),
    ("export-terraform", ("GENESYS_REGION", "GENESYS_INTEGRATION_NAME")),
    ("import-callbacks", ("GENESYS_CLIENT_ID", "PII_KEYS")),
    ("export-actions", ()),
])
def test_help_lists_the_variables_and_an_example(
        command: str, names: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Each command's --help names the variables it reads and shows a call of it."""
    with pytest.raises(SystemExit) as stopped:
        run_here([command, "--help"], {})
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    environment = out[out.index("environment:"):out.index("example:")]
    for name in names:
        assert name in environment, (name, out)
    known = {s.name for s in SETTINGS}
    assert set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", environment)) <= known, environment
    assert f"middleware {command}" in out[out.index("example:"):], out


def test_top_level_help_shows_a_call_of_every_command(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """`--help` of the program lists every command and an example line calling each."""
    with pytest.raises(SystemExit) as stopped:
        run_here(["--help"], {})
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    examples = out[out.index("examples"):]
    for command in ("export-actions", "worker", "check-config", "consent-evidence",
                    "dead-letters", "install-actions", "export-terraform", "import-callbacks"):
        assert re.search(rf"^  python -m middleware {command}\b", examples, re.M), (command, out)


def test_dead_letters_replay_needs_the_workers_settings(
        redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A replay hands callbacks to the worker, so on the read-only pair it stops naming
    what the worker would lack, while `list` on the same environment runs."""
    assert run_here(["dead-letters", "replay", "--all"], read_only_env(redis_server)) == 2
    err = capsys.readouterr().err
    for name in ("GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET", "ACTION_API_KEYS"):
        assert name in err, err
    assert run_here(["dead-letters", "list"], read_only_env(redis_server)) == 0
    assert capsys.readouterr().out.strip().endswith("0 dead letter(s)")


def test_dead_letters_replay_on_the_full_settings_runs(
        redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """With the worker's settings a replay of nothing says so and succeeds; naming nothing
    is a usage error, an unknown token a failure."""
    env = service_env(redis_server.url, "http://127.0.0.1:9")
    assert run_here(["dead-letters", "replay", "--all"], env) == 0
    assert capsys.readouterr().out.strip() == "0 dead letter(s): nothing to replay"
    assert run_here(["dead-letters", "replay"], env) == 2
    assert "name the tokens to replay, or --all" in capsys.readouterr().err
    assert run_here(["dead-letters", "replay", "no-such-token"], env) == 1
    assert capsys.readouterr().out.strip() == "replayed 0 of 1"


PROFILES_OK = '{"agents": {"a": {"timeZone": "Europe/London"}}}'


@pytest.mark.parametrize(("variable", "content"), [
    ("CALLING_HOURS_FILE", None), ("CALLING_HOURS_FILE", "{not json"),
    ("CALLING_HOURS_FILE", '{"rules": []}'),
    ("AGENT_PROFILES_FILE", None), ("AGENT_PROFILES_FILE", "{not json"),
    ("AGENT_PROFILES_FILE", '{"agents": {"a": {"timeZone": "Mars/Olympus"}}}'),
])
def test_check_config_refuses_a_missing_or_malformed_data_file(
        variable: str, content: str | None, tmp_path: Path, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A data file start-up could not read makes `check-config` fail, one line naming the
    variable; the same environment with a good file passes."""
    path = tmp_path / "data.json"
    if content is not None:
        path.write_text(content)
    env = service_env(redis_server.url, "http://127.0.0.1:9", **{variable: str(path)})
    assert run_here(["check-config"], env) == 2
    out, err = capsys.readouterr()
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {variable}="), lines
    assert lines[0].count(variable) == 1, lines
    good = (ROOT / "middleware" / "data" / "calling_hours.json").read_text() \
        if variable == "CALLING_HOURS_FILE" else PROFILES_OK
    path.write_text(good)
    assert run_here(["check-config"], env) == 0
    assert capsys.readouterr().out.strip() == "configuration ok"


def test_read_only_check_ignores_the_services_data_files(
        redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`check-config --read-only` checks what the read-only commands read, not the data
    files only the service and the worker load."""
    env = {**read_only_env(redis_server), "CALLING_HOURS_FILE": "/nonexistent",
           "AGENT_PROFILES_FILE": "/nonexistent"}
    assert run_here(["check-config", "--read-only"], env) == 0
    assert run_here(["check-config"], env) == 2
    err = capsys.readouterr().err
    assert "CALLING_HOURS_FILE='/nonexistent'" in err and \
        "AGENT_PROFILES_FILE='/nonexistent'" in err, err


@pytest.mark.parametrize("argv", [
    ["consent-evidence", "--number", "+14155552671"], ["dead-letters", "list"],
    ["dead-letters", "replay", "--all"],
    ["install-actions", "--base-url", "https://cb.example.com", "--auth", "apikey",
     "--dry-run"],
])
def test_every_command_on_an_unreachable_redis_says_so_in_one_line(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Each command that opens Redis, pointed at one nobody runs: exit 2, one line."""
    env = service_env(f"redis://127.0.0.1:{free_port()}/0", "http://127.0.0.1:9")
    assert run_here(argv, env) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("redis error (redis://127.0.0.1:"), err
