"""The consent rule of ``create-callback`` (SPEC §3.8, §4 "Consent"), as pure code.

First failure wins: ``CONSENT_MISSING`` (``consentGiven`` not true) > ``CONSENT_NOT_FOUND``
(unknown ``consentId`` or another number's) > ``CONSENT_REVOKED`` (revoked, and no consent
recorded with ``record-consent`` captured after the revocation; consent fields inside a
create never lift it) > ``CONSENT_STALE`` (captured more than 5 minutes in the future or
more than ``CONSENT_MAX_AGE_HOURS`` ago).

The stored facts come through ``ConsentFacts``, each read only when the rule reaches it,
so a create refused early costs no read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from middleware.rules.time import parse_instant

CLOCK_SKEW: Final = timedelta(minutes=5)
_ID_CHARS: Final = frozenset("0123456789abcdef-")


@dataclass(frozen=True)
class ConsentDecision:
    """``reason`` is ``OK`` when the create may proceed; ``consent_id`` names the record
    relied on (empty for consent given inside the create: recorded when it is used)."""

    reason: str
    message: str
    consent_id: str = ""
    captured: datetime | None = None
    #: The number's revocation epoch when checked: a revocation stored later changes it.
    epoch: int = 0


class ConsentFacts(Protocol):
    """What the rule reads about one number's consents."""

    def consent(self, consent_id: str) -> Mapping[str, str] | None:
        """The stored record with this id, whatever its kind or number (``None``: none)."""

    def number_keys(self) -> tuple[str, ...]:
        """Every key the number's records may carry."""

    def revocation(self) -> tuple[int, int]:
        """The epochs (ms) of the number's latest revocation and latest lifting consent."""


def well_formed_id(consent_id: str) -> bool:
    """Whether ``consent_id`` can name a record at all (a UUID's characters, bounded)."""
    return len(consent_id) <= 64 and set(consent_id.lower()) <= _ID_CHARS


def in_future(captured: datetime, now: datetime) -> bool:
    """Whether a capture time lies beyond the clock skew tolerated."""
    return captured > now + CLOCK_SKEW


def _relied_on(consent_id: str, facts: ConsentFacts) -> Mapping[str, str] | None:
    if not well_formed_id(consent_id):
        return None
    record = facts.consent(consent_id)
    if record is None or record.get("kind") != "CONSENT":
        return None
    if record.get("numberKey") not in facts.number_keys():
        return None
    return record


def decide(fields: Mapping[str, Any], facts: ConsentFacts, now: datetime,
           max_age: timedelta) -> ConsentDecision:
    """Apply the consent rule of a create to its fields and the number's stored consents."""
    if fields.get("consentGiven") is not True:
        return ConsentDecision("CONSENT_MISSING", "The customer has not consented to a "
                               "callback (consentGiven must be true); nothing was created.")
    consent_id = str(fields.get("consentId") or "")
    captured: datetime | None
    if consent_id:
        record = _relied_on(consent_id, facts)
        if record is None:
            return ConsentDecision("CONSENT_NOT_FOUND", "No consent with this consentId "
                                   "was recorded for this number.")
        captured = parse_instant(record["capturedAt"])
    else:
        text = str(fields.get("consentCapturedAt") or "")
        captured = parse_instant(text) if text else now
        if captured is None:
            return ConsentDecision("INVALID_TIME", "consentCapturedAt is not an ISO-8601 "
                                   "instant with offset, so the consent cannot be dated.")
    revoked, lifted = facts.revocation()
    if revoked > lifted:
        return ConsentDecision("CONSENT_REVOKED", "The customer withdrew consent for "
                               "callbacks; record new consent with record-consent first.")
    if captured is None or in_future(captured, now):
        return ConsentDecision("CONSENT_STALE", "The consent's capture time lies in the "
                               "future.")
    if captured < now - max_age:
        hours = int(max_age.total_seconds() // 3600)
        return ConsentDecision("CONSENT_STALE", f"The consent was captured more than "
                               f"{hours} hours ago; capture it again.")
    return ConsentDecision("OK", "", consent_id, captured, revoked)
