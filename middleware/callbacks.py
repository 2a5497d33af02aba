"""``create-callback``: the pipeline of SPEC §3.1, one visible step per rule.

contract → number → consent → time → (duplicate) → (owner) → create in Genesys.
The first failing check gives the answer, and nothing reaches Genesys unless every
check passed. Steps in brackets come with their own modules when they go live.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from middleware import consent, timing
from middleware.clock import Clock
from middleware.context import RequestContext
from middleware.contracts import Contract
from middleware.errors import UpstreamRejected, UpstreamUnavailable
from middleware.genesys import GenesysClient
from middleware.numbers import CustomerNumber, normalise
from middleware.store import Store

log = logging.getLogger(__name__)

AGENT_OWNED: Final = "AGENT_OWNED_CALLBACK"
# Kept a little beyond the longest schedule so cancel/reschedule can still find a callback.
_RECORD_SLACK: Final = timedelta(days=2)


@dataclass(frozen=True)
class Rules:
    """The settings the create rules depend on."""

    default_country: str
    min_lead: timedelta
    horizon: timedelta


class CallbackService:
    """Creates consent-checked, agent-owned callbacks."""

    def __init__(self, rules: Rules, contract: Contract, genesys: GenesysClient, store: Store,
                 clock: Clock) -> None:
        self._rules = rules
        self._contract = contract
        self._genesys = genesys
        self._store = store
        self._clock = clock

    def create(self, fields: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """Run every check in order and create the callback if all pass; return the answer."""
        answer = self._contract.answer
        now = self._clock.now()
        agent_id = str(fields["agentId"])
        common = {"requestId": ctx.request_id, "ownerAgentId": agent_id}

        number = normalise(str(fields["customerNumber"]),
                           str(fields.get("customerCountry") or self._rules.default_country))
        if number is None:
            return answer(outcome="REJECTED", reason="INVALID_NUMBER",
                          message="The customer number is not a valid phone number.", **common)
        common["customerNumberE164"] = number.e164
        common["customerTimeZone"] = ",".join(number.zones)

        verdict = consent.check(fields)
        if verdict.reason != "OK":
            return answer(outcome="REJECTED", reason=verdict.reason, message=verdict.message,
                          **common)

        when = timing.resolve(fields.get("requestedTime"), fields.get("requestedLocalTime"),
                              fields.get("timeZone"), now, self._rules.min_lead,
                              self._rules.horizon)
        if not when.ok or when.instant is None:
            return answer(outcome="REJECTED", reason=when.reason, message=when.message,
                          suggestedTimeUtc=timing.format_utc(when.suggested)
                          if when.suggested else "", **common)
        scheduled = when.instant
        common.update(scheduledTimeUtc=timing.format_utc(scheduled),
                      customerLocalTime=timing.format_local(scheduled, number.zones[0])
                      if number.zones else "")

        token = uuid.uuid4().hex
        command = self._command(fields, number, agent_id, timing.format_utc(scheduled), token)
        try:
            created = self._genesys.create_callback(command, ctx.deadline)
        except UpstreamUnavailable as exc:
            log.warning("genesys unavailable for create", extra={"error": exc.message})
            return answer(outcome="REJECTED", reason="UPSTREAM_UNAVAILABLE",
                          message="Genesys Cloud could not be reached in time; nothing was "
                          "created. Retry the same request.", **common)
        except UpstreamRejected as exc:
            log.warning("genesys rejected create",
                        extra={"status": exc.status, "code": exc.code, "error": exc.message})
            return answer(outcome="REJECTED", reason="UPSTREAM_REJECTED",
                          message=f"Genesys Cloud refused the callback: {exc.message}", **common)

        self._store.record_callback(created.conversation_id, {
            "callbackId": created.conversation_id,
            "identifiers": created.identifiers,
            "requestToken": token,
            "agentId": agent_id,
            "queueId": fields["queueId"],
            "scheduledTimeUtc": timing.format_utc(scheduled),
            "createdAt": timing.format_utc(now),
        }, ttl_s=int((self._rules.horizon + _RECORD_SLACK).total_seconds()))
        log.info("callback created", extra={"callbackId": created.conversation_id,
                                            "number": number.masked, "agentId": agent_id})
        return answer(outcome="CREATED", reason="OK", callbackId=created.conversation_id,
                      assignedAgentId=agent_id,
                      message=f"Callback scheduled for {timing.format_utc(scheduled)}.", **common)

    @staticmethod
    def _command(fields: dict[str, Any], number: CustomerNumber, agent_id: str,
                 scheduled_utc: str, token: str) -> dict[str, Any]:
        """The agent-owned ``CreateCallbackCommand`` exactly as SPEC §4 describes it."""
        routing: dict[str, Any] = {
            "queueId": fields["queueId"],
            "scoredAgents": [{"agent": {"id": agent_id}, "score": 100}],
            "routingFlags": [AGENT_OWNED],
        }
        if "priority" in fields:
            routing["priority"] = fields["priority"]
        data = {"requestToken": token}
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
