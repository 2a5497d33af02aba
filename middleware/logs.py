"""JSON log lines carrying the request id, with phone numbers and secrets masked at one choke point.

Every handler installed by ``configure_logging`` formats through ``JsonFormatter``, which
masks any run of digits long enough to be a phone number down to its last four digits
and drops bearer tokens, so no call site can leak them by accident.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# Seven or more digits, optionally with the separators people type, is treated as a number.
_PHONE: Final = re.compile(r"\+?\d(?:[\s().-]*\d){6,}")
_BEARER: Final = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# Genesys ids are UUIDs, whose digit runs would otherwise look like numbers.
_UUID: Final = re.compile(r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                          r"[0-9a-fA-F]{12})")
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
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    parts = _UUID.split(text)
    # split() with one group alternates: plain text at even indexes, UUIDs at odd ones.
    return "".join(part if i % 2 else _PHONE.sub(lambda m: mask_number(m.group(0)), part)
                   for i, part in enumerate(parts))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, requestId, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Route every logger of the process through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG; those never carry numbers here, but stay quiet anyway.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
