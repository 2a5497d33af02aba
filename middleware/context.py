"""What every domain call knows about the request it serves."""

from __future__ import annotations

from dataclasses import dataclass

from middleware.deadline import Deadline


@dataclass(frozen=True)
class RequestContext:
    """The request's id (for logs and answers), the caller's credential id and its deadline."""

    request_id: str
    credential: str
    deadline: Deadline
    idempotency_key: str = ""
