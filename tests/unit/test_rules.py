"""The consent and owner rules on their own: facts passed in, nothing read from a socket."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import pytest

from middleware.rules.consent import decide
from middleware.rules.owner import Availability, availability, new_owner
from middleware.rules.profiles import AgentProfile
from middleware.rules.time import AgentHours
from tests.conftest import T0

MAX_AGE = timedelta(hours=24)
ACTIVE: dict[str, Any] = {"state": "active"}


class Consents:
    """One number's stored consents, counting every read the rule makes."""

    def __init__(self, records: Mapping[str, Mapping[str, str]] | None = None,
                 revocation: tuple[int, int] = (0, 0)) -> None:
        self.records = dict(records or {})
        self.state = revocation
        self.reads: list[str] = []

    def consent(self, consent_id: str) -> Mapping[str, str] | None:
        self.reads.append("consent")
        return self.records.get(consent_id)

    def number_keys(self) -> tuple[str, ...]:
        return ("key-new", "key-old")

    def revocation(self) -> tuple[int, int]:
        self.reads.append("revocation")
        return self.state


def _record(kind: str = "CONSENT", key: str = "key-old", age: timedelta = timedelta(0)
            ) -> dict[str, str]:
    return {"kind": kind, "numberKey": key,
            "capturedAt": (T0 - age).isoformat(timespec="milliseconds")}


CONSENT_ID = "0a1b2c3d-0000-4000-8000-000000000001"


@pytest.mark.parametrize(("fields", "facts", "reason"), [
    ({"consentGiven": False, "consentId": CONSENT_ID}, Consents(revocation=(2, 1)),
     "CONSENT_MISSING"),
    ({"consentGiven": True, "consentId": "not-an-id!"}, Consents(), "CONSENT_NOT_FOUND"),
    ({"consentGiven": True, "consentId": CONSENT_ID},
     Consents({CONSENT_ID: _record(key="another-number")}), "CONSENT_NOT_FOUND"),
    ({"consentGiven": True, "consentId": CONSENT_ID},
     Consents({CONSENT_ID: _record(kind="REVOCATION")}), "CONSENT_NOT_FOUND"),
    ({"consentGiven": True, "consentId": CONSENT_ID},
     Consents({CONSENT_ID: _record(age=timedelta(hours=30))}, (2, 1)), "CONSENT_REVOKED"),
    ({"consentGiven": True, "consentId": CONSENT_ID},
     Consents({CONSENT_ID: _record(age=timedelta(hours=30))}, (1, 2)), "CONSENT_STALE"),
    ({"consentGiven": True, "consentCapturedAt": (T0 + timedelta(minutes=6)).isoformat()},
     Consents(), "CONSENT_STALE"),
    ({"consentGiven": True, "consentCapturedAt": "yesterday"}, Consents(), "INVALID_TIME"),
    ({"consentGiven": True, "consentId": CONSENT_ID},
     Consents({CONSENT_ID: _record(age=timedelta(hours=23))}, (1, 2)), "OK"),
])
def test_the_first_failing_consent_check_wins(fields: dict[str, Any], facts: Consents,
                                              reason: str) -> None:
    """SPEC §3.8's order: missing > not found > revoked > stale."""
    assert decide(fields, facts, T0, MAX_AGE).reason == reason


def test_a_consent_refused_early_reads_nothing() -> None:
    """Facts are read only when the rule reaches them."""
    facts = Consents(revocation=(2, 1))
    decide({"consentGiven": False}, facts, T0, MAX_AGE)
    decide({"consentGiven": True, "consentId": CONSENT_ID}, facts, T0, MAX_AGE)
    assert facts.reads == ["consent"]


class Agent:
    """One agent's queue membership, profile and time off, counting the reads."""

    def __init__(self, in_queue: bool = True, profile: AgentProfile | None = None,
                 time_off: bool = False) -> None:
        self._in_queue = in_queue
        self._profile = profile or AgentProfile("", None, "none")
        self._time_off = time_off
        self.reads: list[str] = []

    def in_queue(self) -> bool:
        self.reads.append("queue")
        return self._in_queue

    def profile(self) -> AgentProfile:
        self.reads.append("profile")
        return self._profile

    def on_time_off(self, profile: AgentProfile, local_day: date) -> bool:
        self.reads.append("time off")
        return self._time_off


WORKING = AgentProfile("America/New_York", AgentHours(
    "America/New_York", ((T0 - timedelta(hours=4), T0 + timedelta(hours=4)),)), "wfm", "mu-1")
SOON = T0 + timedelta(minutes=10)


@pytest.mark.parametrize(("user", "agent", "reason"), [
    ({"state": "inactive", "outOfOffice": {"active": True}}, Agent(in_queue=False),
     "AGENT_INACTIVE"),
    (ACTIVE, Agent(in_queue=False, time_off=True), "AGENT_NOT_IN_QUEUE"),
    ({**ACTIVE, "outOfOffice": {"active": True, "indefinite": True}},
     Agent(profile=WORKING, time_off=True), "AGENT_ON_TIME_OFF"),
    ({**ACTIVE, "outOfOffice": {"active": True, "indefinite": True}}, Agent(profile=WORKING),
     "AGENT_OUT_OF_OFFICE"),
    ({**ACTIVE, "routingStatus": {"status": "OFF_QUEUE"}}, Agent(profile=WORKING),
     "AGENT_OFFLINE"),
    (ACTIVE, Agent(profile=WORKING), ""),
])
def test_availability_reasons_come_in_spec_order(user: dict[str, Any], agent: Agent,
                                                 reason: str) -> None:
    """Inactive > not in queue > time off > out of office > off shift > offline."""
    found = availability(user, agent, SOON, T0, timedelta(minutes=30))
    assert found.reason == reason


def test_an_inactive_agent_costs_no_further_read() -> None:
    """The first failing reason ends the checks, so Genesys is asked no more."""
    agent = Agent()
    availability({"state": "deleted"}, agent, SOON, T0, timedelta(minutes=30))
    assert agent.reads == []


def test_a_stand_in_must_work_at_the_instant_itself() -> None:
    """Unknown hours cannot prove a stand-in works then."""
    found = availability(ACTIVE, Agent(), SOON, T0, timedelta(minutes=30), must_work_at=True)
    assert found.reason == "AGENT_OFF_SHIFT"


class Team:
    """Stand-ins for an unavailable agent."""

    def __init__(self, mates: list[str], counts: dict[str, int],
                 manager: tuple[str, Availability] | None = None) -> None:
        self._mates = mates
        self._counts = counts
        self._manager = manager
        self.asked_manager = False

    def teammates(self) -> list[tuple[str, Availability]]:
        return [(m, Availability("", WORKING)) for m in self._mates]

    def pending_owned(self, agent_ids: list[str]) -> Mapping[str, int]:
        return {a: self._counts.get(a, 0) for a in agent_ids}

    def manager(self) -> tuple[str, Availability] | None:
        self.asked_manager = True
        return self._manager


AWAY = Availability("AGENT_ON_TIME_OFF")


def test_the_teammate_with_fewest_pending_wins_ties_by_id() -> None:
    """Fewest pending owned callbacks first, then the smallest id; the manager is not asked."""
    team = Team(["m-c", "m-b", "m-a"], {"m-a": 2, "m-b": 1, "m-c": 1})
    decision = new_owner("agent", AWAY, team, "queue")
    assert (decision.outcome, decision.assigned, decision.reassign_reason) == \
        ("REASSIGNED", "m-b", "AGENT_ON_TIME_OFF")
    assert not team.asked_manager


@pytest.mark.parametrize(("manager", "fallback", "outcome", "assigned"), [
    (("boss", Availability("", WORKING)), "reject", "REASSIGNED", "boss"),
    (("boss", Availability("AGENT_OFF_SHIFT")), "queue", "QUEUE", ""),
    (None, "reject", "NONE", ""),
])
def test_without_teammates_the_manager_then_the_fallback(
        manager: tuple[str, Availability] | None, fallback: str, outcome: str,
        assigned: str) -> None:
    """The manager if available, else the queue (``queue``) or no owner (``reject``)."""
    decision = new_owner("agent", AWAY, Team([], {}, manager), fallback)
    assert (decision.outcome, decision.assigned) == (outcome, assigned)


def test_an_available_or_unknown_owner_is_never_reassigned() -> None:
    """Available keeps the agent; no such user is UNKNOWN_AGENT; reassignment may be off."""
    team = Team(["m-a"], {})
    assert new_owner("agent", Availability("", WORKING), team, "queue").assigned == "agent"
    assert new_owner("agent", None, team, "queue").outcome == "UNKNOWN_AGENT"
    assert new_owner("agent", AWAY, team, "queue", allow_reassignment=False).outcome == "NONE"
