"""JSON log lines carrying the request id, with phone numbers and secrets masked at one choke point.

Every handler installed by ``configure_logging`` formats through ``JsonFormatter``, which
masks what looks like a phone number down to its last four digits (never UUIDs, hex
tokens, timestamps or addresses) and drops bearer tokens, so no call site can leak them
by accident. ``GUNICORN_LOGCONFIG`` gives gunicorn's own loggers the same format.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_BEARER: Final = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# What is kept as written comes first in the alternation, so the scan (left to right)
# consumes an id, token or timestamp whole before its digits could look like a number:
# UUIDs, ISO-8601 dates and times, IPv4 addresses, and any word that holds a letter
# (hex tokens, agent ids, header names). What is left, seven to fifteen digits with the
# separators people type, is a phone number.
_KEEP_OR_NUMBER: Final = re.compile(
    r"(?P<keep>"
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
    r"|\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?"
    r"|(?P<word>\b(?=\w*[^\W\d])\w+)"
    r")|(?P<number>\+?\d(?:[\s().-]{0,3}\d){6,})"
)
_E164_MAX_DIGITS: Final = 15
_E164_MIN: Final = 7
# Kept whole only at token length: a short hex-looking word ("Bea4155552671",
# "14155550101a") is a number with letters beside it, not an id.
_HEX_WORD: Final = re.compile(r"[0-9a-fA-F]{16,}")
_DIGIT_RUN: Final = re.compile(r"\d{7,15}")
# What ``redact`` can change needs seven digits, a percent sign or a credential word; most
# values (ids, outcomes, names, fixed messages) have none, and one anchored scan with no
# backtracking says so at a fraction of the full scan's cost.
_SEVEN_DIGITS: Final = re.compile(r"(?:\D*\d){7}")
_CREDENTIAL_WORD: Final = re.compile(r"(?i)bearer|basic")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                          r"[0-9a-fA-F]{12}")
_RESERVED: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


def mask_number(text: str) -> str:
    """Show at most the last four digits of a phone number: ``+1******2671``."""
    digits = re.sub(r"\D", "", text)
    if len(digits) <= 4:
        return "*" * len(digits)
    prefix = "+" if text.strip().startswith("+") else ""
    return prefix + "*" * (len(digits) - 4) + digits[-4:]


def redact(text: str) -> str:
    """Mask phone numbers and credentials anywhere in a free-text string."""
    # Shorter than seven characters, a value holds no number, no percent-encoded one and
    # no "Bearer <token>": most fields of a line (outcomes, methods, codes) stop here.
    if len(text) < _E164_MIN or ("%" not in text and not _CREDENTIAL_WORD.search(text) and (
            _UUID.fullmatch(text) or not _SEVEN_DIGITS.match(text))):
        return text
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    if "%" in text:
        # A request line arrives percent-encoded ("+1%20415%20555%200101"): read as sent,
        # every digit in it would hide from the number pattern.
        text = unquote(text)
    return _KEEP_OR_NUMBER.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    number = match.group("number")
    word = match.group("word")
    if word is not None and not _HEX_WORD.fullmatch(word):
        # A number glued to a name ("Grace4155552671") is still a number; hex ids are not.
        return _DIGIT_RUN.sub(lambda m: mask_number(m.group(0)), word)
    if number is None:
        return match.group(0)
    # A bare run longer than any E.164 number is a count or an id, not a phone number.
    if number.isdigit() and len(number) > _E164_MAX_DIGITS:
        return number
    return mask_number(number)


#: One encoder for every line: ``json.dumps`` with ``default`` builds a new one per call.
_ENCODER: Final = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, requestId, extra fields."""

    #: The last whole second formatted, and its text: lines come many to a second.
    _second: tuple[int, str] = (-1, "")

    def _ts(self, created: float) -> str:
        # Rounded to the microsecond first, as ``datetime.fromtimestamp`` does.
        second = int(created)
        micros = round((created - second) * 1_000_000)
        if micros == 1_000_000:
            second, micros = second + 1, 0
        last = self._second
        if last[0] != second:
            last = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
            self._second = last
        return f"{last[1]}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["requestId"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return _ENCODER.encode(entry)


def configure_logging(level: str) -> None:
    """Route every logger of the process through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line carries the caller's file and line, thread or process: not looking them up
    # spares every line a stack walk (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # urllib3 logs full URLs at DEBUG; those never carry numbers here, but stay quiet anyway.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


#: ``logging.config.dictConfig`` for gunicorn's ``logconfig_dict``: its master and worker
#: lines (boot, signals, worker timeouts) are JSON like ours, on stderr.
GUNICORN_LOGCONFIG: Final[dict[str, Any]] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
    },
}
