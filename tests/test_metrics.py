"""Prometheus /metrics: requests by action, outcome and reason, latency, Genesys calls and
tokens, the outbox and dead letters; totals across processes."""

from __future__ import annotations

import time
from collections.abc import Callable

from middleware.metrics import FLUSH_S
from tests.conftest import API_KEY, Service, Simulator, create_body, when


def scrape(service: Service) -> str:
    result = service.client.simulate_get("/metrics", headers={"X-API-Key": API_KEY})
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    return result.text


def test_requests_outcomes_and_genesys_calls_are_counted(service: Service,
                                                         sim: Simulator) -> None:
    """A create and a duplicate show up by outcome and reason, with latency and Genesys calls."""
    service.action("create-callback", create_body())
    service.action("create-callback", create_body(requestedTime=when("2026-11-23T20:00:00Z")))
    text = scrape(service)
    assert ('cbm_requests_total{action="create-callback",outcome="CREATED",reason="OK",'
            'status="200"} 1') in text
    assert ('cbm_requests_total{action="create-callback",outcome="DUPLICATE",'
            'reason="DUPLICATE_PENDING",status="200"} 1') in text
    assert 'cbm_request_duration_seconds_count{action="create-callback"} 2' in text
    assert ('cbm_genesys_calls_total{method="POST",route="/api/v2/conversations/callbacks",'
            'status="200"} 1') in text
    assert "cbm_genesys_token_fetches_total 1" in text
    assert "# TYPE cbm_request_duration_seconds histogram" in text


def test_outbox_gauges(service: Service, sim: Simulator) -> None:
    """A queued callback raises the outbox depth."""
    sim.control("PUT", "faults", {"status": 503, "pathPrefix": "/api/v2/conversations"})
    service.action("create-callback", create_body())
    text = scrape(service)
    assert "cbm_outbox_depth 1" in text and "cbm_dead_letters 0" in text


def test_totals_span_processes(make_service: Callable[..., Service], sim: Simulator) -> None:
    """What one process counted appears in another's scrape after its background flush."""
    first, second = make_service(), make_service()
    first.action("find-pending-callbacks", {"customerNumber": "+14155552671"})
    deadline = time.monotonic() + 3 * FLUSH_S
    while time.monotonic() < deadline:
        if 'action="find-pending-callbacks",outcome="NONE"' in scrape(second):
            return
        time.sleep(0.1)
    raise AssertionError("the first process's count never reached the second's scrape")


def test_metrics_need_credentials_unless_public(make_service: Callable[..., Service],
                                                sim: Simulator) -> None:
    """/metrics is refused without credentials, served with METRICS_PUBLIC=true."""
    assert make_service().client.simulate_get("/metrics").status_code == 401
    assert make_service(METRICS_PUBLIC="true").client.simulate_get("/metrics").status_code == 200
