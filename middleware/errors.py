"""The exceptions the service raises, and how each reaches the caller.

Business outcomes (a refused consent, a duplicate, a time out of hours) are never
exceptions: they are answers with ``outcome`` and ``reason`` (HTTP 200). Exceptions are
for the cases where the service cannot answer the request as asked::

    ServiceError                  base; ``status`` is the HTTP status, ``title`` the short text
    ├── ContractViolation    400  body is not JSON or breaks the action's input schema
    ├── Unauthorized         401  no credential, or none that matches
    ├── NotFound             404  no such route or action
    ├── IdempotencyInFlight  409  the same idempotency key is still being answered
    ├── MethodNotAllowed     405  the route exists but not for this method
    ├── PayloadTooLarge      413  body over 64 KiB, chunked or not
    ├── UnsupportedMediaType 415  the body is not declared ``application/json`` (UTF-8)
    ├── IdempotencyMismatch  422  idempotency key reused with a different body
    └── Unavailable          503  a dependency (Redis) cannot take work now

    UpstreamError                 Genesys Cloud did not do what was asked (client module)
    ├── UpstreamUnavailable       unreachable, timed out, 5xx, or 429 beyond the deadline
    └── UpstreamRejected          a 4xx that retrying will not change

    StoreUnavailable              Redis unreachable or failing; becomes ``Unavailable``

The web layer maps ``ServiceError`` to the SPEC error body ``{title, description,
requestId}``; any other exception becomes a 500 with a generic body, logged once.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error answered with a non-2xx status and the SPEC error body."""

    status = 500
    title = "Internal error"

    def __init__(self, description: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after_s = retry_after_s


class ContractViolation(ServiceError):
    """The body is not a JSON object matching the action's input schema."""

    status = 400
    title = "Invalid request"


class Unauthorized(ServiceError):
    """No valid credential was presented."""

    status = 401
    title = "Unauthorized"


class NotFound(ServiceError):
    """No such route or action."""

    status = 404
    title = "Not found"


class MethodNotAllowed(ServiceError):
    """The route does not answer this method."""

    status = 405
    title = "Method not allowed"


class UnsupportedMediaType(ServiceError):
    """The body is not declared as UTF-8 ``application/json``."""

    status = 415
    title = "Unsupported media type"


class IdempotencyInFlight(ServiceError):
    """A request with the same idempotency key is still in flight."""

    status = 409
    title = "Request in progress"


class PayloadTooLarge(ServiceError):
    """The body exceeds the size cap."""

    status = 413
    title = "Payload too large"


class IdempotencyMismatch(ServiceError):
    """An idempotency key was reused with a different body."""

    status = 422
    title = "Idempotency key reused"


class Unavailable(ServiceError):
    """The service cannot accept work right now; the caller should retry later."""

    status = 503
    title = "Service unavailable"


class StoreUnavailable(Exception):
    """Redis could not be reached or failed the command."""

    #: When a retry can be served (e.g. an idempotency key stays in flight until then).
    retry_after_s: int | None = None


class UpstreamError(Exception):
    """Genesys Cloud did not complete a call."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "",
                 retry_after_s: float | None = None, may_have_run: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s
        #: The request reached Genesys and may have taken effect (a timeout after sending,
        #: a 5xx): before retrying a create, look for it first.
        self.may_have_run = may_have_run


class UpstreamUnavailable(UpstreamError):
    """Genesys was unreachable, too slow, failing (5xx) or rate-limited past the deadline."""


class UpstreamRejected(UpstreamError):
    """Genesys refused the call (4xx other than 401-after-refresh and 429)."""
