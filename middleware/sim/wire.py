"""Genesys Cloud wire conventions shared by every simulated route: errors, instants, refs.

Exceptions (each becomes one Genesys ``ErrorBody`` in the app's single error handler):

- ``ApiError``: any platform answer other than 2xx, with its status, ``code``, message,
  ``details`` and extra headers (e.g. ``Retry-After``).
- ``BodyError(ApiError)``: 400 ``bad.request`` for a request body that breaks the official
  models or a rule the platform documents; the ``details`` name each bad field by its path
  (``routingData.scoredAgents[0].agent.id``). Counted in ``/sim/stats`` as a rejected body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

Json = dict[str, Any]

# Genesys sends and documents instants as yyyy-MM-ddTHH:mm:ss.SSSZ; an offset is accepted
# too, but an instant without any zone is refused because the platform cannot place it.
_INSTANT = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Detail:
    """One bad field of a request: its path in the body and a machine-readable code."""

    field_name: str
    error_code: str

    def to_json(self) -> Json:
        """Render as the ErrorBody ``Detail`` model."""
        return {"fieldName": self.field_name, "errorCode": self.error_code}


class ApiError(Exception):
    """A non-2xx platform answer, rendered as an ErrorBody."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Sequence[Detail] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = tuple(details)
        self.headers = dict(headers or {})


class BodyError(ApiError):
    """A request body the platform would refuse with 400 ``bad.request``."""

    def __init__(self, details: Sequence[Detail], message: str | None = None) -> None:
        summary = ", ".join(f"{d.field_name} ({d.error_code})" for d in details[:5])
        super().__init__(
            400, "bad.request", message or f"The request body is invalid: {summary}",
            details=details,
        )


def bad_field(field_name: str, error_code: str, message: str) -> BodyError:
    """A 400 naming one field."""
    return BodyError([Detail(field_name, error_code)], message)


def not_found(kind: str, entity_id: str) -> ApiError:
    """The platform's 404 for an entity that does not exist (or is hidden by ``state``)."""
    return ApiError(404, "not.found", f"The requested {kind} {entity_id} was not found.")


def error_body(
    status: int, code: str, message: str, context_id: str, details: Sequence[Detail] = ()
) -> Json:
    """Render the ErrorBody model the platform answers every error with."""
    return {
        "message": message,
        "code": code,
        "status": status,
        "contextId": context_id,
        "details": [d.to_json() for d in details],
        "errors": [],
    }


def iso(instant: datetime) -> str:
    """Format an instant the way the platform does: UTC, milliseconds, ``Z``."""
    utc = instant.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> datetime | None:
    """Read an ISO-8601 instant that carries a zone; ``None`` when it is not one."""
    if not _INSTANT.match(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def parse_date(text: str) -> date | None:
    """Read a ``yyyy-MM-dd`` date; ``None`` when it is not one."""
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def ref(entity_id: str, self_uri: str, name: str | None = None) -> Json:
    """A DomainEntityRef-shaped reference."""
    out: Json = {"id": entity_id}
    if name is not None:
        out["name"] = name
    out["selfUri"] = self_uri
    return out
