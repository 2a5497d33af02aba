"""The HTTP edge: request ids, the body cap, authentication, the one error handler, resources.

Resources translate only: read the body, call one domain function, set ``resp.media``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from base64 import b64decode
from binascii import Error as BinasciiError
from collections.abc import Callable
from typing import Any, Final

import falcon

from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.deadline import Deadline
from middleware.errors import (
    NotFound,
    PayloadTooLarge,
    ServiceError,
    StoreUnavailable,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from middleware.logs import redact, request_id_var
from middleware.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from middleware.metrics import Metrics
from middleware.web.strict_json import loads as strict_loads

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
OPEN_ROUTES: Final = frozenset({"/healthz", "/readyz"})
# Genesys correlation ids are UUIDs; anything else (a number, say) is neither logged nor echoed.
_CORRELATION: Final = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_MEDIA_TYPE: Final = re.compile(r"^\s*application/json\s*(?:;\s*charset\s*=\s*\"?utf-8\"?\s*)?$",
                                re.IGNORECASE)
#: What a 401 offers, so a client knows which scheme to answer with (RFC 9110 §11.6.1).
WWW_AUTHENTICATE: Final = 'Basic realm="callback-middleware", charset="UTF-8"'
_CHUNK: Final = 16 * 1024

ActionHandler = Callable[[dict[str, Any], RequestContext], dict[str, Any]]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    """Checks Basic and ``X-API-Key`` credentials in constant time against every valid one."""

    def __init__(self, basic: tuple[tuple[str, str], ...], api_keys: tuple[str, ...]) -> None:
        if not basic and not api_keys:
            raise ValueError("at least one credential is required")
        # Fixed-length digests make compare_digest independent of the secret's length too.
        self._basic = [(_digest(f"{user}:{pw}"), f"basic:{user}") for user, pw in basic]
        self._keys = [(_digest(key), f"key:{_digest(key).hex()[:12]}") for key in api_keys]

    def identify(self, authorization: str | None, api_key: str | None) -> str | None:
        """The id of the matching credential, or ``None``; every candidate is compared."""
        match: str | None = None
        if api_key:
            presented = _digest(api_key)
            for digest, ident in self._keys:
                if hmac.compare_digest(presented, digest):
                    match = ident
        if authorization and authorization[:6].lower() == "basic ":
            try:
                pair = b64decode(authorization[6:].strip(), validate=True).decode()
            except (BinasciiError, UnicodeDecodeError):
                return match
            presented = _digest(pair)
            for digest, ident in self._basic:
                if hmac.compare_digest(presented, digest):
                    match = ident
        return match


class RequestGuard:
    """Falcon middleware: request id, deadline, authentication, the 64 KiB body cap, and one
    log line and metric per request."""

    def __init__(self, auth: Authenticator, deadline_s: float, metrics: Metrics,
                 open_routes: frozenset[str] = OPEN_ROUTES) -> None:
        self._auth = auth
        self._deadline_s = deadline_s
        self._metrics = metrics
        self._open = open_routes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Name the request, start its clock, check who calls, read the bounded body."""
        given = req.get_header("ININ-Correlation-Id") or ""
        request_id = given.lower() if _CORRELATION.match(given) else str(uuid.uuid4())
        req.context.request_id = request_id
        req.context.started = time.monotonic()
        req.context.deadline = Deadline(self._deadline_s)
        request_id_var.set(request_id)
        resp.set_header("X-Request-Id", request_id)
        req.context.credential = ""
        if req.path not in self._open:
            credential = self._auth.identify(req.get_header("Authorization"),
                                             req.get_header("X-API-Key"))
            if credential is None:
                raise Unauthorized("Valid Basic or X-API-Key credentials are required.")
            req.context.credential = credential
        req.context.body = _read_body(req) if req.method in ("POST", "PUT", "PATCH") else b""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        """Log one line per request with its outcome and duration."""
        started = getattr(req.context, "started", None)
        media = resp.media if isinstance(resp.media, dict) else {}
        elapsed = time.monotonic() - started if started else 0.0
        outcome, reason = str(media.get("outcome", "")), str(media.get("reason", ""))
        log.info("request", extra={
            "method": req.method, "path": req.path, "status": resp.status_code,
            "outcome": outcome, "reason": reason, "durationMs": round(elapsed * 1000, 1),
        })
        # Labels come from routes, never from the raw path: an unknown or unauthenticated
        # path must not mint new series (or carry a number into /metrics).
        template = (req.uri_template or "") if resource is not None else ""
        action = template.rsplit("/", 1)[-1] if template.startswith("/v1/actions/") \
            else (template or "unrouted")
        if resp.status_code == 401:
            action = "unauthenticated"
        self._metrics.request(action, outcome, reason, resp.status_code, elapsed)
        request_id_var.set("")


def _read_body(req: falcon.Request) -> bytes:
    """Read at most the cap plus one byte, so an oversized body is refused, chunked or not."""
    length = req.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body exceeds {MAX_BODY_BYTES} bytes.")
    stream: Any
    if length is not None:
        stream = req.bounded_stream
    elif req.env.get("wsgi.input_terminated"):
        # gunicorn de-chunks the body and ends the stream itself, so reading is bounded.
        stream = req.stream
    else:
        return b""
    body = bytearray()
    while len(body) <= MAX_BODY_BYTES:
        chunk = stream.read(min(_CHUNK, MAX_BODY_BYTES + 1 - len(body)))
        if not chunk:
            break
        body.extend(chunk)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body exceeds {MAX_BODY_BYTES} bytes.")
    return bytes(body)


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
