"""What several actions share: the time fields of an answer, the Genesys failure answers, the
create command, and the queue check."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

from middleware.contracts import Contract
from middleware.errors import UpstreamRejected, UpstreamUnavailable
from middleware.rules import time as timing
from middleware.rules.number import CustomerNumber

log = logging.getLogger(__name__)

AGENT_OWNED: Final = "AGENT_OWNED_CALLBACK"

Answer = dict[str, Any]


class Superseded(Exception):
    """The record changed since it was read: the step was not taken; read it again."""


class Revoked(Exception):
    """The number's consent stands revoked: the step needs a create, so it is not taken
    (reading again would not change that)."""


def time_fields(instant: datetime, agent_zone: str, number: CustomerNumber | None,
                customer_zones: str = "") -> dict[str, str]:
    """The readable-back times of an answer: agent's and customer's zone and local time."""
    zones = ",".join(number.zones) if number is not None else customer_zones
    first = zones.split(",")[0]
    return {
        "scheduledTimeUtc": timing.format_utc(instant),
        "agentTimeZone": agent_zone,
        "agentLocalTime": timing.format_local(instant, agent_zone) if agent_zone else "",
        "customerTimeZone": zones,
        "customerLocalTime": timing.format_local(instant, first) if first else "",
    }


def queue_refusal(queue_id: str, queue: dict[str, Any] | None) -> str:
    """Why Genesys would refuse an agent-owned callback on this queue, or ``""``."""
    if queue is None:
        return f"The queue {queue_id} does not exist in Genesys Cloud (check queueId)."
    owned = queue.get("agentOwnedRouting") or {}
    if owned.get("enableAgentOwnedCallbacks") is not True:
        return (f"The queue {queue_id} does not allow agent-owned callbacks: turn on "
                "agentOwnedRouting.enableAgentOwnedCallbacks (Admin > Queues > Voice > "
                "Agent Owned Routing) first.")
    return ""


def from_ms(ms: int) -> datetime:
    """The instant of a ledger score."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def upstream_failure(out: Contract, exc: UpstreamUnavailable | UpstreamRejected,
                     common: dict[str, Any], *, reading: bool = False) -> Answer:
    """The REJECTED answer for a Genesys call that failed, with nothing changed."""
    if isinstance(exc, UpstreamUnavailable):
        log.warning("genesys unavailable", extra={"error": exc.message, "reading": reading})
        if exc.may_have_run and not reading:
            return out.answer(
                outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **common,
                message="Genesys Cloud did not confirm the change in time: it may have been "
                "made. Retry the same request to find out.")
        return out.answer(
            outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE", **common,
            message="Genesys Cloud could not be reached in time; nothing was changed. "
            "Retry the same request.")
    log.warning("genesys refused", extra={"status": exc.status, "code": exc.code,
                                          "error": exc.message})
    return out.answer(outcome="REJECTED", reason="UPSTREAM_REJECTED", **common,
                      message=f"Genesys Cloud refused the request: {exc.message}")


def create_command(fields: dict[str, Any], number: CustomerNumber, agent_id: str,
                   scheduled_utc: str, token: str, consent_id: str) -> dict[str, Any]:
    """The agent-owned ``CreateCallbackCommand`` exactly as SPEC §4 describes it; with no
    agent (the queue fallback) it carries no owner fields."""
    routing: dict[str, Any] = {"queueId": fields["queueId"]}
    if agent_id:
        routing["scoredAgents"] = [{"agent": {"id": agent_id}, "score": 100}]
        routing["routingFlags"] = [AGENT_OWNED]
    if "priority" in fields:
        routing["priority"] = fields["priority"]
    data = {"requestToken": token, "consentId": consent_id}
    for key in ("reference", "notes"):
        if fields.get(key):
            data[key] = str(fields[key])
    command: dict[str, Any] = {
        "routingData": routing,
        "callbackNumbers": [number.e164],
        "callbackScheduledTime": scheduled_utc,
        "validateCallbackNumbers": True,
        "data": data,
    }
    if fields.get("customerName"):
        command["callbackUserName"] = str(fields["customerName"])
    return command
