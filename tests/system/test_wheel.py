"""The built wheel is the whole product: installed into a fresh virtualenv, away from the
checkout, it serves a create, runs the worker and exports the data action files."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    AUTH,
    ROOT,
    RedisServer,
    Simulator,
    create_body,
    free_port,
    service_env,
    wait_for,
)
from tests.system.test_contracts import COMMITTED

pytestmark = pytest.mark.wheel


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only the wheel and its dependencies (constraints.txt)."""
    where = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
          "-q", "-w", str(where / "dist"), str(ROOT)], cwd=where)
    wheel = next((where / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "middleware/schemas/create-callback.input.json" in names
    _run([sys.executable, "-m", "venv", str(where / "venv")], cwd=where)
    python = where / "venv" / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "-c", str(ROOT / "constraints.txt"), str(wheel)], cwd=where)
    return python


def test_installed_wheel_serves_works_and_exports(
        installed: Path, redis_client: object, redis_server: RedisServer,
        live_sim: Simulator, tmp_path: Path) -> None:
    """From the wheel alone: gunicorn answers CREATED, one worker round runs, and
    export-actions writes files byte-equal to the committed data_actions/."""
    bin_dir = installed.parent
    # Outside the checkout, with nothing of it on the path: only the installed files count.
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
           **service_env(redis_server.url, live_sim.url)}
    probe = _run([str(installed), "-c", "import middleware; print(middleware.__file__)"],
                 cwd=tmp_path, env=env)
    assert str(bin_dir.parent) in probe.stdout
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    web = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "-c", "python:middleware.gunicorn_conf", "-w", "1",
         "-b", f"127.0.0.1:{port}", "middleware.wsgi:app"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).ok, 30, "wheel gunicorn")
        answer = requests.post(f"{url}/v1/actions/create-callback", headers=AUTH, timeout=10,
                               json=create_body(requestedTime=None)).json()
        assert answer["outcome"] == "CREATED", answer
    finally:
        web.terminate()
        web.wait(15)
        log.close()
    worker = _run([str(bin_dir / "callback-middleware"), "worker", "--once"], cwd=tmp_path,
                  env=env, timeout=120)
    assert "failed" not in worker.stdout and "outbox" in worker.stdout, worker.stdout
    out = tmp_path / "actions"
    _run([str(bin_dir / "callback-middleware"), "export-actions", "--base-url", COMMITTED[0],
          "--auth", COMMITTED[1], "--out", str(out)], cwd=tmp_path, env=env)
    committed = sorted(p.name for p in (ROOT / "data_actions").glob("*.json"))
    assert sorted(p.name for p in out.glob("*.json")) == committed
    _, mismatch, errors = filecmp.cmpfiles(ROOT / "data_actions", out, committed,
                                           shallow=False)
    assert (mismatch, errors) == ([], []), (mismatch, errors)
