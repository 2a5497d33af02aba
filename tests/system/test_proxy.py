"""The front door (SPEC §9): the shipped nginx configuration in front of real gunicorn.

nginx (Debian's package; scripts/setup.sh installs it) runs deploy/nginx/nginx.conf with a
certificate made on the spot, on loopback. Through it, 256 slow clients do not delay
other callers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    BASIC_PASSWORD,
    BASIC_USER,
    ROOT,
    Gunicorn,
    RedisServer,
    Simulator,
    assert_no_numbers,
    free_port,
    service_env,
    start_gunicorn,
    wait_for,
)
from tests.slowclients import Attack, Probe, basic

pytestmark = pytest.mark.gunicorn

ATTACKERS = 256
ATTACK_S = 30.0


@dataclass
class Proxy:
    """nginx with the shipped configuration, and the CA file that verifies it."""

    url: str
    ca_file: str
    process: subprocess.Popen[bytes]
    log: Path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def start_nginx(upstream: str, directory: Path) -> Proxy:
    """Fill in deploy/nginx/nginx.conf's placeholders and run nginx in the foreground."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is not installed; scripts/test installs it")
    cert, key = make_certificate(directory)
    port = free_port()
    text = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    for placeholder, value in (("@LISTEN@", f"127.0.0.1:{port}"), ("@UPSTREAM@", upstream),
                               ("@CERT@", str(cert)), ("@KEY@", str(key)),
                               ("@RUNTIME_DIR@", str(directory))):
        text = text.replace(placeholder, value)
    assert not re.search(r"@[A-Z_]+@", text), "a placeholder was left unfilled"
    conf = directory / "nginx.conf"
    conf.write_text(text)
    log = directory / "nginx.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-c", str(conf), "-e", "stderr", "-p",
                                    str(directory), "-g", "daemon off;"],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1, verify=str(cert)).ok,
                 15, "nginx")
    except TimeoutError:
        process.kill()
        raise AssertionError(f"nginx did not start:\n{log.read_text()[-3000:]}") from None
    return Proxy(url, str(cert), process, log)


@pytest.fixture
def front_door(redis_client: object, redis_server: RedisServer, live_sim: Simulator,
               tmp_path: Path) -> Iterator[tuple[Proxy, Gunicorn]]:
    """gunicorn (the shipped config) on loopback behind nginx (the shipped config)."""
    service = start_gunicorn(service_env(redis_server.url, live_sim.url),
                             tmp_path / "gunicorn.log")
    proxy = start_nginx(service.url.removeprefix("http://"), tmp_path)
    yield proxy, service
    proxy.process.terminate()
    proxy.process.wait(10)
    service.process.terminate()
    service.process.wait(15)
    assert_no_numbers(proxy.log.read_text(), "nginx's log")


def test_requests_pass_through_tls_with_their_inin_headers(
        front_door: tuple[Proxy, Gunicorn]) -> None:
    """An action answers through TLS; ININ-Correlation-Id reaches the service."""
    proxy, _ = front_door
    correlation = str(uuid.uuid4())
    resp = requests.post(f"{proxy.url}/v1/actions/find-pending-callbacks",
                         json={"customerNumber": "+14155552671"},
                         auth=(BASIC_USER, BASIC_PASSWORD), verify=proxy.ca_file, timeout=10,
                         headers={"ININ-Correlation-Id": correlation})
    assert resp.status_code == 200, resp.text
    assert resp.json()["requestId"] == correlation
    assert resp.headers["X-Request-Id"] == correlation


def test_body_over_the_cap_is_refused_at_the_door_in_the_error_body(
        front_door: tuple[Proxy, Gunicorn]) -> None:
    """A body over 64 KiB gets 413 from nginx, in the SPEC error shape."""
    proxy, _ = front_door
    resp = requests.post(f"{proxy.url}/v1/actions/find-pending-callbacks",
                         data=b"{" + b" " * 70_000 + b"}", verify=proxy.ca_file, timeout=10,
                         auth=(BASIC_USER, BASIC_PASSWORD),
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert set(resp.json()) == {"title", "description", "requestId"}


def test_slow_clients_do_not_delay_other_callers(front_door: tuple[Proxy, Gunicorn]) -> None:
    """256 connections trickling headers or bodies (a byte every 10 s) for 30 s: the other
    callers' p99 stays under 1 s and none of them fails."""
    proxy, _ = front_door
    attack = Attack(proxy.url, basic(BASIC_USER, BASIC_PASSWORD), ATTACKERS, 10.0,
                    ca_file=proxy.ca_file).start()
    try:
        time.sleep(3)  # every attacker connected and stalling
        probe = Probe(proxy.url, (BASIC_USER, BASIC_PASSWORD), timeout_s=10,
                      verify=proxy.ca_file)
        probe.run_for(ATTACK_S)
    finally:
        attack.close()
    assert attack.opened >= ATTACKERS
    assert len(probe.latencies) >= 50
    assert probe.failures == 0
    assert probe.quantile(0.99) < 1.0, sorted(probe.latencies)[-5:]
