"""The guard of every request: its id, its deadline, who calls, and the 64 KiB body cap."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from base64 import b64decode
from binascii import Error as BinasciiError
from typing import Any, Final

import falcon

from middleware.deadline import Deadline
from middleware.errors import PayloadTooLarge, Unauthorized
from middleware.logs import mask_number, request_id_var
from middleware.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
OPEN_ROUTES: Final = frozenset({"/healthz", "/readyz"})
# Genesys correlation ids are UUIDs; anything else (a number, say) is neither logged nor echoed.
_CORRELATION: Final = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
#: What a 401 offers, so a client knows which scheme to answer with (RFC 9110 §11.6.1).
WWW_AUTHENTICATE: Final = 'Basic realm="callback-middleware", charset="UTF-8"'
_CHUNK: Final = 16 * 1024
#: Answer fields the request line repeats when set (ids only: no number, no free text).
_LOGGED_IDS: Final = ("callbackId", "assignedAgentId", "consentId")


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
        line: dict[str, Any] = {
            "method": req.method, "path": req.path, "status": resp.status_code,
            "outcome": outcome, "reason": reason, "durationMs": round(elapsed * 1000, 1),
        }
        # The ids the answer names, so one line says what a request did (a create's
        # callback, its owner, the consent it relies on) without a second line to join.
        for name in _LOGGED_IDS:
            value = media.get(name)
            if value:
                line[name] = value
        number = media.get("customerNumberE164")
        if number:
            line["number"] = mask_number(str(number))
        log.info("request", extra=line)
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
