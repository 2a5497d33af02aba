"""import-callbacks: every row through the create pipeline, bad rows reported, resumable."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import phonenumbers
import pytest

from middleware.app import Services
from middleware.bulk import (
    CsvFileError,
    LineProgress,
    render_summary,
    write_report,
)
from tests.conftest import (
    DEMO_AGENT,
    DEMO_QUEUE,
    ROOT,
    T0,
    RedisServer,
    Simulator,
    service_env,
)
from tests.system.conftest import importer_for

COLUMNS = ("customerNumber", "customerName", "agentId", "queueId", "requestedTime",
           "consentGiven", "consentSource", "reference")
ROWS, BAD_EVERY = 500, 25
AT = (T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
#: The same instant without its offset: TIMEZONE_MISSING.
AT_LOCAL = (T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")


def _valid_numbers(count: int) -> Iterator[str]:
    """Distinct valid San Francisco numbers (the per-number daily cap needs one per row)."""
    found = 0
    for line in range(10_000):
        text = f"+1 415 {200 + line // 10_000:03d} {line:04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(text)):
            found += 1
            yield text
            if found == count:
                return


def _file() -> tuple[str, dict[int, str]]:
    """500 rows, 20 of them bad (4 kinds x 5); the reason each bad row must get."""
    numbers = _valid_numbers(ROWS)
    rows: list[dict[str, str]] = []
    bad: dict[int, str] = {}
    kinds = ("INVALID_NUMBER", "CONSENT_MISSING", "TIMEZONE_MISSING", "DUPLICATE_PENDING")
    for index in range(1, ROWS + 1):
        row = {"customerNumber": next(numbers), "customerName": f"Customer {index}",
               "agentId": DEMO_AGENT, "queueId": DEMO_QUEUE, "requestedTime": AT,
               "consentGiven": "true", "consentSource": "WEB_FORM", "reference": f"R{index}"}
        if index % BAD_EVERY == 0:
            kind = kinds[(index // BAD_EVERY) % len(kinds)]
            bad[index] = kind
            if kind == "INVALID_NUMBER":
                row["customerNumber"] = "12345"
            elif kind == "CONSENT_MISSING":
                row["consentGiven"] = "false"
            elif kind == "TIMEZONE_MISSING":
                row["requestedTime"] = AT_LOCAL
            else:
                row["customerNumber"] = rows[index - 3]["customerNumber"]
        rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue(), bad


def test_interrupted_import_resumes_with_one_callback_per_valid_row(
    sim: Simulator, services: Services, tmp_path: Path
) -> None:
    """Half, then all: each valid row has exactly one callback; each bad row its reason."""
    text, bad = _file()
    first = importer_for(services).run(text, limit=ROWS // 2)
    assert len(first.rows) == ROWS // 2
    created_first = sim.creates()
    result = importer_for(services).run(text)
    assert sim.creates() == ROWS - len(bad)
    assert created_first == ROWS // 2 - len([r for r in bad if r <= ROWS // 2])
    callbacks = sim.callbacks()
    numbers = [c["callbackNumbers"][0] for c in callbacks]
    assert len(numbers) == len(set(numbers)) == ROWS - len(bad)
    report = tmp_path / "report.csv"
    write_report(report, result.rows)
    with report.open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == ROWS
    failed = {int(r["row"]): r["reason"] for r in lines if r["outcome"] != "CREATED"}
    assert failed == bad
    duplicate_rows = [r for r in lines if r["reason"] == "DUPLICATE_PENDING"]
    assert all(r["outcome"] == "DUPLICATE" and r["callbackId"] for r in duplicate_rows)
    assert all(r["callbackId"] for r in lines if r["outcome"] == "CREATED")
    summary = render_summary(result)
    assert f"{ROWS - len(bad)}  CREATED   OK" in summary


def test_bad_cell_is_reported_and_the_import_goes_on(services: Services) -> None:
    """A cell the contract refuses is INVALID with the field named; later rows still run."""
    text = (f"customerNumber,agentId,queueId,requestedTime,consentGiven,priority\n"
            f"+1 415 555 2671,{DEMO_AGENT},{DEMO_QUEUE},{AT},true,high\n"
            f"+1 415 555 2671,{DEMO_AGENT},{DEMO_QUEUE},{AT},true,2\n")
    result = importer_for(services).run(text)
    assert [(r.outcome, r.reason) for r in result.rows] == [
        ("INVALID", "INVALID_INPUT"), ("CREATED", "OK")]
    assert "priority" in result.rows[0].message


def test_unknown_column_stops_before_any_row(services: Services, sim: Simulator) -> None:
    """A column that is no create-callback input refuses the whole file, naming it."""
    with pytest.raises(CsvFileError, match="colour"):
        importer_for(services).run("customerNumber,colour\n+14155552671,red\n")
    assert sim.creates() == 0


def test_progress_lines_when_not_on_a_terminal() -> None:
    """Without a terminal, a line every interval: rows done of total, outcomes, rate, left."""
    out = io.StringIO()
    ticks = iter([0.0, 1.0, 6.0, 7.0, 7.0])
    progress = LineProgress(3, out, clock=lambda: next(ticks), every_s=5.0)
    for outcome in ("CREATED", "CREATED", "REJECTED"):
        progress.row_done(outcome)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("import: 2/3 rows (CREATED 2), ")
    assert "rows/s" in lines[0] and "s left" in lines[0]
    assert lines[-1].startswith("import: 3/3 rows (CREATED 2, REJECTED 1)")


def test_sample_file_checks_in_a_dry_run(
    sim: Simulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The shipped command on the shipped sample: --dry-run creates nothing, writes the report."""
    report = tmp_path / "out.csv"
    done = subprocess.run(
        [sys.executable, "-m", "middleware", "import-callbacks",
         str(ROOT / "deploy" / "samples" / "callbacks.csv"), "--dry-run", "--report", str(report)],
        cwd=ROOT, env={**os.environ, **service_env(redis_server.url, sim.url)},
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert sim.creates() == 0
    rows = list(csv.DictReader(report.open()))
    assert [r["outcome"] for r in rows] == ["VALID", "VALID", "VALID"]
    assert "3  rows" in done.stdout
    assert "import: 3/3 rows (VALID 3)" in done.stderr
