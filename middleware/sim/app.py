"""Genesys Cloud simulator: the real Platform API paths and shapes, in memory, for one process.

``create_sim_app`` builds everything; ``wsgi.py`` is the gunicorn shim (one worker: state
lives in memory). The routes are in ``api.py`` (platform) and ``control.py`` (control).

Every ``/api/v2`` and ``/oauth`` request goes through the same steps, in the platform's
order: count it (``/sim/stats``, by verb and route template), apply the switched-on fault
if it matches, then for ``/api/v2`` require ``Authorization: Bearer`` with a live token
(401 ``authentication.required`` / ``bad.credentials``), spend one token of the rate bucket
(429 ``too.many.requests.retry.after`` with ``Retry-After``; otherwise the
``inin-ratelimit-*`` headers), check the JSON body against its official model (400
``bad.request`` naming each field), and only then run the route. Every answer carries
``ININ-Correlation-Id``; every error is an ErrorBody whose ``contextId`` is that id.

Control API (no auth, JSON in and out, serialised by the simulator lock; faults never
apply to it):

- ``GET /sim/callbacks``: ``{"callbacks": [{conversationId, callbackIdentifiers, state,
  ownerAgentId, queueId, callbackNumbers, callbackScheduledTime, callbackUserName, data,
  request (the raw create body), createdAt, endedAt, history}]}``.
- ``PATCH /sim/callbacks/{conversationId}`` ``{"state": "scheduled"|"connected"|
  "disconnected"|"completed", "at"?}``: as if the callback moved on elsewhere (at ``at``, an
  ISO-8601 instant, or now); answers the callback.
- ``GET /sim/stats``: ``{"requests": {"POST /api/v2/conversations/callbacks": n, ...},
  "tokenFetches", "rateLimited", "rejectedBodies", "faultsInjected"}``.
- ``POST /sim/reset``: no callbacks, tokens, counters or faults; the org rebuilt from its
  seed (relative days read again from the clock); the bucket full at the configured limit;
  schedule searches ``Complete``.
- ``PUT /sim/faults`` ``{"status": 400-599, "retryAfter": s, "latencyMs": ms, "count": n,
  "pathPrefix": "/api/v2/...", "method": "POST", "mode": "respond"|"drop",
  "phase": "before"|"after"}``: one fault,
  replacing any other. Matching requests wait ``latencyMs``, then get ``status`` as an
  ErrorBody (a 429 in the platform's 429 shape; ``Retry-After`` when ``retryAfter`` is
  set), or with no status just proceed late. ``drop`` waits, then shuts the client socket
  down so the client sees the connection close with no response at all; that needs the
  socket, which gunicorn exposes as ``environ["gunicorn.socket"]``; a server that does not
  gets a 504 ErrorBody instead. ``count`` limits how many requests get it (default: until
  cleared); ``pathPrefix`` and ``method`` narrow it (default: every /api/v2 and /oauth
  request). ``"phase": "after"`` applies it once the route has run instead (a create lands,
  then its answer waits ``latencyMs`` and is dropped or replaced by ``status``), the way a
  timeout or a proxy error hides work the platform did. ``GET /sim/faults`` shows it,
  ``DELETE /sim/faults`` clears it.
- ``PUT /sim/ratelimit`` ``{"perMinute": n}``: new limit, bucket refilled.
- ``POST /sim/tokens/expire``: every issued token stops working (next call is 401).
- ``GET /sim/org``: ids of the queue, teams, units (with zones) and users, with the
  scenario each user serves.
- ``PATCH /sim/users/{userId}``: any of ``state`` (active|inactive|deleted), ``presence``
  (a systemPresence such as ``Available``, ``OnQueue``, ``Offline``), ``routingStatus``,
  ``outOfOffice`` ``{active, startDate, endDate, indefinite}``, ``queueIds``, ``managerId``,
  ``teamId``, ``weeklyHours`` (``{"mon": ["22:00", "06:00"]}``; an end before the start
  runs into the next day).
- ``PATCH /sim/queues/{queueId}`` ``{"agentOwnedRouting": {...}}``: replace the queue's
  agent-owned routing settings.
- ``POST /sim/timeoff`` ``{"userId", "date": "YYYY-MM-DD" (BU zone) | "daysFromToday": n,
  "status": "APPROVED"|"PENDING"|"DENIED"|"CANCELED"}``: a full-day time-off request.
- ``PUT /sim/wfm`` ``{"scheduleSearchStatus": "Complete"|"Processing"|...,
  "processingSearches": n, "download": bool}``: schedule searches answer with a result
  only when ``Complete``; the next ``n`` answer ``Processing`` first; with ``download``
  searches and time-off queries answer a ``downloadUrl`` (``GET /sim/downloads/{id}``,
  no token) instead of the result.
- ``GET /sim/fidelity``: ``{"checked", "departures"}``, a verdict on every ``/api/v2``
  request whose ``User-Agent`` is the product's (``fidelity.py``), kept across resets;
  ``DELETE /sim/fidelity`` forgets them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import falcon
from falcon.routing import CompiledRouter

from middleware.clock import Clock
from middleware.sim import api, control, integrations
from middleware.sim.fidelity import PRODUCT_AGENT, query_departures, request_departures
from middleware.sim.models import ModelCatalog
from middleware.sim.state import Simulator
from middleware.sim.traffic import Fault
from middleware.sim.wire import ApiError, BodyError, Detail, error_body

logger = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1024 * 1024
_FAULT_CODES: Final = {
    400: "bad.request", 401: "bad.credentials", 403: "not.authorized", 404: "not.found",
    409: "conflict", 500: "internal.server.error", 502: "bad.gateway",
    503: "service.unavailable", 504: "gateway.timeout",
}


def load_org(path: str | None) -> dict[str, Any]:
    """The seed org JSON from ``path``, or the shipped demo org when ``path`` is empty."""
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files("middleware.sim").joinpath("demo_org.json").read_text(
            encoding="utf-8"
        )
    seed = json.loads(text)
    if not isinstance(seed, dict):
        raise ValueError(f"{path or 'demo_org.json'} must hold a JSON object")
    return seed


def rate_limited(retry_after_s: int) -> ApiError:
    """The platform's normalised 429."""
    return ApiError(
        429, "too.many.requests.retry.after",
        f"Rate limit exceeded the maximum. Retry the request in [{retry_after_s}] seconds",
        headers={"Retry-After": str(retry_after_s)},
    )


def _context_id(req: falcon.Request) -> str:
    return str(getattr(req.context, "correlation_id", "")) or str(uuid.uuid4())


class _Gate:
    """The per-request steps every platform request takes before its route (see above)."""

    def __init__(self, sim: Simulator, router: CompiledRouter) -> None:
        self._sim = sim
        self._router = router
        self._integration_models = integrations.body_models()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Correlate, count, inject faults, authenticate and rate-limit."""
        req.context.correlation_id = str(uuid.uuid4())
        resp.set_header("ININ-Correlation-Id", req.context.correlation_id)
        path = req.path
        if not path.startswith(("/api/v2/", "/oauth/")):
            return
        route = self._router.find(path)
        template = route[3] if route is not None else "(no route)"
        if path.startswith("/api/v2/") and \
                (req.get_header("User-Agent") or "").startswith(PRODUCT_AGENT):
            self._judge(req, f"{req.method} {template}")
        with self._sim.lock:
            self._sim.stats.requests[f"{req.method} {template}"] += 1
            fault = self._sim.faults.take(req.method, path)
            if fault is not None:
                self._sim.stats.faults_injected += 1
        if fault is not None and fault.phase == "after":
            req.context.after_fault = fault
        elif fault is not None:
            self._inject(fault, req)
        if path.startswith("/api/v2/"):
            self._authenticate(req)
            self._admit(resp)

    def _judge(self, req: falcon.Request, route: str) -> None:
        """Record whether the product's request is one a real org accepts (before any fault,
        so every request is judged, even one the simulator then fails on purpose)."""
        model = api.BODY_MODELS.get(route)
        body: Any = None
        if model is not None:
            raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
            req.context.raw_body = raw
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                body = None
        self._sim.fidelity.record(lambda: request_departures(
            route, _query(req), body, (model.name, model.partial) if model else None,
            self._sim.catalog, path=req.path))

    def _inject(self, fault: Fault, req: falcon.Request) -> None:
        logger.info("fault injected method=%s path=%s status=%s mode=%s",
                    req.method, req.path, fault.status, fault.mode)
        if fault.latency_ms:
            time.sleep(fault.latency_ms / 1000)
        if fault.mode == "drop":
            client = req.env.get("gunicorn.socket")
            if isinstance(client, socket.socket):
                # Shut down, never close: the server still owns the descriptor and its
                # write of our answer fails harmlessly (EPIPE) instead of hitting a reused fd.
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
            raise ApiError(504, "gateway.timeout", "The simulator dropped this request.")
        if fault.status is None:
            return
        if fault.status == 429:
            raise rate_limited(fault.retry_after_s or 1)
        headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s else {}
        raise ApiError(fault.status, _FAULT_CODES.get(fault.status, "simulated.fault"),
                       f"Simulated failure ({fault.status}).", headers=headers)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Apply an ``after`` fault: the route has run (a create landed); its answer is lost."""
        fault = getattr(req.context, "after_fault", None)
        if fault is None:
            return
        try:
            self._inject(fault, req)
        except ApiError as exc:
            resp.status = exc.status
            for name, value in exc.headers.items():
                resp.set_header(name, value)
            resp.text = None
            resp.data = None
            resp.media = error_body(exc.status, exc.code, exc.message, _context_id(req))

    def _authenticate(self, req: falcon.Request) -> None:
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "authentication.required",
                           "No authentication bearer token specified in authorization header.")
        with self._sim.lock:
            valid = self._sim.tokens.valid(token.strip())
        if not valid:
            raise ApiError(401, "bad.credentials", "Invalid login credentials.")

    def _admit(self, resp: falcon.Response) -> None:
        with self._sim.lock:
            admission = self._sim.bucket.take()
            if not admission.allowed:
                self._sim.stats.rate_limited += 1
        if not admission.allowed:
            raise rate_limited(admission.retry_after_s)
        resp.set_header("inin-ratelimit-count", str(admission.count))
        resp.set_header("inin-ratelimit-allowed", str(admission.limit))
        resp.set_header("inin-ratelimit-reset", str(admission.reset_s))

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        """Check a platform route's query against the SDK and its JSON body against its
        official model."""
        if not req.path.startswith("/api/v2/"):
            return
        route = f"{req.method} {req.uri_template}"
        bad_query = query_departures(route, _query(req))
        if bad_query:
            raise BodyError([Detail(d.field_name, d.error_code) for d in bad_query],
                            "; ".join(d.message for d in bad_query))
        model = api.BODY_MODELS.get(route) or self._integration_models.get(route)
        if model is None:
            return
        body = _read_json(req)
        details = self._sim.catalog.validate(model.name, body, partial=model.partial)
        if details:
            raise BodyError(details)
        req.context.body = body


def _query(req: falcon.Request) -> dict[str, list[str]]:
    return parse_qs(req.query_string, keep_blank_values=True)


def _read_json(req: falcon.Request) -> Any:
    if req.content_type and not req.content_type.startswith("application/json"):
        raise ApiError(415, "unsupported.media.type", "The body must be application/json.")
    if (req.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, "request.entity.too.large", "The request body is too large.")
    raw = getattr(req.context, "raw_body", None)
    if raw is None:
        raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if not raw.strip():
        raise BodyError([Detail("body", "required.field.missing")], "A request body is required.")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BodyError([Detail("body", "invalid.json")], "The body is not valid JSON.") from exc


def _install_error_handlers(app: falcon.App[falcon.Request, falcon.Response],
                            sim: Simulator) -> None:
    """Render every failure as an ErrorBody; count rejected platform bodies."""

    def on_api_error(
        req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict[str, Any]
    ) -> None:
        if isinstance(ex, BodyError) and req.path.startswith("/api/v2/"):
            with sim.lock:
                sim.stats.rejected_bodies += 1
        resp.status = ex.status
        for name, value in ex.headers.items():
            resp.set_header(name, value)
        resp.media = error_body(ex.status, ex.code, ex.message, _context_id(req), ex.details)

    def on_http_error(
        req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
    ) -> None:
        status = ex.status_code
        code = _FAULT_CODES.get(status, "bad.request" if status < 500 else "internal.server.error")
        if status == 405:
            code = "method.not.allowed"
        resp.status = status
        headers = ex.headers or {}
        for name, value in headers.items() if isinstance(headers, Mapping) else headers:
            resp.set_header(name, value)
        resp.media = error_body(status, code, ex.description or ex.title or "Request failed.",
                                _context_id(req))

    def on_unexpected(
        req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
    ) -> None:
        logger.exception("unexpected error method=%s path=%s", req.method, req.path)
        resp.status = 500
        resp.media = error_body(500, "internal.server.error", "The simulator failed.",
                                _context_id(req))

    app.add_error_handler(Exception, on_unexpected)
    app.add_error_handler(falcon.HTTPError, on_http_error)
    app.add_error_handler(ApiError, on_api_error)


def create_sim_app(
    org: dict[str, Any],
    *,
    clock: Clock,
    rate_limit_per_min: int,
    token_ttl_s: int,
    client_id: str,
    client_secret: str,
) -> falcon.App[falcon.Request, falcon.Response]:
    """Build the simulator for a seed org: every route, the request gate and error handling."""
    sim = Simulator(
        org, clock=clock, catalog=ModelCatalog.load(), rate_limit_per_min=rate_limit_per_min,
        token_ttl_s=token_ttl_s, client_id=client_id, client_secret=client_secret,
    )
    router = CompiledRouter()
    app = falcon.App(middleware=[_Gate(sim, router)], router=router)
    platform = api.routes(sim) + integrations.routes(sim)
    for template, resource, suffix in platform + control.routes(sim):
        if suffix is None:
            app.add_route(template, resource)
        else:
            app.add_route(template, resource, suffix=suffix)
    _install_error_handlers(app, sim)
    return app
