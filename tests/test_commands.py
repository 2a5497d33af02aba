"""Commands a person can use: the right program name, one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, free_port, service_env


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
