"""Conversation detail queries over the simulator's callbacks.

``POST /api/v2/analytics/conversations/details/query`` keeps the callbacks that pass every
filter and whose ``conversationStart`` (creation) falls on a UTC day that ``interval``
(``start/end``) touches: the platform's documentation says detail queries select
conversations by their start, searching the daily indexes of every day the interval
touches, so the start need not lie inside the interval itself. An interval is at most 31
days long when a filter is given, 7 days without (also documented); longer is refused with
400. When a conversation ended has no bearing on the interval: ``conversationEnd`` is
a dimension like any other (``exists``/``notExists``), and ``orderBy: conversationEnd``
sorts by it. A filter (or clause) of ``type`` ``and``/``or`` combines its
predicates and clauses; several filters are all required. Predicates are ``dimension``
predicates with operator ``matches`` (exact string, the default), ``exists`` or
``notExists``. Supported dimensions:

- conversation: ``conversationEnd``, ``conversationId``, ``conversationStart``,
  ``originatingDirection``;
- segment: ``mediaType`` (always ``callback``), ``callbackNumber``, ``callbackScheduledTime``,
  ``scoredAgentId``, ``queueId``, ``agentOwned`` (``"true"``/``"false"``), ``purpose``,
  ``segmentType`` (``scheduled``), ``segmentEnd``, ``userId`` (never set: no agent has
  joined a scheduled callback).

Any other predicate is refused with 400 ``unsupported.by.simulator`` naming it, rather than
silently matching everything. Paging defaults to 25 per page (at most 100). Like the
platform, an empty result carries ``totalHits`` only, without ``conversations``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from middleware.sim.callbacks import Callback
from middleware.sim.org import Org
from middleware.sim.wire import BodyError, Detail, Json, bad_field, iso, parse_instant

Dimension = Callable[[Callback], list[str]]

#: The documented longest interval: 7 days without a filter, 31 days with one.
MAX_INTERVAL_UNFILTERED: Final = timedelta(days=7)
MAX_INTERVAL_FILTERED: Final = timedelta(days=31)


def _end(cb: Callback) -> list[str]:
    return [iso(cb.ended_at)] if cb.ended_at is not None else []


CONVERSATION_DIMENSIONS: Final[dict[str, Dimension]] = {
    "conversationEnd": _end,
    "conversationId": lambda cb: [cb.conversation_id],
    "conversationStart": lambda cb: [iso(cb.created_at)],
    "originatingDirection": lambda cb: ["outbound"],
}
SEGMENT_DIMENSIONS: Final[dict[str, Dimension]] = {
    "mediaType": lambda cb: ["callback"],
    "callbackNumber": lambda cb: list(cb.callback_numbers),
    "callbackScheduledTime": lambda cb: (
        [iso(cb.scheduled_time)] if cb.scheduled_time is not None else []
    ),
    "scoredAgentId": lambda cb: [agent_id for agent_id, _ in cb.scored_agents],
    "queueId": lambda cb: [cb.queue_id],
    "agentOwned": lambda cb: ["true" if cb.owner_agent_id is not None else "false"],
    "purpose": lambda cb: ["customer", "acd"],
    "segmentType": lambda cb: ["scheduled"],
    "segmentEnd": _end,
    "userId": lambda cb: [],
}


def _check_filters(filters: list[Any], path: str, dimensions: Mapping[str, Dimension],
                   out: list[Detail]) -> None:
    for index, flt in enumerate(filters):
        here = f"{path}[{index}]"
        for p_index, predicate in enumerate(flt.get("predicates") or []):
            _check_predicate(predicate, f"{here}.predicates[{p_index}]", dimensions, out)
        for c_index, clause in enumerate(flt.get("clauses") or []):
            for p_index, predicate in enumerate(clause.get("predicates") or []):
                _check_predicate(
                    predicate, f"{here}.clauses[{c_index}].predicates[{p_index}]", dimensions, out
                )


def _check_predicate(predicate: Mapping[str, Any], path: str,
                     dimensions: Mapping[str, Dimension], out: list[Detail]) -> None:
    if predicate.get("type", "dimension") != "dimension":
        out.append(Detail(f"{path}.type", "unsupported.by.simulator"))
    elif predicate.get("dimension") not in dimensions:
        out.append(Detail(f"{path}.dimension", "unsupported.by.simulator"))
    elif predicate.get("range") is not None:
        out.append(Detail(f"{path}.range", "unsupported.by.simulator"))
    elif predicate.get("operator", "matches") == "matches" and predicate.get("value") is None:
        out.append(Detail(f"{path}.value", "required.field.missing"))


def _predicate(predicate: Mapping[str, Any], cb: Callback,
               dimensions: Mapping[str, Dimension]) -> bool:
    values = dimensions[predicate["dimension"]](cb)
    operator = predicate.get("operator") or "matches"
    if operator == "exists":
        return bool(values)
    if operator == "notExists":
        return not values
    return predicate.get("value") in values


def _filter(flt: Mapping[str, Any], cb: Callback, dimensions: Mapping[str, Dimension]) -> bool:
    results = [_predicate(p, cb, dimensions) for p in flt.get("predicates") or []]
    results += [_filter(c, cb, dimensions) for c in flt.get("clauses") or []]
    if not results:
        return True
    return all(results) if flt.get("type") == "and" else any(results)


def _interval(text: str) -> tuple[datetime, datetime]:
    start_text, sep, end_text = text.partition("/")
    start, end = parse_instant(start_text), parse_instant(end_text)
    if not sep or start is None or end is None or end <= start:
        raise bad_field("interval", "invalid.value",
                        "interval must be start/end ISO-8601 instants with end after start")
    return start, end


def _days_touched(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The UTC days an interval touches, as ``[first midnight, midnight after the last)``."""
    first = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = (end - timedelta(microseconds=1)).astimezone(UTC).replace(
        hour=0, minute=0, second=0, microsecond=0)
    return first, last + timedelta(days=1)


def _render(org: Org, cb: Callback) -> Json:
    segment: Json = {
        "segmentStart": iso(cb.created_at),
        "segmentType": "scheduled",
        "queueId": cb.queue_id,
        "conference": False,
    }
    if cb.ended_at is not None:
        segment["segmentEnd"] = iso(cb.ended_at)
        segment["disconnectType"] = "client" if cb.state == "disconnected" else "endpoint"
    session: Json = {
        "mediaType": "callback",
        "direction": "outbound",
        "callbackNumbers": list(cb.callback_numbers),
        "agentOwned": cb.owner_agent_id is not None,
    }
    if cb.user_name is not None:
        session["callbackUserName"] = cb.user_name
    if cb.scheduled_time is not None:
        session["callbackScheduledTime"] = iso(cb.scheduled_time)
    queue = org.queues.get(cb.queue_id)
    acd_segment = dict(segment)
    if cb.scored_agents:
        acd_segment["scoredAgents"] = [
            {"scoredAgentId": agent_id, "agentScore": score} for agent_id, score in cb.scored_agents
        ]
    customer: Json = {
        "participantId": cb.customer_participant_id,
        "purpose": "customer",
        "sessions": [{"sessionId": cb.external_id, **session, "segments": [segment]}],
    }
    if cb.user_name is not None:
        customer["participantName"] = cb.user_name
    acd: Json = {
        "participantId": cb.acd_participant_id,
        "purpose": "acd",
        "sessions": [{"sessionId": cb.acd_id, **session, "segments": [acd_segment]}],
    }
    if queue is not None:
        acd["participantName"] = queue.name
    out: Json = {
        "conversationId": cb.conversation_id,
        "conversationStart": iso(cb.created_at),
        "originatingDirection": "outbound",
        "divisionIds": [org.division_id],
        "participants": [customer, acd],
    }
    if cb.ended_at is not None:
        out["conversationEnd"] = iso(cb.ended_at)
    return out


def query(org: Org, callbacks: list[Callback], body: Mapping[str, Any]) -> Json:
    """The AnalyticsConversationQueryResponse for a model-checked ConversationQuery."""
    start, end = _interval(body["interval"])
    conversation_filters = body.get("conversationFilters") or []
    segment_filters = body.get("segmentFilters") or []
    longest = MAX_INTERVAL_FILTERED if conversation_filters or segment_filters \
        else MAX_INTERVAL_UNFILTERED
    if end - start > longest:
        raise bad_field("interval", "invalid.value",
                        f"interval may span at most {longest.days} days")
    start, end = _days_touched(start, end)
    details: list[Detail] = []
    _check_filters(conversation_filters, "conversationFilters", CONVERSATION_DIMENSIONS, details)
    _check_filters(segment_filters, "segmentFilters", SEGMENT_DIMENSIONS, details)
    paging = body.get("paging") or {"pageSize": 25, "pageNumber": 1}
    if not 1 <= paging["pageSize"] <= 100:
        details.append(Detail("paging.pageSize", "invalid.value"))
    if paging["pageNumber"] < 1:
        details.append(Detail("paging.pageNumber", "invalid.value"))
    if details:
        raise BodyError(details)
    hits = [
        cb for cb in callbacks
        if start <= cb.created_at < end
        and all(_filter(f, cb, CONVERSATION_DIMENSIONS) for f in conversation_filters)
        and all(_filter(f, cb, SEGMENT_DIMENSIONS) for f in segment_filters)
    ]
    if body.get("orderBy") == "conversationEnd":
        hits.sort(key=lambda cb: (cb.ended_at is None, cb.ended_at or cb.created_at,
                                  cb.conversation_id))
    else:
        hits.sort(key=lambda cb: (cb.created_at, cb.conversation_id))
    if body.get("order") == "desc":
        hits.reverse()
    first = (paging["pageNumber"] - 1) * paging["pageSize"]
    page = hits[first:first + paging["pageSize"]]
    out: Json = {"totalHits": len(hits)}
    if page:
        out["conversations"] = [_render(org, cb) for cb in page]
    return out
