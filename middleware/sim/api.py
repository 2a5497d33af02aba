"""Platform API routes: each responder reads the request, asks one domain function, answers.

``ROUTES`` lists every path with the Genesys name of each path parameter; ``BODY_MODELS``
names the official model each JSON body is checked against before the responder runs
(``app.py`` does the check, so no route can skip it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

import falcon

from middleware.sim import analytics, directory, wfm
from middleware.sim.callbacks import (
    render_callback_conversation,
    render_conversation,
    render_created,
)
from middleware.sim.fidelity import USER_GET_STATES
from middleware.sim.org import new_id
from middleware.sim.state import Simulator
from middleware.sim.wire import ApiError, Json, bad_field


@dataclass(frozen=True)
class BodyModel:
    """The model a route's body must match; ``partial`` skips its top-level required flags."""

    name: str
    partial: bool = False


_WFM = "/api/v2/workforcemanagement"
BODY_MODELS: Final[dict[str, BodyModel]] = {
    "POST /api/v2/conversations/callbacks": BodyModel("CreateCallbackCommand"),
    "PATCH /api/v2/conversations/callbacks": BodyModel("PatchCallbackRequest"),
    "POST /api/v2/conversations/callbacks/bulk/disconnect":
        BodyModel("BulkCallbackDisconnectRequest"),
    # Conversation's required startTime/participants describe the entity as read; the
    # disconnect PATCH takes just {"state": "disconnected"}, as its documentation says.
    "PATCH /api/v2/conversations/callbacks/{conversationId}": BodyModel("Conversation", True),
    "POST /api/v2/analytics/conversations/details/query": BodyModel("ConversationQuery"),
    f"POST {_WFM}/managementunits/{{managementUnitId}}/agentschedules/search":
        BodyModel("BuSearchAgentSchedulesRequest"),
    f"POST {_WFM}/businessunits/{{businessUnitId}}/agentschedules/search":
        BodyModel("BuSearchAgentSchedulesRequest"),
    f"POST {_WFM}/managementunits/{{managementUnitId}}/timeoffrequests/query":
        BodyModel("TimeOffRequestQueryBody"),
}


def _csv(req: falcon.Request, name: str) -> list[str]:
    """A list parameter sent either repeated or comma-separated."""
    values = req.get_param_as_list(name) or []
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _body(req: falcon.Request) -> Json:
    body: Json = req.context.body
    return body


class OAuthToken:
    """``POST /oauth/token``: the client-credentials grant of ``login.<region>``."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def _credentials_ok(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, sep, secret = decoded.partition(":")
        id_ok = hmac.compare_digest(client_id.encode(), self._sim.client_id.encode())
        secret_ok = hmac.compare_digest(secret.encode(), self._sim.client_secret.encode())
        return bool(sep) and id_ok and secret_ok

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Issue a bearer token for good client credentials and grant."""
        resp.set_header("Cache-Control", "no-store")
        if not self._credentials_ok(req.get_header("Authorization")):
            _oauth_error(resp, 401, "invalid_client", "client authentication failed")
            return
        form = parse_qs(req.bounded_stream.read().decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        if not grant:
            _oauth_error(resp, 400, "invalid_request", "grant_type is required")
            return
        if grant != "client_credentials":
            _oauth_error(resp, 400, "unsupported_grant_type", "only client_credentials is allowed")
            return
        with self._sim.lock:
            token = self._sim.tokens.issue(self._sim.token_ttl_s)
            self._sim.stats.token_fetches += 1
        resp.media = {
            "access_token": token, "token_type": "bearer", "expires_in": self._sim.token_ttl_s,
        }


def _oauth_error(resp: falcon.Response, status: int, error: str, description: str) -> None:
    resp.status = status
    resp.media = {"error": error, "description": description, "error_description": description}


class Conversations:
    """Callback conversations: create, read, reschedule, disconnect."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def on_post_callbacks(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a callback (CreateCallbackCommand -> CreateCallbackResponse)."""
        with self._sim.lock:
            callback = self._sim.callbacks.create(self._sim.org, _body(req), self._sim.clock.now())
            resp.media = render_created(callback)

    def on_patch_callbacks(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Update a scheduled callback (PatchCallbackRequest -> PatchCallbackResponse)."""
        with self._sim.lock:
            callback = self._sim.callbacks.patch(self._sim.org, _body(req), self._sim.clock.now())
            resp.media = render_created(callback)

    def on_get_callback(
        self, req: falcon.Request, resp: falcon.Response, conversationId: str
    ) -> None:
        """Read a callback conversation (CallbackConversation)."""
        with self._sim.lock:
            callback = self._sim.callbacks.get(conversationId)
            resp.media = render_callback_conversation(self._sim.org, callback)

    def on_patch_callback(
        self, req: falcon.Request, resp: falcon.Response, conversationId: str
    ) -> None:
        """Disconnect a callback conversation with ``{"state": "disconnected"}``."""
        if _body(req).get("state") != "disconnected":
            raise bad_field("state", "invalid.value",
                            "On update, 'disconnected' will disconnect the conversation. "
                            "No other values are valid.")
        with self._sim.lock:
            callback = self._sim.callbacks.get(conversationId)
            self._sim.callbacks.end(callback, "disconnected", self._sim.clock.now(),
                                    "PATCH conversation")
            resp.media = render_conversation(self._sim.org, callback)

    def on_post_bulk_disconnect(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Disconnect scheduled callbacks by conversation id and ACD callback id; no body."""
        with self._sim.lock:
            self._sim.callbacks.disconnect_many(_body(req), self._sim.clock.now())
        resp.status = falcon.HTTP_204

    def on_get_conversation(
        self, req: falcon.Request, resp: falcon.Response, conversationId: str
    ) -> None:
        """Read the conversation (Conversation, with ``participants[].callbacks[]``)."""
        with self._sim.lock:
            callback = self._sim.callbacks.get(conversationId)
            resp.media = render_conversation(self._sim.org, callback)


class Analytics:
    """Conversation detail queries."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Query callbacks (ConversationQuery -> AnalyticsConversationQueryResponse)."""
        with self._sim.lock:
            resp.media = analytics.query(self._sim.org, self._sim.callbacks.all(), _body(req))


class Directory:
    """Users, presences, routing status, queues of a user, teams and queues."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def on_get_users(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List users, optionally by id, filtered by state (UserEntityListing)."""
        expand = directory.check_expand(_csv(req, "expand"))
        state = directory.check_state(req.get_param("state"))
        ids = set(_csv(req, "id"))
        page_size = req.get_param_as_int("pageSize", default=25)
        page_number = req.get_param_as_int("pageNumber", default=1)
        with self._sim.lock:
            org = self._sim.org
            users = sorted(
                (u for u in org.users.values()
                 if directory.shows(u, state) and (not ids or u.id in ids)),
                key=lambda u: (u.name, u.id),
            )
            entities = [directory.render_user(org, u, expand) for u in users]
        resp.media = directory.paged_listing(entities, page_size, page_number, "/api/v2/users")

    def on_get_user(
        self, req: falcon.Request, resp: falcon.Response, userId: str
    ) -> None:
        """Read one user (User); ``state`` is ``active`` (default) or ``deleted``."""
        expand = directory.check_expand(_csv(req, "expand"))
        state = directory.check_state(req.get_param("state"), allowed=USER_GET_STATES)
        with self._sim.lock:
            user = directory.require_user(self._sim.org, userId, state)
            resp.media = directory.render_user(self._sim.org, user, expand)

    def on_get_presence(
        self, req: falcon.Request, resp: falcon.Response, userId: str
    ) -> None:
        """Read a user's Genesys Cloud presence (UserPresence)."""
        with self._sim.lock:
            resp.media = directory.render_presence(self._sim.org.visible_user(userId))

    def on_get_bulk_presence(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Read up to 50 users' presences (list of UcUserPresence); unknown ids are skipped."""
        ids = _csv(req, "id")
        if len(ids) > directory.MAX_BULK_PRESENCE_IDS:
            raise ApiError(400, "bad.request",
                           f"At most {directory.MAX_BULK_PRESENCE_IDS} ids may be requested.")
        with self._sim.lock:
            users = [self._sim.org.users.get(i) for i in ids]
            resp.media = [
                directory.render_uc_presence(u) for u in users
                if u is not None and u.state != "deleted"
            ]

    def on_get_routing_status(
        self, req: falcon.Request, resp: falcon.Response, userId: str
    ) -> None:
        """Read a user's ACD status (RoutingStatus); OFF_QUEUE for an unknown user."""
        with self._sim.lock:
            resp.media = directory.render_routing_status(userId, self._sim.org.users.get(userId))

    def on_get_queues(
        self, req: falcon.Request, resp: falcon.Response, userId: str
    ) -> None:
        """List a user's queues (UserQueueEntityListing); every membership is joined."""
        joined = req.get_param_as_bool("joined")
        page_size = req.get_param_as_int("pageSize", default=25)
        page_number = req.get_param_as_int("pageNumber", default=1)
        with self._sim.lock:
            org = self._sim.org
            user = org.visible_user(userId)
            entities = [] if joined is False else [
                directory.render_user_queue(org, org.queues[q]) for q in user.queue_ids
            ]
        resp.media = directory.paged_listing(
            entities, page_size, page_number, f"/api/v2/users/{userId}/queues"
        )

    def on_get_out_of_office(
        self, req: falcon.Request, resp: falcon.Response, userId: str
    ) -> None:
        """Read a user's out-of-office setting (OutOfOffice)."""
        with self._sim.lock:
            resp.media = directory.render_out_of_office(self._sim.org.visible_user(userId))

    def on_get_superiors(
        self, req: falcon.Request, resp: falcon.Response, userId: str
    ) -> None:
        """List a user's superiors (list of User)."""
        expand = directory.check_expand(_csv(req, "expand"))
        with self._sim.lock:
            org = self._sim.org
            resp.media = [
                directory.render_user(org, u, expand)
                for u in directory.superiors(org, org.visible_user(userId))
            ]

    def on_get_team_members(
        self, req: falcon.Request, resp: falcon.Response, teamId: str
    ) -> None:
        """List a team's members with cursor paging (TeamMemberEntityListing)."""
        page_size = req.get_param_as_int("pageSize", default=25)
        with self._sim.lock:
            resp.media = directory.render_team_members(
                self._sim.org, teamId, page_size, req.get_param("after"), req.get_param("before")
            )

    def on_get_queue(
        self, req: falcon.Request, resp: falcon.Response, queueId: str
    ) -> None:
        """Read a queue (Queue, with agentOwnedRouting and routingRules)."""
        with self._sim.lock:
            resp.media = directory.render_queue(self._sim.org, self._sim.org.queue(queueId))


class Workforce:
    """WFM: units, time zones, published schedules, time off."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def on_get_agent_unit(
        self, req: falcon.Request, resp: falcon.Response, agentId: str
    ) -> None:
        """Read an agent's management unit (AgentManagementUnitReference); 404 without WFM."""
        with self._sim.lock:
            resp.media = wfm.agent_management_unit(self._sim.org, agentId)

    def on_get_management_unit(
        self, req: falcon.Request, resp: falcon.Response, managementUnitId: str
    ) -> None:
        """Read a management unit (ManagementUnit)."""
        with self._sim.lock:
            resp.media = wfm.management_unit(self._sim.org, managementUnitId)

    def on_get_business_unit(
        self, req: falcon.Request, resp: falcon.Response, businessUnitId: str
    ) -> None:
        """Read a business unit (BusinessUnitResponse), settings with ``expand``."""
        with self._sim.lock:
            resp.media = wfm.business_unit(self._sim.org, businessUnitId, _csv(req, "expand"))

    def _search(self, req: falcon.Request, resp: falcon.Response, *,
                mu_id: str | None = None, bu_id: str | None = None) -> None:
        force_async = req.get_param_as_bool("forceAsync") or False
        with self._sim.lock:
            org = self._sim.org
            if mu_id is not None:
                bu, units = wfm.units_of_management_unit(org, mu_id)
            else:
                bu, units = wfm.units_of_business_unit(org, bu_id or "")
            status = "Processing" if force_async else self._sim.schedule_search_status
            if status == "Complete" and self._sim.processing_searches > 0:
                self._sim.processing_searches -= 1
                status = "Processing"
            out: dict[str, Any] = {"status": status, "operationId": new_id()}
            if status == "Complete":
                result = wfm.search_schedules(org, bu, units, _body(req))
                if self._sim.wfm_download:
                    out["downloadUrl"] = self._offer_download(req, result)
                else:
                    out["result"] = result
            else:
                out["progress"] = 0
        resp.media = out

    def _offer_download(self, req: falcon.Request, result: Json) -> str:
        """Keep a result for ``GET /sim/downloads/{id}``; the caller holds the lock."""
        download_id = new_id()
        self._sim.downloads[download_id] = result
        return f"{req.prefix}/sim/downloads/{download_id}"

    def on_post_unit_schedules(
        self, req: falcon.Request, resp: falcon.Response, managementUnitId: str
    ) -> None:
        """Search a management unit's published shifts (BuAsyncAgentSchedulesSearchResponse)."""
        self._search(req, resp, mu_id=managementUnitId)

    def on_post_business_schedules(
        self, req: falcon.Request, resp: falcon.Response, businessUnitId: str
    ) -> None:
        """Search a business unit's published shifts (BuAsyncAgentSchedulesSearchResponse)."""
        self._search(req, resp, bu_id=businessUnitId)

    def on_post_time_off(
        self, req: falcon.Request, resp: falcon.Response, managementUnitId: str
    ) -> None:
        """Query a management unit's time-off requests (TimeOffRequestListing)."""
        with self._sim.lock:
            listing = wfm.query_time_off(self._sim.org, managementUnitId, _body(req))
            if self._sim.wfm_download:
                listing = {"downloadUrl": self._offer_download(req, listing)}
            resp.media = listing


def routes(sim: Simulator) -> list[tuple[str, object, str | None]]:
    """Every platform route: (path template, resource, responder suffix)."""
    conversations, directory_, workforce = Conversations(sim), Directory(sim), Workforce(sim)
    callbacks = "/api/v2/conversations/callbacks"
    return [
        ("/oauth/token", OAuthToken(sim), None),
        (callbacks, conversations, "callbacks"),
        (f"{callbacks}/bulk/disconnect", conversations, "bulk_disconnect"),
        (f"{callbacks}/{{conversationId}}", conversations, "callback"),
        ("/api/v2/conversations/{conversationId}", conversations, "conversation"),
        ("/api/v2/analytics/conversations/details/query", Analytics(sim), None),
        ("/api/v2/users", directory_, "users"),
        ("/api/v2/users/presences/purecloud/bulk", directory_, "bulk_presence"),
        ("/api/v2/users/{userId}", directory_, "user"),
        ("/api/v2/users/{userId}/presences/purecloud", directory_, "presence"),
        ("/api/v2/users/{userId}/routingstatus", directory_, "routing_status"),
        ("/api/v2/users/{userId}/queues", directory_, "queues"),
        ("/api/v2/users/{userId}/outofoffice", directory_, "out_of_office"),
        ("/api/v2/users/{userId}/superiors", directory_, "superiors"),
        ("/api/v2/teams/{teamId}/members", directory_, "team_members"),
        ("/api/v2/routing/queues/{queueId}", directory_, "queue"),
        (f"{_WFM}/agents/{{agentId}}/managementunit", workforce, "agent_unit"),
        (f"{_WFM}/managementunits/{{managementUnitId}}", workforce, "management_unit"),
        (f"{_WFM}/businessunits/{{businessUnitId}}", workforce, "business_unit"),
        (f"{_WFM}/managementunits/{{managementUnitId}}/agentschedules/search", workforce,
         "unit_schedules"),
        (f"{_WFM}/businessunits/{{businessUnitId}}/agentschedules/search", workforce,
         "business_schedules"),
        (f"{_WFM}/managementunits/{{managementUnitId}}/timeoffrequests/query", workforce,
         "time_off"),
    ]
