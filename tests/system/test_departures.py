"""Departures from SPEC found by an adversarial review of the any-day suite, the fidelity
work and the set-up commands, each pinned so it stays fixed: every test states the promise
it holds the product to."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from middleware.app import Services
from middleware.bulk import CsvFileError
from middleware.rules.time import format_utc
from tests.conftest import (
    DEMO_AGENT,
    DEMO_QUEUE,
    ROOT,
    T0,
    RedisServer,
    Service,
    Simulator,
    create_body,
    local,
    service_env,
    when,
)
from tests.system.conftest import importer_for
from tests.system.test_install import _writes, installer  # noqa: F401 (fixture)

BOB = "a1000000-0000-4000-8000-000000000002"
LONDON_NUMBER = "+442079460958"
NY = ZoneInfo("America/New_York")


def act(service: Service, action: str, **fields: Any) -> dict[str, Any]:
    result = service.action(action, fields)
    assert result.status_code == 200, result.text
    return dict(result.json)


def ny_local(days_from_t0: int, wall: str) -> datetime:
    """The instant of ``wall`` (HH:MM) New York time on T0's New York date + ``days``."""
    day = T0.astimezone(NY).date() + timedelta(days=days_from_t0)
    hour, minute = (int(p) for p in wall.split(":"))
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY).astimezone(UTC)


# -- issue 10: any epoch, known-good dependencies ----------------------------------------


def test_when_keeps_local_times_true_at_any_epoch() -> None:
    """A New York wall-clock time written against the default epoch (EST) reads the same in
    New York at this run's epoch, whether that is in EST or EDT."""
    assert local(when("2026-11-23T19:30:00.000Z", "America/New_York"),
                 "America/New_York") == when("2026-11-23T14:30:00-05:00", "America/New_York")
    assert when("2026-11-23T14:30:00-05:00", "America/New_York")[11:16] == "14:30"


def _names(requirements: list[str]) -> list[str]:
    return [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements]


def test_constraints_pin_every_declared_dependency() -> None:
    """scripts/setup.sh installs with ``-c constraints.txt`` so a fresh machine gets the
    versions the suite passed with; a dependency the file does not pin floats."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
    pinned = {line.split("==")[0].strip().lower().replace("_", "-")
              for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert [d for d in declared if d not in pinned] == []


def test_every_runtime_dependency_has_an_upper_bound() -> None:
    """Lower and upper (next major) bounds for every runtime dependency; tzdata aside: it is
    calendar-versioned zone data, whose every new release must be taken (a zone's rules
    change by law), so it has no major to stop at."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [r for r in project["dependencies"]
            if "<" not in r and not r.startswith("tzdata")] == []


@pytest.mark.parametrize("overrides", [
    {"PII_KEYS": " , "},
    {"CALLING_HOURS_FILE": "/nonexistent/calling-hours.json"},
    {"AGENT_PROFILES_FILE": "/nonexistent/profiles.json"},
    {"DEFAULT_COUNTRY": "XX"},  # alpha-2 shaped, but no region: every national number fails
])
def test_check_config_refuses_what_the_service_then_dies_on(
        redis_server: RedisServer, sim: Simulator, overrides: dict[str, str]) -> None:
    """Issue 10 point 5 / SPEC §5: a bad setting stops at once naming the variable. These
    pass ``check-config`` (the run command's guard), then every gunicorn worker dies with a
    traceback and the run command waits 30 s for readiness."""
    done = subprocess.run([sys.executable, "-m", "middleware", "check-config"],
                          env={**os.environ, **service_env(redis_server.url, sim.url,
                                                           **overrides)},
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    name = next(iter(overrides))
    assert done.returncode != 0 and name in done.stderr, (done.returncode, done.stdout)


# -- issue 11: answers -------------------------------------------------------------------


def test_asap_on_a_day_off_without_reassignment_is_no_available_owner(
        service: Service, sim: Simulator) -> None:
    """Saturday 11:00 New York, Bob off, allowReassignment=false: the owner rule refuses
    (NO_AVAILABLE_OWNER); ASAP never defers to Bob's Monday shift."""
    service.clock.set(ny_local(5, "11:00"))
    answer = act(service, "create-callback", **create_body(
        agentId=BOB, requestedTime=None, allowReassignment=False))
    assert (answer["outcome"], answer["reason"]) == ("REJECTED", "NO_AVAILABLE_OWNER"), answer
    assert sim.creates() == 0


@pytest.mark.parametrize(("hours", "days", "at"), [
    ({"mon": ["22:00", "06:00"]}, 1, "05:00"),   # Mon night into Tuesday
    ({"sun": ["22:00", "06:00"]}, 7, "05:00"),   # Sunday night into Monday (week wraps)
    ({"sat": ["22:00", "06:00"]}, 6, "05:00"),   # across the Americas WFM week (Sunday start)
])
def test_overnight_shift_counts_for_create_and_validate(
        service: Service, sim: Simulator, hours: dict[str, list[str]], days: int, at: str
) -> None:
    """A shift that began the local day before still runs: the agent is on shift, so
    validate is VALID and create keeps the owner (05:00 New York is 09:00-10:00 London,
    inside the London number's calling hours)."""
    sim.control("PATCH", f"users/{BOB}", {"weeklyHours": hours})
    instant = format_utc(ny_local(days, at))
    valid = act(service, "validate-callback-time", agentId=BOB, customerNumber=LONDON_NUMBER,
                requestedTime=instant)
    assert (valid["outcome"], valid["reason"]) == ("VALID", "OK"), valid
    created = act(service, "create-callback", **create_body(
        agentId=BOB, customerNumber=LONDON_NUMBER, requestedTime=instant))
    assert (created["outcome"], created["assignedAgentId"], created["reassigned"]) == (
        "CREATED", BOB, False), created


def test_rejected_answers_do_not_use_up_the_daily_cap(
        make_service: Callable[..., Service], sim: Simulator) -> None:
    """SPEC §3.1: a REJECTED answer leaves no trace that blocks a later request."""
    service = make_service(MAX_CALLBACKS_PER_NUMBER_PER_DAY="1")
    wrong_queue = "b1000000-0000-4000-8000-00000000dead"
    nobody = "a1000000-0000-4000-8000-00000000beef"
    for fields in ({"queueId": wrong_queue}, {"agentId": nobody},
                   {"agentId": BOB, "allowReassignment": False,
                    "requestedTime": format_utc(ny_local(5, "11:00"))}):
        answer = act(service, "create-callback", **create_body(**fields))
        assert answer["outcome"] == "REJECTED", answer
    answer = act(service, "create-callback", **create_body())
    assert answer["outcome"] == "CREATED", answer


def test_wrong_queue_with_record_consent_fields_leaves_no_evidence(
        service: Service, sim: Simulator) -> None:
    """A wrong queueId is refused before consent: no consent record, no history entry."""
    before = set(service.redis.scan_iter("cbm:*"))
    answer = act(service, "create-callback", **create_body(
        queueId="b1000000-0000-4000-8000-00000000dead", consentSource="WEB_FORM",
        consentText="v3"))
    assert answer["reason"] == "UPSTREAM_REJECTED"
    added = {k.decode() if isinstance(k, bytes) else k
             for k in set(service.redis.scan_iter("cbm:*")) - before}
    assert {k for k in added if "consent" in k or "history" in k} == set(), added


def test_priority_outside_32_bits_is_refused_over_http(service: Service, sim: Simulator
                                                       ) -> None:
    """SPEC §2: an integer outside 32 bits is a 400 (RoutingData.priority is int32)."""
    result = service.action("create-callback", create_body(priority=2**40))
    assert result.status_code == 400, result.json
    assert sim.creates() == 0


# -- issue 15: install-actions -----------------------------------------------------------


def test_install_with_another_auth_does_not_claim_the_wrong_credential_type(
        sim: Simulator, installer: Callable[..., Any]) -> None:  # noqa: F811
    """After a basic install, ``--auth apikey --secure`` must not report the Basic Auth
    credential as an 'already there' userDefined one and exit 0: the org is not what was
    asked for, so the run says so (refused), as for a changed contract."""
    installer(auth="basic").run()
    steps = installer(auth="apikey", secure=True).run()
    credential = next(s for s in steps if s.kind == "credential")
    org = sim.control("GET", "integrations")
    assert [c["type"] for c in org["credentials"]] == ["basicAuth"]
    assert not (credential.result == "already there" and "userDefined" in credential.detail), \
        credential
    assert any(s.result == "refused" for s in steps), steps


# -- issue 15: import-callbacks ----------------------------------------------------------


def test_import_refuses_priority_outside_32_bits(services: Services, sim: Simulator) -> None:
    """A row is a create-callback input: an out-of-range integer is INVALID, as the HTTP
    edge must answer 400, and never reaches Genesys as an int32 overflow."""
    at = format_utc(T0 + timedelta(hours=1))
    text = ("customerNumber,agentId,queueId,requestedTime,consentGiven,priority\n"
            f"+1 415 555 2671,{DEMO_AGENT},{DEMO_QUEUE},{at},true,4155552671\n")
    result = importer_for(services).run(text)
    assert [(r.outcome, r.reason) for r in result.rows] == [("INVALID", "INVALID_INPUT")]
    assert sim.creates() == 0


def test_headerless_file_error_shows_no_number(services: Services) -> None:
    """A file without its header row: the error names the problem, not the raw numbers of
    the first row (SPEC §8: no raw phone number in any log line or error)."""
    text = f"+14155552671,{DEMO_AGENT},{DEMO_QUEUE},true\n"
    with pytest.raises(CsvFileError) as caught:
        importer_for(services).run(text)
    assert "4155552671" not in str(caught.value)


def test_report_never_holds_a_raw_number(services: Services, sim: Simulator, tmp_path: Path
                                         ) -> None:
    """A number typed in the wrong column (agentId, queueId, timeZone) is echoed verbatim
    in the report's message; the report is the artefact an import leaves behind."""
    text = ("customerNumber,agentId,queueId,requestedLocalTime,timeZone,consentGiven\n"
            f"+14155550101,4155552671,{DEMO_QUEUE},,,true\n"
            f"+14155550102,{DEMO_AGENT},4155552671,,,true\n"
            f"+14155550103,{DEMO_AGENT},{DEMO_QUEUE},{when('2026-11-24T10:00')},4155552671,true\n")
    result = importer_for(services).run(text)
    leaked = [(r.row, r.message) for r in result.rows if "4155552671" in r.message]
    assert leaked == []


def _live_env(redis_server: RedisServer, sim: Simulator) -> dict[str, str]:
    return {**os.environ, **service_env(redis_server.url, sim.url,
                                        GENESYS_RATE_LIMIT_PER_MIN="100000")}


def _interruptible(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    # A child of a non-interactive shell may inherit SIGINT ignored; restore it, as a
    # terminal's Ctrl-C would find it.
    return subprocess.Popen(
        [sys.executable, "-c",
         "import signal, runpy, sys; signal.signal(signal.SIGINT, signal.SIG_DFL);"
         "sys.argv = ['middleware'] + sys.argv[1:]; runpy.run_module('middleware', "
         "run_name='__main__')", *args], env=env, text=True, **kw)


def test_sigint_mid_create_then_resume_finishes_every_row(
        live_sim: Simulator, redis_server: RedisServer, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    """Ctrl-C while a row's create is in flight, then the same command again (no worker in
    between): every valid row ends CREATED with exactly one callback, none left REJECTED."""
    rows = 12
    path = tmp_path / "rows.csv"
    path.write_text("customerNumber,agentId,queueId,consentGiven,consentSource\n" + "".join(
        f"+1415555{4000 + i:04d},{DEMO_AGENT},{DEMO_QUEUE},true,WEB_FORM\n"
        for i in range(rows)))
    env = _live_env(redis_server, live_sim)
    live_sim.control("PUT", "faults", {"latencyMs": 1500, "method": "POST",
                                       "pathPrefix": "/api/v2/conversations/callbacks"})
    first = _interruptible(["import-callbacks", str(path)], env, cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while live_sim.creates() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.6)  # inside the next row's create
    first.send_signal(signal.SIGINT)
    first.wait(timeout=30)
    time.sleep(1.5)  # the interrupted create lands in Genesys
    live_sim.control("DELETE", "faults")
    report = tmp_path / "report.csv"
    done = subprocess.run([sys.executable, "-m", "middleware", "import-callbacks", str(path),
                           "--report", str(report)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = [(r["row"], r["outcome"], r["reason"]) for r in csv.DictReader(report.open())]
    live = Counter(c["callbackNumbers"][0] for c in live_sim.callbacks()
                   if c["state"] != "disconnected")
    assert len(live) == rows and max(live.values()) == 1
    assert [o for o in outcomes if o[1] != "CREATED"] == []
