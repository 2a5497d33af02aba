"""Consent: nothing is created for a customer who has not agreed to be called back.

Live rule: ``consentGiven`` must be true (``CONSENT_MISSING``). The consent ledger
(stored records, ``consentId``, revocation, staleness) is not live yet.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ConsentCheck(NamedTuple):
    """``reason`` is ``OK`` when the request may proceed."""

    reason: str
    message: str


def check(fields: dict[str, Any]) -> ConsentCheck:
    """Refuse unless the caller states that the customer consented."""
    if fields.get("consentGiven") is not True:
        return ConsentCheck("CONSENT_MISSING",
                            "The customer has not consented to a callback (consentGiven must "
                            "be true); nothing was created.")
    return ConsentCheck("OK", "")
