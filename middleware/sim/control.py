"""The control API under ``/sim/``: inspect and steer the simulator (routes listed in app.py)."""

from __future__ import annotations

import json
from datetime import date
from typing import Final

import falcon

from middleware.sim.callbacks import render_control
from middleware.sim.org import Org, User, add_time_off, update_user
from middleware.sim.state import Simulator
from middleware.sim.traffic import parse_fault
from middleware.sim.wfm import render_time_off
from middleware.sim.wire import ApiError, Json, iso, parse_date, parse_instant

SEARCH_STATUSES: Final = ("Complete", "Processing", "Canceled", "Error")


def _object(req: falcon.Request, allowed: frozenset[str] | None = None) -> Json:
    """The request's JSON object; 400 when it is not one or has keys outside ``allowed``."""
    raw = req.bounded_stream.read()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, "bad.request", "the body is not JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad.request", "the body must be a JSON object")
    if allowed is not None and set(body) - allowed:
        raise ApiError(400, "bad.request", f"unknown key {sorted(set(body) - allowed)[0]}")
    return body


def user_view(org: Org, user: User) -> Json:
    """The simulator's own view of a user: every setting the control API can change."""
    ooo = user.out_of_office
    bu = org.business_unit_of(user)
    return {
        "id": user.id,
        "name": user.name,
        "state": user.state,
        "presence": user.presence,
        "routingStatus": user.routing_status,
        "outOfOffice": {
            "active": ooo.active, "indefinite": ooo.indefinite,
            "startDate": iso(ooo.start) if ooo.start else None,
            "endDate": iso(ooo.end) if ooo.end else None,
        },
        "queueIds": list(user.queue_ids),
        "managerId": user.manager_id,
        "teamId": user.team_id,
        "managementUnitId": user.management_unit_id,
        "businessUnitId": bu.id if bu else None,
        "timeZone": bu.time_zone if bu else None,
        "about": user.about,
    }


class Control:
    """Every ``/sim/`` route; each takes the simulator lock for its whole change."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def on_get_callbacks(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Every callback with its raw create request and history."""
        with self._sim.lock:
            resp.media = {"callbacks": [render_control(c) for c in self._sim.callbacks.all()]}

    def on_patch_callback(
        self, req: falcon.Request, resp: falcon.Response, conversationId: str
    ) -> None:
        """Move a callback to another state, as if it was handled elsewhere (``at``: when
        that happened, an ISO-8601 instant; now by default)."""
        body = _object(req, frozenset({"state", "at"}))
        at = parse_instant(str(body["at"])) if body.get("at") is not None else None
        if body.get("at") is not None and at is None:
            raise ApiError(400, "bad.request", "at must be an ISO-8601 instant")
        with self._sim.lock:
            callback = self._sim.callbacks.set_state(
                conversationId, str(body.get("state")), at or self._sim.clock.now()
            )
            resp.media = render_control(callback)

    def on_get_stats(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Request counts by route, token fetches, 429s, rejected bodies, injected faults."""
        with self._sim.lock:
            resp.media = self._sim.stats.to_json()

    def on_post_reset(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Back to the seed org with no callbacks, tokens, counters or faults."""
        with self._sim.lock:
            self._sim.reset()
        resp.media = {"reset": True}

    def on_get_faults(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The fault switched on, or null."""
        with self._sim.lock:
            fault = self._sim.faults.current
            resp.media = {"fault": fault.to_json() if fault else None}

    def on_put_faults(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Switch a fault on, replacing any other."""
        fault = parse_fault(_object(req))
        with self._sim.lock:
            self._sim.faults.current = fault
        resp.media = {"fault": fault.to_json()}

    def on_delete_faults(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Switch faults off."""
        with self._sim.lock:
            self._sim.faults.current = None
        resp.media = {"fault": None}

    def on_put_ratelimit(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Set the per-minute limit; the bucket starts full."""
        per_minute = _object(req, frozenset({"perMinute"})).get("perMinute")
        if not isinstance(per_minute, int) or isinstance(per_minute, bool) or per_minute < 1:
            raise ApiError(400, "bad.request", "perMinute must be a positive integer")
        with self._sim.lock:
            self._sim.bucket.set_limit(per_minute)
        resp.media = {"perMinute": per_minute}

    def on_post_expire_tokens(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Invalidate every issued token."""
        with self._sim.lock:
            resp.media = {"expired": self._sim.tokens.expire_all()}

    def on_get_org(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The org's ids and the scenario each user serves."""
        with self._sim.lock:
            org = self._sim.org
            resp.media = {
                "organization": {"id": org.id, "name": org.name},
                "queues": [{"id": q.id, "name": q.name} for q in org.queues.values()],
                "teams": [{"id": t.id, "name": t.name} for t in org.teams.values()],
                "businessUnits": [
                    {"id": b.id, "name": b.name, "timeZone": b.time_zone}
                    for b in org.business_units.values()
                ],
                "managementUnits": [
                    {"id": m.id, "name": m.name, "businessUnitId": m.business_unit_id}
                    for m in org.management_units.values()
                ],
                "users": [user_view(org, u) for u in org.users.values()],
                "timeOff": [render_time_off(org, t) for t in org.time_off],
            }

    def on_patch_user(self, req: falcon.Request, resp: falcon.Response, userId: str) -> None:
        """Change a user's state, presence, routing status, out of office, queues, manager, team."""
        changes = _object(req)
        with self._sim.lock:
            org = self._sim.org
            user = org.user(userId)
            update_user(org, user, changes, self._sim.clock.now())
            resp.media = user_view(org, user)

    def on_patch_queue(self, req: falcon.Request, resp: falcon.Response, queueId: str) -> None:
        """Replace a queue's ``agentOwnedRouting`` (e.g. without enableAgentOwnedCallbacks)."""
        body = _object(req, frozenset({"agentOwnedRouting"}))
        routing = body.get("agentOwnedRouting")
        if not isinstance(routing, dict):
            raise ApiError(400, "bad.request", "agentOwnedRouting must be an object")
        with self._sim.lock:
            queue = self._sim.org.queue(queueId)
            # The queue is frozen; its settings dict is the one part that changes.
            queue.agent_owned_routing.clear()
            queue.agent_owned_routing.update(routing)
            resp.media = {"id": queue.id, "agentOwnedRouting": queue.agent_owned_routing}

    def on_post_timeoff(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Add full-day time off on a BU-local date (``date`` or ``daysFromToday``)."""
        body = _object(req, frozenset({"userId", "date", "daysFromToday", "status"}))
        day: int | date | None
        if "date" in body:
            day = parse_date(body["date"]) if isinstance(body["date"], str) else None
        else:
            offset = body.get("daysFromToday")
            day = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
        if day is None:
            raise ApiError(400, "bad.request", "give date (yyyy-MM-dd) or daysFromToday")
        with self._sim.lock:
            org = self._sim.org
            user = org.user(str(body.get("userId")))
            entry = add_time_off(org, user, day, str(body.get("status", "APPROVED")),
                                 self._sim.clock.now())
            resp.media = render_time_off(org, entry)
        resp.status = falcon.HTTP_201

    def on_put_wfm(self, req: falcon.Request, resp: falcon.Response) -> None:
        """How WFM answers: schedule searches ``Complete`` (with a result) or e.g.
        ``Processing``; ``processingSearches`` searches answer ``Processing`` before they
        complete; with ``download`` results come as a ``downloadUrl`` instead of inline."""
        body = _object(req, frozenset({"scheduleSearchStatus", "processingSearches",
                                       "download"}))
        status = body.get("scheduleSearchStatus", "Complete")
        if status not in SEARCH_STATUSES:
            raise ApiError(400, "bad.request",
                           f"scheduleSearchStatus must be one of {', '.join(SEARCH_STATUSES)}")
        pending = body.get("processingSearches", 0)
        if not isinstance(pending, int) or isinstance(pending, bool) or pending < 0:
            raise ApiError(400, "bad.request", "processingSearches must be a count")
        download = body.get("download", False)
        if not isinstance(download, bool):
            raise ApiError(400, "bad.request", "download must be true or false")
        with self._sim.lock:
            self._sim.schedule_search_status = str(status)
            self._sim.processing_searches = pending
            self._sim.wfm_download = download
        resp.media = {"scheduleSearchStatus": status, "processingSearches": pending,
                      "download": download}

    def on_get_download(self, req: falcon.Request, resp: falcon.Response,
                        downloadId: str) -> None:
        """A WFM result handed out as a ``downloadUrl`` (no bearer token, like a
        pre-signed link)."""
        with self._sim.lock:
            found = self._sim.downloads.get(downloadId)
        if found is None:
            raise ApiError(404, "not.found", "No such download.")
        resp.media = found

    def on_get_fidelity(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Verdicts on every request the product sent since start (or the last clear)."""
        resp.media = self._sim.fidelity.report()

    def on_delete_fidelity(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Forget the verdicts."""
        self._sim.fidelity.clear()
        resp.status = falcon.HTTP_204


def routes(sim: Simulator) -> list[tuple[str, object, str | None]]:
    """Every control route: (path template, resource, responder suffix)."""
    control = Control(sim)
    return [
        ("/sim/callbacks", control, "callbacks"),
        ("/sim/callbacks/{conversationId}", control, "callback"),
        ("/sim/stats", control, "stats"),
        ("/sim/reset", control, "reset"),
        ("/sim/faults", control, "faults"),
        ("/sim/ratelimit", control, "ratelimit"),
        ("/sim/tokens/expire", control, "expire_tokens"),
        ("/sim/org", control, "org"),
        ("/sim/users/{userId}", control, "user"),
        ("/sim/timeoff", control, "timeoff"),
        ("/sim/queues/{queueId}", control, "queue"),
        ("/sim/wfm", control, "wfm"),
        ("/sim/downloads/{downloadId}", control, "download"),
        ("/sim/fidelity", control, "fidelity"),
    ]
