"""Callbacks: create, read, reschedule and disconnect, with the rules the platform documents.

On top of the model check (``models.py``), a create or patch is refused with 400 when:
``callbackNumbers`` is empty; with ``validateCallbackNumbers: true`` a number is not E.164
(``^\\+[1-9]\\d{6,14}$``), as ``callerId`` must always be; neither ``queueId`` nor
``routingData.queueId`` names an existing queue; a scored agent is unknown or its score is
outside 0-100; the time is more than 30 days ahead, or, for an agent-owned callback, beyond
the queue's ``maxOwnedCallbackDelayHours``. ``AGENT_OWNED_CALLBACK`` needs exactly one
scored agent with score 100 (what the SDK documents) on a queue with agent-owned callbacks
enabled; that agent is the owner. A patch never moves ownership (``agentId`` must name a
user and is recorded), so re-owning is a disconnect plus a new create.

The simulator's choices where the reference is unconfirmed: the ``ACD`` callback identifier
is the id of the ACD participant's callback communication and is the ``callbackId`` a bulk
disconnect must send; the ``EXTERNAL`` one is the customer's. ``GET`` of a callback
conversation lists the customer participant (owner as ``user``, create ``data`` as
``attributes``) then the ACD participant. Their states keep to the SDK enums, and what a
real org shows is not documented: a pending callback's participants carry no ``state``
(CallbackMediaParticipant has no ``scheduled``), while the ``callbacks[]`` communications
of ``GET /api/v2/conversations/{id}`` read ``scheduled`` (the Callback enum has it); an
ended callback reads ``disconnected`` in both, whether it was cancelled or completed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from middleware.sim.directory import user_uri
from middleware.sim.org import Org, new_id
from middleware.sim.wire import (
    ApiError,
    BodyError,
    Detail,
    Json,
    iso,
    not_found,
    parse_instant,
    ref,
)

logger = logging.getLogger(__name__)

AGENT_OWNED_FLAG: Final = "AGENT_OWNED_CALLBACK"
E164: Final = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_SCHEDULE_DAYS: Final = 30
CALLBACK_STATES: Final = ("scheduled", "connected", "disconnected", "completed")
ENDED_STATES: Final = frozenset({"disconnected", "completed"})
# CallbackMediaParticipant.state; a pending callback's participant state is left out.
_PARTICIPANT_STATE: Final = {
    "scheduled": None, "connected": "connected", "disconnected": "disconnected",
    "completed": "disconnected",
}
# Callback.state of a conversation's callback communication.
_COMMUNICATION_STATE: Final = {
    "scheduled": "scheduled", "connected": "connected", "disconnected": "disconnected",
    "completed": "disconnected",
}


@dataclass
class Callback:
    """One callback conversation as the simulator keeps it."""

    conversation_id: str
    acd_id: str
    external_id: str
    customer_participant_id: str
    acd_participant_id: str
    queue_id: str
    owner_agent_id: str | None
    scored_agents: list[tuple[str, int]]
    priority: int
    callback_numbers: list[str]
    scheduled_time: datetime | None
    user_name: str | None
    data: dict[str, str]
    request: Json
    created_at: datetime
    state: str = "scheduled"
    ended_at: datetime | None = None
    history: list[Json] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        """Whether the conversation is over (disconnected or completed)."""
        return self.state in ENDED_STATES


def _check_numbers(numbers: list[str], validate: bool, path: str) -> list[Detail]:
    if not numbers:
        return [Detail(path, "invalid.value")]
    details = []
    for index, number in enumerate(numbers):
        if not number.strip():
            details.append(Detail(f"{path}[{index}]", "invalid.value"))
        elif validate and not E164.match(number):
            details.append(Detail(f"{path}[{index}]", "invalid.phone.number"))
    return details


def _check_time(
    org: Org, text: str | None, queue_id: str | None, agent_owned: bool, now: datetime
) -> list[Detail]:
    if text is None:
        return []
    instant = parse_instant(text)
    if instant is None:
        return [Detail("callbackScheduledTime", "invalid.datetime")]
    if instant > now + timedelta(days=MAX_SCHEDULE_DAYS):
        return [Detail("callbackScheduledTime", "invalid.value")]
    queue = org.queues.get(queue_id or "")
    if agent_owned and queue is not None:
        hours = queue.agent_owned_routing.get("maxOwnedCallbackDelayHours")
        if isinstance(hours, int) and instant > now + timedelta(hours=hours):
            return [Detail("callbackScheduledTime", "invalid.value")]
    return []


def _known_user(org: Org, user_id: str) -> bool:
    user = org.users.get(user_id)
    return user is not None and user.state != "deleted"


class CallbackLedger:
    """Every callback created since the last reset; callers hold the simulator lock."""

    def __init__(self) -> None:
        self._callbacks: dict[str, Callback] = {}

    def clear(self) -> None:
        """Forget every callback."""
        self._callbacks.clear()

    def all(self) -> list[Callback]:
        """Every callback, oldest first."""
        return list(self._callbacks.values())

    def get(self, conversation_id: str) -> Callback:
        """The callback of this conversation; 404 when unknown."""
        found = self._callbacks.get(conversation_id)
        if found is None:
            raise not_found("conversation", conversation_id)
        return found

    def create(self, org: Org, body: Mapping[str, Any], now: datetime) -> Callback:
        """Create a callback from a model-checked CreateCallbackCommand."""
        routing: Mapping[str, Any] = body.get("routingData") or {}
        details = _check_numbers(
            body["callbackNumbers"], bool(body.get("validateCallbackNumbers")), "callbackNumbers"
        )
        caller_id = body.get("callerId")
        if caller_id is not None and not E164.match(caller_id):
            details.append(Detail("callerId", "invalid.phone.number"))
        queue_path = "routingData.queueId" if routing else "queueId"
        queue_id = routing.get("queueId") or body.get("queueId")
        if routing and body.get("queueId") and body["queueId"] != routing.get("queueId"):
            details.append(Detail("queueId", "conflicting.value"))
        if queue_id is None:
            details.append(Detail(queue_path, "required.field.missing"))
        elif queue_id not in org.queues:
            details.append(Detail(queue_path, "entity.not.found"))
        scored: list[tuple[str, int]] = []
        for index, entry in enumerate(routing.get("scoredAgents") or []):
            path = f"routingData.scoredAgents[{index}]"
            agent_id = (entry.get("agent") or {}).get("id")
            score = entry.get("score") or 0
            if agent_id is None:
                details.append(Detail(f"{path}.agent.id", "required.field.missing"))
            elif not _known_user(org, agent_id):
                details.append(Detail(f"{path}.agent.id", "entity.not.found"))
            if not 0 <= score <= 100:
                details.append(Detail(f"{path}.score", "invalid.value"))
            scored.append((agent_id or "", score))
        agent_owned = AGENT_OWNED_FLAG in (routing.get("routingFlags") or [])
        if agent_owned:
            if len(scored) != 1 or scored[0][1] != 100:
                details.append(Detail("routingData.scoredAgents", "agent.owned.needs.one.agent"))
            queue = org.queues.get(queue_id or "")
            if queue is not None and not queue.agent_owned_routing.get(
                "enableAgentOwnedCallbacks"
            ):
                details.append(Detail("routingData.routingFlags", "agent.owned.disabled"))
        details += _check_time(org, body.get("callbackScheduledTime"), queue_id, agent_owned, now)
        if details or queue_id is None:
            raise BodyError(details)
        scheduled = body.get("callbackScheduledTime")
        callback = Callback(
            conversation_id=new_id(), acd_id=new_id(), external_id=new_id(),
            customer_participant_id=new_id(), acd_participant_id=new_id(),
            queue_id=queue_id,
            owner_agent_id=scored[0][0] if agent_owned else None,
            scored_agents=scored,
            priority=routing.get("priority", 0),
            callback_numbers=list(body["callbackNumbers"]),
            scheduled_time=parse_instant(scheduled) if scheduled else None,
            user_name=body.get("callbackUserName"),
            data=dict(body.get("data") or {}),
            request=dict(body),
            created_at=now,
        )
        self._callbacks[callback.conversation_id] = callback
        logger.info("callback created conversation=%s queue=%s owner=%s",
                    callback.conversation_id, callback.queue_id, callback.owner_agent_id)
        return callback

    def patch(self, org: Org, body: Mapping[str, Any], now: datetime) -> Callback:
        """Apply a model-checked PatchCallbackRequest to a scheduled callback."""
        callback = self.get(body["conversationId"])
        details: list[Detail] = []
        if callback.ended:
            details.append(Detail("conversationId", "callback.not.scheduled"))
        if not _known_user(org, body["agentId"]):
            details.append(Detail("agentId", "entity.not.found"))
        queue_id = body.get("queueId") or callback.queue_id
        if queue_id not in org.queues:
            details.append(Detail("queueId", "entity.not.found"))
        numbers = body.get("callbackNumbers")
        if numbers is not None:
            details += _check_numbers(
                numbers, bool(body.get("validateCallbackNumbers")), "callbackNumbers"
            )
        details += _check_time(org, body.get("callbackScheduledTime"), queue_id,
                               callback.owner_agent_id is not None, now)
        if details:
            raise BodyError(details)
        callback.queue_id = queue_id
        if numbers is not None:
            callback.callback_numbers = list(numbers)
        if body.get("callbackScheduledTime"):
            callback.scheduled_time = parse_instant(body["callbackScheduledTime"])
        changes = {k: v for k, v in body.items() if k != "conversationId"}
        callback.history.append({"at": iso(now), "action": "patch", "changes": changes})
        return callback

    def disconnect_many(self, body: Mapping[str, Any], now: datetime) -> None:
        """Disconnect every callback of a model-checked BulkCallbackDisconnectRequest, or none."""
        items = body["callbackDisconnectIdentifiers"]
        if not items:
            raise BodyError([Detail("callbackDisconnectIdentifiers", "invalid.value")])
        details, targets = [], []
        for index, item in enumerate(items):
            path = f"callbackDisconnectIdentifiers[{index}]"
            callback = self._callbacks.get(item["conversationId"])
            if callback is None:
                details.append(Detail(f"{path}.conversationId", "entity.not.found"))
            elif item["callbackId"] != callback.acd_id:
                details.append(Detail(f"{path}.callbackId", "invalid.value"))
            else:
                targets.append(callback)
        if details:
            raise BodyError(details)
        for callback in targets:
            self.end(callback, "disconnected", now, "bulk disconnect")

    def end(self, callback: Callback, state: str, now: datetime, via: str) -> None:
        """End a pending callback (a no-op when it already ended)."""
        if callback.ended:
            return
        callback.state, callback.ended_at = state, now
        callback.history.append({"at": iso(now), "action": state, "via": via})

    def set_state(self, conversation_id: str, state: str, now: datetime) -> Callback:
        """Move a callback to any state, as if it happened elsewhere (control API)."""
        callback = self.get(conversation_id)
        if state not in CALLBACK_STATES:
            raise ApiError(400, "bad.request", f"state must be one of {', '.join(CALLBACK_STATES)}")
        if state in ENDED_STATES:
            self.end(callback, state, now, "simulator control")
        else:
            callback.state, callback.ended_at = state, None
            callback.history.append({"at": iso(now), "action": state, "via": "simulator control"})
        return callback


def render_created(callback: Callback) -> Json:
    """The CreateCallbackResponse / PatchCallbackResponse of a callback."""
    return {
        "conversation": ref(callback.conversation_id,
                            f"/api/v2/conversations/{callback.conversation_id}"),
        "callbackIdentifiers": [
            {"type": "ACD", "id": callback.acd_id},
            {"type": "EXTERNAL", "id": callback.external_id},
        ],
    }


def _routing_data(callback: Callback) -> Json:
    return {
        "queue": ref(callback.queue_id, f"/api/v2/routing/queues/{callback.queue_id}"),
        "priority": callback.priority,
        "skills": [],
        "scoredAgents": [
            {"agent": ref(agent_id, user_uri(agent_id)), "score": score}
            for agent_id, score in callback.scored_agents
        ],
    }


def _callback_fields(callback: Callback) -> Json:
    out: Json = {"callbackNumbers": list(callback.callback_numbers)}
    if callback.user_name is not None:
        out["callbackUserName"] = callback.user_name
    if callback.scheduled_time is not None:
        out["callbackScheduledTime"] = iso(callback.scheduled_time)
    return out


def render_callback_conversation(org: Org, callback: Callback) -> Json:
    """The CallbackConversation model: customer participant, then the ACD participant."""
    state = _PARTICIPANT_STATE[callback.state]
    queue = org.queues.get(callback.queue_id)
    common: Json = {
        "startTime": iso(callback.created_at),
        "direction": "outbound",
        "queue": ref(callback.queue_id, f"/api/v2/routing/queues/{callback.queue_id}"),
        "conversationRoutingData": _routing_data(callback),
        "provider": "PureCloud",
        **_callback_fields(callback),
    }
    if state is not None:
        common["state"] = state
    if callback.ended_at is not None:
        common["endTime"] = iso(callback.ended_at)
    customer: Json = {"id": callback.customer_participant_id, "purpose": "customer", **common}
    if callback.user_name is not None:
        customer["name"] = callback.user_name
    if callback.owner_agent_id is not None:
        customer["user"] = ref(callback.owner_agent_id, user_uri(callback.owner_agent_id))
    customer["attributes"] = dict(callback.data)
    acd: Json = {"id": callback.acd_participant_id, "purpose": "acd", **common}
    if queue is not None:
        acd["name"] = queue.name
    return {
        "id": callback.conversation_id,
        "participants": [customer, acd],
        "selfUri": f"/api/v2/conversations/callbacks/{callback.conversation_id}",
    }


def render_conversation(org: Org, callback: Callback) -> Json:
    """The Conversation model, whose participants carry ``callbacks[]`` communications."""
    state = _COMMUNICATION_STATE[callback.state]
    queue = org.queues.get(callback.queue_id)

    def participant(participant_id: str, purpose: str, communication_id: str) -> Json:
        communication: Json = {
            "id": communication_id, "state": state, "direction": "outbound",
            "provider": "PureCloud", **_callback_fields(callback),
        }
        out: Json = {
            "id": participant_id,
            "startTime": iso(callback.created_at),
            "purpose": purpose,
            "queueId": callback.queue_id,
            "conversationRoutingData": _routing_data(callback),
            "callbacks": [communication],
        }
        if callback.ended_at is not None:
            out["endTime"] = iso(callback.ended_at)
            communication["disconnectedTime"] = iso(callback.ended_at)
        return out

    customer = participant(callback.customer_participant_id, "customer", callback.external_id)
    if callback.user_name is not None:
        customer["name"] = callback.user_name
    if callback.owner_agent_id is not None:
        customer["userId"] = callback.owner_agent_id
    customer["attributes"] = dict(callback.data)
    acd = participant(callback.acd_participant_id, "acd", callback.acd_id)
    if queue is not None:
        acd["queueName"] = queue.name
    out: Json = {
        "id": callback.conversation_id,
        "startTime": iso(callback.created_at),
        "participants": [customer, acd],
        "selfUri": f"/api/v2/conversations/{callback.conversation_id}",
    }
    if callback.ended_at is not None:
        out["endTime"] = iso(callback.ended_at)
        out["state"] = "disconnected"
    return out


def render_control(callback: Callback) -> Json:
    """The simulator's own view of a callback, for ``GET /sim/callbacks``."""
    return {
        "conversationId": callback.conversation_id,
        "callbackIdentifiers": render_created(callback)["callbackIdentifiers"],
        "state": callback.state,
        "ownerAgentId": callback.owner_agent_id,
        "queueId": callback.queue_id,
        "callbackNumbers": list(callback.callback_numbers),
        "callbackScheduledTime": (
            iso(callback.scheduled_time) if callback.scheduled_time is not None else None
        ),
        "callbackUserName": callback.user_name,
        "data": dict(callback.data),
        "request": callback.request,
        "createdAt": iso(callback.created_at),
        "endedAt": iso(callback.ended_at) if callback.ended_at is not None else None,
        "history": list(callback.history),
    }
