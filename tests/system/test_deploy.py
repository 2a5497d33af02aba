"""deploy/: the alert rules and the live /metrics pass promtool; the dashboard and rules only
name metrics the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import requests

from middleware.app import build_services, outbox_stats
from middleware.genesys.client import new_session
from middleware.metrics import serve_worker_metrics
from middleware.store import connect
from tests.conftest import (
    AUTH,
    ROOT,
    Gunicorn,
    RedisServer,
    Service,
    Simulator,
    create_body,
    free_port,
)

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "callback-middleware.json"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool (scripts/setup.sh installs the prometheus package)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed; scripts/test installs it")
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=60)


def test_alert_rules_pass_promtool() -> None:
    """promtool check rules accepts deploy/prometheus/alerts.yml."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.gunicorn
def test_live_web_metrics_pass_promtool(gunicorn_service: Gunicorn) -> None:
    """The /metrics of a gunicorn instance (two workers, after traffic) lints clean."""
    requests.post(f"{gunicorn_service.url}/v1/actions/create-callback",
                  json=create_body(requestedTime=None), headers=AUTH, timeout=10)
    text = requests.get(f"{gunicorn_service.url}/metrics", headers=AUTH, timeout=10).text
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cbm_answers_total" in text


def test_live_worker_metrics_pass_promtool(service: Service, redis_server: RedisServer) -> None:
    """The worker's exposition (counters and shared-state gauges) lints clean."""
    services = build_services(service.config, redis_client=connect(redis_server.url, 1.0),
                              http=new_session(), clock=service.clock)
    port = free_port()
    stop = serve_worker_metrics(services.metrics, outbox_stats(services), port, "127.0.0.1")
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop()
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names(service: Service) -> set[str]:
    """Every metric name the web (after one create) and the worker expose."""
    service.action("create-callback", create_body())
    text = service.client.simulate_get("/metrics", headers=AUTH).text
    names = set(re.findall(r"^([a-z_]+)(?:\{| )", text, re.M))
    return names | {"cbm_outbox_depth", "cbm_outbox_oldest_age_seconds", "cbm_dead_letters"}


def test_dashboard_and_rules_name_only_exported_metrics(service: Service, sim: Simulator
                                                        ) -> None:
    """A renamed metric cannot silently blank a panel or an alert."""
    names = exported_names(service)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(RULES.read_text())
    used = {n for e in exprs for n in re.findall(r"\bcbm_[a-z_]+", e)}
    assert used, "no cbm_ metric referenced"
    assert used <= names, used - names
