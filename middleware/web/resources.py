"""The HTTP edge: the one error handler and the resources (``guard.py`` checks each request).

Resources translate only: read the body, call one domain function, set ``resp.media``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, Final

import falcon

from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import (
    NotFound,
    ServiceError,
    StoreUnavailable,
    Unavailable,
    UnsupportedMediaType,
)
from middleware.logs import redact
from middleware.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from middleware.web.guard import WWW_AUTHENTICATE
from middleware.web.strict_json import loads as strict_loads

log = logging.getLogger(__name__)

_MEDIA_TYPE: Final = re.compile(r"^\s*application/json\s*(?:;\s*charset\s*=\s*\"?utf-8\"?\s*)?$",
                                re.IGNORECASE)

ActionHandler = Callable[[dict[str, Any], RequestContext], dict[str, Any]]


def _error_body(req: falcon.Request, resp: falcon.Response, status: int, title: str,
                description: str, retry_after_s: int | None = None) -> None:
    request_id = getattr(req.context, "request_id", "") or uuid.uuid4().hex
    resp.status = status
    resp.set_header("X-Request-Id", request_id)
    if retry_after_s is not None:
        resp.set_header("Retry-After", str(retry_after_s))
    if status == 401:
        resp.set_header("WWW-Authenticate", WWW_AUTHENTICATE)
    resp.media = {"title": title, "description": description, "requestId": request_id}


def handle_service_error(req: falcon.Request, resp: falcon.Response, exc: ServiceError,
                         params: dict[str, Any]) -> None:
    """Our own refusals: the SPEC error body with the exception's status."""
    _error_body(req, resp, exc.status, exc.title, exc.description, exc.retry_after_s)


def handle_store_unavailable(req: falcon.Request, resp: falcon.Response, exc: StoreUnavailable,
                             params: dict[str, Any]) -> None:
    """Redis is down: refuse fast and retryably rather than accept work we could lose."""
    log.error("store unavailable", extra={"error": str(exc)})
    err = Unavailable("The service cannot reach its store; retry shortly.",
                      retry_after_s=max(2, exc.retry_after_s or 0))
    _error_body(req, resp, err.status, err.title, err.description, err.retry_after_s)


def handle_http_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError,
                      params: dict[str, Any]) -> None:
    """Falcon's own errors (unknown route, wrong method) in the SPEC error body."""
    if isinstance(exc, falcon.HTTPMethodNotAllowed):
        allow = dict(exc.headers or {}).get("Allow")
        if allow:
            resp.set_header("Allow", allow)
    _error_body(req, resp, exc.status_code, exc.title or "Error", exc.description or exc.title
                or "The request cannot be served.")


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception,
                      params: dict[str, Any]) -> None:
    """Anything else: logged once with its traceback, answered without details."""
    log.exception("unhandled error")
    _error_body(req, resp, 500, "Internal error",
                "The service failed to answer; quote the requestId when reporting it.")


def install_error_handlers(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Register the handlers; Falcon picks the most specific one by class."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(StoreUnavailable, handle_store_unavailable)
    app.add_error_handler(ServiceError, handle_service_error)


class ActionResource:
    """``POST /v1/actions/<action>``: parse against the contract, hand to the domain."""

    def __init__(self, contract: Contract, handler: ActionHandler) -> None:
        self._contract = contract
        self._handler = handler

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Validate the body and answer with the domain's complete output."""
        if not _MEDIA_TYPE.match(req.content_type or ""):
            raise UnsupportedMediaType("Send the body as Content-Type: application/json (UTF-8).")
        body = strict_loads(req.context.body or b"null")
        fields = self._contract.parse(body)
        ctx = RequestContext(
            request_id=req.context.request_id,
            credential=req.context.credential,
            deadline=req.context.deadline,
            idempotency_key=(req.get_header("Idempotency-Key") or "").strip(),
        )
        resp.media = self._handler(fields, ctx)


class HealthResource:
    """``GET /healthz``: the process is alive and serving."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Always ok while the process can answer."""
        resp.media = {"status": "ok"}

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The same answer without a body, for probes that only look at the status."""
        self.on_get(req, resp)


class ReadyResource:
    """``GET /readyz``: every dependency is usable; the body names each check."""

    def __init__(self, checks: Callable[[Deadline], dict[str, Any]]) -> None:
        self._checks = checks

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """200 when every check passes, else 503 naming the failed ones."""
        report = self._checks(req.context.deadline)
        ready = all(c.get("ok") for c in report.values())
        resp.status = 200 if ready else 503
        resp.media = {"status": "ready" if ready else "not ready", "checks": report}

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The same checks and status without a body."""
        self.on_get(req, resp)


class MetricsResource:
    """``GET /metrics``: Prometheus text format."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """This instance's counters and histograms (the worker serves the shared gauges)."""
        resp.content_type = METRICS_CONTENT_TYPE
        resp.data = self._render()


class OpenApiResource:
    """``GET /openapi.json``: generated from ``schemas/``."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The OpenAPI document."""
        resp.media = self._document


def unknown_route(req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
    """Every unrouted path, answered in the SPEC error body (after authentication)."""
    # The path is caller input: masked like a log line, never echoed whole (SPEC §2).
    raise NotFound(f"No route {req.method} {redact(req.path)}.")
