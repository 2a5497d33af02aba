"""Prometheus metrics by the book: exact per-instance counts, ordered buckets, closed labels,
zeros from the start; the worker serves the shared-state gauges."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from middleware.app import build_services, outbox_stats
from middleware.contracts import ACTIONS
from middleware.genesys.client import new_session, route_template
from middleware.metrics import Metrics, serve_worker_metrics
from middleware.store import connect
from tests.conftest import (
    API_KEY,
    AUTH,
    DEMO_QUEUE,
    RedisServer,
    Service,
    Simulator,
    create_body,
    free_port,
    service_env,
    start_gunicorn,
    when,
)


def scrape(service: Service) -> str:
    """The in-process service's /metrics text."""
    result = service.client.simulate_get("/metrics", headers={"X-API-Key": API_KEY})
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    return result.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels (the format must parse)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value, or ``None`` when the series is absent."""
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_requests_outcomes_and_genesys_calls_are_counted(service: Service,
                                                         sim: Simulator) -> None:
    """A create and a duplicate show up by outcome and reason, with latency and Genesys calls."""
    service.action("create-callback", create_body())
    service.action("create-callback", create_body(requestedTime=when("2026-11-23T20:00:00Z")))
    text = scrape(service)
    assert value(text, "cbm_requests_total", action="create-callback", outcome="CREATED",
                 reason="OK", status="200") == 1
    assert value(text, "cbm_requests_total", action="create-callback", outcome="DUPLICATE",
                 reason="DUPLICATE_PENDING", status="200") == 1
    assert value(text, "cbm_answers_total", action="create-callback", outcome="CREATED") == 1
    assert value(text, "cbm_request_duration_seconds_count", action="create-callback") == 2
    assert value(text, "cbm_genesys_calls_total", method="POST",
                 route="/api/v2/conversations/callbacks", status="200") == 1
    assert value(text, "cbm_genesys_token_fetches_total") == 1
    assert "# TYPE cbm_request_duration_seconds histogram" in text


def test_every_action_outcome_pair_is_present_at_zero_from_the_start(service: Service) -> None:
    """A fresh instance shows each action x outcome counter at 0, and the Genesys error ones."""
    text = scrape(service)
    for action, contract in service_contracts().items():
        for outcome in contract:
            assert value(text, "cbm_answers_total", action=action, outcome=outcome) == 0, (
                action, outcome)
        assert value(text, "cbm_request_duration_seconds_count", action=action) == 0
    assert value(text, "cbm_genesys_rate_limited_total") == 0
    assert value(text, "cbm_genesys_errors_total", kind="5xx") == 0
    assert value(text, "cbm_genesys_errors_total", kind="network") == 0


def service_contracts() -> dict[str, list[str]]:
    """Each action's outcomes, from its output schema."""
    from middleware.contracts import load_contracts
    return {a: list(c.output_schema["properties"]["outcome"]["enum"])
            for a, c in load_contracts().items() if a in ACTIONS}


def test_histogram_buckets_are_in_increasing_order(service: Service, sim: Simulator) -> None:
    """le values rise numerically, +Inf last."""
    service.action("find-pending-callbacks", {"customerNumber": "+14155552671"})
    lines = [line for line in scrape(service).splitlines()
             if line.startswith('cbm_request_duration_seconds_bucket{action="find-pending')]
    bounds = [line.split('le="')[1].split('"')[0] for line in lines]
    assert bounds[-1] == "+Inf"
    numbers = [float(b) for b in bounds]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_large_counts_are_exact() -> None:
    """Values are not rounded to six digits: 123,456,789 reads back as itself."""
    metrics = Metrics()
    metrics.requests.labels("create-callback", "CREATED", "OK", "200").inc(123_456_789)
    text = metrics.render().decode()
    assert value(text, "cbm_requests_total", action="create-callback", outcome="CREATED",
                 reason="OK", status="200") == 123_456_789


def test_genesys_routes_are_labelled_by_template() -> None:
    """Ids from callers never reach a label: they fold into {id}, unknown paths into other."""
    assert route_template("/api/v2/routing/queues/Callbacks") == "/api/v2/routing/queues/{id}"
    assert route_template("/api/v2/users/agentELBL") == "/api/v2/users/{id}"
    assert route_template("/api/v2/conversations/callbacks/bulk/disconnect") == \
        "/api/v2/conversations/callbacks/bulk/disconnect"
    assert route_template("/api/v2/users/x/queues") == "/api/v2/users/{id}/queues"
    assert route_template("/api/v2/somewhere/14155552671") == "other"


def test_caller_ids_do_not_grow_the_series(service: Service, sim: Simulator) -> None:
    """Thirty creates with made-up queue ids leave the set of series as one such call does."""
    service.action("create-callback", create_body(queueId="Callbacks"))
    scrape(service)  # the scrape's own series exist from here on
    before = set(samples(scrape(service)))
    for i in range(30):
        service.action("create-callback", create_body(
            queueId=f"Queue{i}x", customerNumber=f"+1415555{2600 + i:04d}"))
    text = scrape(service)
    assert set(samples(text)) == before
    assert "Callbacks" not in text and "Queue1" not in text
    assert DEMO_QUEUE not in text


def test_counts_are_per_instance(make_service: Callable[..., Service], sim: Simulator) -> None:
    """What one instance counted is not in another's scrape: Prometheus sums instances."""
    first, second = make_service(), make_service()
    first.action("find-pending-callbacks", {"customerNumber": "+14155552671"})
    assert value(scrape(first), "cbm_answers_total", action="find-pending-callbacks",
                 outcome="NONE") == 1
    assert value(scrape(second), "cbm_answers_total", action="find-pending-callbacks",
                 outcome="NONE") == 0


def test_gunicorn_workers_add_up_to_exact_counts(redis_client: object, redis_server: RedisServer,
                                                 live_sim: Simulator, tmp_path: Path) -> None:
    """Under gunicorn (two workers) 40 requests are counted exactly once each in one scrape."""
    env = service_env(redis_server.url, live_sim.url, METRICS_PUBLIC="true",
                      PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    # A file of an earlier run must not be counted: the master empties the folder.
    (tmp_path / "prom" / "counter_99999.db").write_bytes(b"stale")
    server = start_gunicorn(env, tmp_path / "gunicorn.log")
    try:
        with requests.Session() as first, requests.Session() as second:
            for i in range(40):
                session = first if i % 2 else second
                assert session.post(f"{server.url}/v1/actions/find-pending-callbacks",
                                    json={"customerNumber": "+14155552671"}, headers=AUTH,
                                    timeout=10).ok
        # Whichever worker answers the scrape, it reports both workers' counts.
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        assert value(text, "cbm_answers_total", action="find-pending-callbacks",
                     outcome="NONE") == 40
        assert value(text, "cbm_answers_total", action="create-callback", outcome="QUEUED") == 0
    finally:
        server.process.terminate()
        server.process.wait(15)


def test_worker_serves_the_shared_state_gauges(service: Service, sim: Simulator,
                                                redis_server: RedisServer) -> None:
    """A queued callback shows on the worker's port; the web /metrics has no outbox gauges."""
    sim.control("PUT", "faults", {"status": 503, "pathPrefix": "/api/v2/conversations"})
    assert service.action("create-callback", create_body()).json["outcome"] == "QUEUED"
    services = build_services(service.config, redis_client=connect(redis_server.url, 1.0),
                              http=new_session(), clock=service.clock)
    port = free_port()
    stop = serve_worker_metrics(services.metrics, outbox_stats(services), port, "127.0.0.1")
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop()
    assert value(text, "cbm_outbox_depth") == 1
    assert value(text, "cbm_dead_letters") == 0
    assert value(text, "cbm_outbox_oldest_age_seconds") is not None
    assert "cbm_outbox_depth" not in scrape(service)


def test_metrics_module_imports_no_redis() -> None:
    """Metrics take their gauge values from the caller; the module itself never reaches Redis."""
    code = "import sys, middleware.metrics; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_metrics_need_credentials_unless_public(make_service: Callable[..., Service],
                                                sim: Simulator) -> None:
    """/metrics is refused without credentials, served with METRICS_PUBLIC=true."""
    assert make_service().client.simulate_get("/metrics").status_code == 401
    assert make_service(METRICS_PUBLIC="true").client.simulate_get("/metrics").status_code == 200
