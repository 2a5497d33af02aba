"""``import-callbacks``: a CSV of create-callback requests through the whole create pipeline.

Each row is one create-callback input (columns named as the schema's fields; empty cells
are absent fields). It is parsed against the contract and handed to the same
``CreateCallback.create`` the action uses, so every check of SPEC §4 and the Genesys call
budget shared with the running service apply. A row without its own ``idempotencyKey``
gets ``import-<content hash>-<row>``: running the same file again replays the rows
already answered instead of creating them twice, which is how an interrupted import
resumes. A bad row is reported and the import goes on.

Report rows (one per data row, numbered from 1 after the header): ``row, outcome, reason,
callbackId, message``. Outcomes are the action's (``CREATED``, ``QUEUED``, ``DUPLICATE``,
``REJECTED``) plus ``INVALID`` for a row the service would refuse with an error status;
its reason is then ``INVALID_INPUT`` (400), ``IDEMPOTENCY_MISMATCH`` (422: the row's key
was used with other content), ``IN_FLIGHT`` (409) or ``UNAVAILABLE`` (503). ``--dry-run``
only parses: ``VALID`` or ``INVALID``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import (
    ContractViolation,
    IdempotencyInFlight,
    IdempotencyMismatch,
    ServiceError,
)
from middleware.logs import redact
from middleware.rules.number import number_of
from middleware.web.strict_json import check_fields

REPORT_COLUMNS: Final = ("row", "outcome", "reason", "callbackId", "message")
#: The idempotency scope of imported rows (the web scopes keys by the caller's credential).
IMPORT_CREDENTIAL: Final = "import-callbacks"
_PROGRESS_EVERY_S: Final = 5.0
_IN_FLIGHT_RETRIES: Final = 3
_TRUE: Final = frozenset({"true", "yes", "1", "y"})
_FALSE: Final = frozenset({"false", "no", "0", "n"})
_ERROR_REASONS: Final[tuple[tuple[type[ServiceError], str], ...]] = (
    (ContractViolation, "INVALID_INPUT"), (IdempotencyMismatch, "IDEMPOTENCY_MISMATCH"),
    (IdempotencyInFlight, "IN_FLIGHT"), (ServiceError, "UNAVAILABLE"))

Answer = dict[str, Any]
CreateFn = Callable[[dict[str, Any], RequestContext], Answer]


class Progress(Protocol):
    """Told about each row as it finishes, and once at the end."""

    def row_done(self, outcome: str) -> None:
        """One more row answered with ``outcome``."""

    def close(self) -> None:
        """The import is over."""


@dataclass(frozen=True)
class RowResult:
    """One line of the report."""

    row: int
    outcome: str
    reason: str
    callback_id: str = ""
    message: str = ""


@dataclass
class ImportResult:
    """Every row's result, in file order."""

    rows: list[RowResult] = field(default_factory=list)
    interrupted: bool = False

    def summary(self) -> Counter[tuple[str, str]]:
        """How many rows ended with each (outcome, reason)."""
        return Counter((r.outcome, r.reason) for r in self.rows)


class CsvFileError(ValueError):
    """The file cannot be imported at all (no header, a column that is no input field)."""


def read_rows(text: str, contract: Contract) -> list[dict[str, str]]:
    """The file's data rows as column -> cell; ``CsvFileError`` for an unusable header."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    if not columns:
        raise CsvFileError("the file has no header row")
    known = set(contract.input_schema["properties"])
    unknown = [c for c in columns if c not in known]
    if unknown:
        # Masked: a file without its header row makes the first row's number a "column".
        raise CsvFileError(f"column(s) {redact(', '.join(unknown))} are not create-callback "
                           "inputs (is the header row missing?)")
    return [{(k or "").strip(): (v or "") for k, v in row.items() if k is not None}
            for row in reader]


def typed_fields(row: dict[str, str], contract: Contract) -> dict[str, Any]:
    """The row's cells as the schema types them (booleans, integers); empty cells dropped."""
    properties = contract.input_schema["properties"]
    out: dict[str, Any] = {}
    for name, cell in row.items():
        text = cell.strip()
        if not text:
            continue
        kind = properties[name].get("type")
        if kind == "boolean" and text.lower() in _TRUE | _FALSE:
            out[name] = text.lower() in _TRUE
        elif kind == "integer" and text.lstrip("-").isdigit():
            out[name] = int(text)
        else:
            # Left as text: the contract refuses it, naming the field.
            out[name] = text
    return out


def import_key(content_hash: str, row: int) -> str:
    """The idempotency key of a row that brings none: file content and row number."""
    return f"import-{content_hash[:24]}-{row}"


class BulkImporter:
    """Runs the rows of one file through the create pipeline, one at a time."""

    def __init__(self, create: CreateFn, contract: Contract, default_country: str,
                 deadline_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self._create = create
        self._contract = contract
        self._country = default_country
        self._deadline_s = deadline_s
        self._sleep = sleep

    def run(self, text: str, *, dry_run: bool = False, limit: int | None = None,
            progress: Callable[[int], Progress] | None = None,
            stopping: Callable[[], bool] = lambda: False) -> ImportResult:
        """Import every row (the first ``limit`` rows); a bad row never stops the rest.

        ``progress`` is given the number of rows to do and told of each one; ``stopping`` is
        asked before each row, so an interrupt ends the run between rows, never inside a
        create (whose outcome would otherwise be left for the worker to settle).
        """
        rows = read_rows(text, self._contract)
        chosen = rows[:limit] if limit is not None else rows
        content_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
        shown = progress(len(chosen)) if progress is not None else None
        result = ImportResult()
        for number, row in enumerate(chosen, start=1):
            if stopping():
                result.interrupted = True
                break
            outcome = self._row(number, row, content_hash, dry_run)
            result.rows.append(outcome)
            if shown is not None:
                shown.row_done(outcome.outcome)
        if shown is not None:
            shown.close()
        return result

    def _row(self, number: int, row: dict[str, str], content_hash: str,
             dry_run: bool) -> RowResult:
        try:
            typed = typed_fields(row, self._contract)
            check_fields(typed)
            fields = self._contract.parse(typed)
        except ContractViolation as exc:
            return RowResult(number, "INVALID", "INVALID_INPUT", message=exc.description)
        if dry_run:
            if number_of(fields, self._country) is None:
                return RowResult(number, "INVALID", "INVALID_NUMBER",
                                 message="The customer number is not a valid phone number.")
            return RowResult(number, "VALID", "OK")
        key = "" if fields.get("idempotencyKey") else import_key(content_hash, number)
        for attempt in range(_IN_FLIGHT_RETRIES + 1):
            ctx = RequestContext(request_id=str(uuid.uuid4()), credential=IMPORT_CREDENTIAL,
                                 deadline=Deadline(self._deadline_s), idempotency_key=key)
            try:
                answer = self._create(fields, ctx)
            except IdempotencyInFlight as exc:
                # An earlier, interrupted run left this row's key leased; it expires.
                if attempt < _IN_FLIGHT_RETRIES:
                    self._sleep(float(exc.retry_after_s or 1))
                    continue
                return RowResult(number, "INVALID", "IN_FLIGHT", message=exc.description)
            except ServiceError as exc:
                reason = next(r for kind, r in _ERROR_REASONS if isinstance(exc, kind))
                return RowResult(number, "INVALID", reason, message=exc.description)
            return RowResult(number, str(answer["outcome"]), str(answer["reason"]),
                             str(answer.get("callbackId") or ""), str(answer.get("message", "")))
        raise AssertionError("unreachable")  # pragma: no cover


def write_report(path: Path, rows: Iterable[RowResult]) -> None:
    """The report CSV: ``row, outcome, reason, callbackId, message``."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(REPORT_COLUMNS)
        for r in rows:
            writer.writerow((r.row, r.outcome, r.reason, r.callback_id, r.message))


def render_summary(result: ImportResult) -> str:
    """Rows by outcome and reason, most frequent first, and the total."""
    lines = [f"{n:6d}  {outcome:9s} {reason}"
             for (outcome, reason), n in result.summary().most_common()]
    tail = [f"{len(result.rows):6d}  rows"]
    if result.interrupted:
        tail.append("interrupted: run the same command again to resume (rows done are kept)")
    return "\n".join([*lines, *tail])


class LineProgress:
    """A progress line every few seconds, for logs and pipes (no terminal)."""

    def __init__(self, total: int, out: TextIO, clock: Callable[[], float] = time.monotonic,
                 every_s: float = _PROGRESS_EVERY_S) -> None:
        self._total = total
        self._out = out
        self._clock = clock
        self._every = every_s
        self._start = clock()
        self._last = self._start
        self._done = 0
        self._outcomes: Counter[str] = Counter()

    def row_done(self, outcome: str) -> None:
        """Count the row; print a line when the interval has passed."""
        self._done += 1
        self._outcomes[outcome] += 1
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self._done / elapsed
        left = (self._total - self._done) / rate if rate else 0.0
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self._outcomes.items()))
        print(f"import: {self._done}/{self._total} rows ({outcomes}), {rate:.1f} rows/s, "
              f"~{left:.0f} s left", file=self._out, flush=True)

    def close(self) -> None:
        """The closing line."""
        self._print(self._clock())


class BarProgress:
    """A tqdm bar on a terminal: rows done of total, outcomes so far, rate, time left."""

    def __init__(self, total: int, out: TextIO) -> None:
        from tqdm import tqdm  # noqa: PLC0415 (only a terminal run needs it)

        self._bar = tqdm(total=total, file=out, unit="row", dynamic_ncols=True)
        self._outcomes: Counter[str] = Counter()

    def row_done(self, outcome: str) -> None:
        """Advance the bar and show the outcomes so far."""
        self._outcomes[outcome] += 1
        self._bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in
                                            sorted(self._outcomes.items())), refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        """Leave the finished bar on screen."""
        self._bar.close()


def progress_for(total: int, out: TextIO = sys.stderr) -> Progress:
    """A bar when ``out`` is a terminal, else periodic lines."""
    if out.isatty():
        return BarProgress(total, out)
    return LineProgress(total, out)
