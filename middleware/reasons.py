"""The catalogue of reason and warning codes (SPEC §3.8): meaning, retryability, flow advice.

Answers take ``retryable`` from here, and the README's code catalogue is checked against
this table, so the documentation and the behaviour cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Code:
    """One reason, reassign reason or warning code."""

    code: str
    meaning: str
    retryable: bool
    flow: str


REASONS: Final[dict[str, Code]] = {c.code: c for c in (
    Code("OK", "The action did what was asked (also when ownership moved).", False,
         "Continue; read the other outputs."),
    Code("DUPLICATE_PENDING", "A pending callback for this number exists in the window; it "
         "is returned instead of a new one.", False,
         "Tell the customer the existing time (`existingScheduledTimeUtc`)."),
    Code("CONSENT_MISSING", "`consentGiven` was not true; nothing was created.", False,
         "Ask for consent, then call again with `consentGiven=true`."),
    Code("CONSENT_REVOKED", "The customer withdrew consent for callbacks.", False,
         "Do not offer a callback unless the customer gives consent anew."),
    Code("CONSENT_STALE", "The consent was captured too long ago or in the future.", False,
         "Capture consent again."),
    Code("CONSENT_NOT_FOUND", "The `consentId` is unknown or belongs to another number.", False,
         "Record consent with `record-consent` and use its id."),
    Code("INVALID_NUMBER", "The customer number is not a valid phone number.", False,
         "Ask for the number again (with country)."),
    Code("TOO_MANY_REQUESTS_FOR_NUMBER", "The number reached its callbacks-per-24-hours cap.",
         False, "Do not schedule another callback today."),
    Code("INVALID_TIME", "The time is not an ISO-8601 instant, or both time inputs were given.",
         False, "Send one well-formed time."),
    Code("TIMEZONE_MISSING", "`requestedTime` has no UTC offset.", False,
         "Send the offset (`Z`, `+01:00`) or use `requestedLocalTime` + `timeZone`."),
    Code("UNKNOWN_TIME_ZONE", "`timeZone` is not an IANA time zone name.", False,
         "Send a name such as `Europe/London`."),
    Code("NONEXISTENT_LOCAL_TIME", "The local time falls in a daylight-saving gap.", False,
         "Offer `suggestedTimeUtc` (first instant after the gap)."),
    Code("AMBIGUOUS_LOCAL_TIME", "The local time occurs twice (daylight-saving fold).", False,
         "Confirm which one; `suggestedTimeUtc` is the earlier."),
    Code("TIME_IN_PAST", "The time is in the past or sooner than the minimum lead time.", False,
         "Offer `suggestedTimeUtc`."),
    Code("TIME_TOO_FAR", "The time is beyond the scheduling horizon.", False,
         "Ask for an earlier time."),
    Code("TIMEZONE_MISMATCH", "The offset matches no zone involved (with `STRICT_OFFSETS`).",
         False, "Check the time zone the time was entered in."),
    Code("OUTSIDE_CALLING_HOURS", "The instant is outside the customer's legal calling hours.",
         False, "Offer `suggestedTimeUtc`."),
    Code("OUTSIDE_AGENT_HOURS", "The agent works that day, but not at that time.", False,
         "Offer `suggestedTimeUtc`."),
    Code("UNKNOWN_AGENT", "The agent id is not a Genesys user.", False,
         "Check the agent id bound in the flow or script."),
    Code("NO_AVAILABLE_OWNER", "Neither the agent nor any fallback can own the callback.",
         False, "Offer another time or a queue callback."),
    Code("NOT_FOUND", "No such callback.", False, "Check the callback id."),
    Code("UPSTREAM_REJECTED", "Genesys Cloud refused the request.", False,
         "Report to the admin with `requestId`; do not retry unchanged."),
    Code("UPSTREAM_UNAVAILABLE", "Genesys Cloud could not be reached in time.", True,
         "Retry the same request later (same idempotency key)."),
)}

WARNINGS: Final[dict[str, Code]] = {c.code: c for c in (
    Code("OFFSET_MISMATCH", "The offset matches neither UTC, the agent's nor a customer zone.",
         False, "Read the time back to the customer."),
    Code("AGENT_HOURS_UNKNOWN", "No working hours are known for the agent.", False,
         "Nothing; hours were not checked."),
    Code("OUTSIDE_CALLING_HOURS", "Outside calling hours, allowed by policy `warn`.", False,
         "Make sure the customer asked for this time."),
    Code("ASAP_DEFERRED", "The earliest valid time is later than the minimum lead time.", False,
         "Tell the customer the scheduled time."),
)}


def is_retryable(reason: str) -> bool:
    """Whether the same request may succeed later unchanged."""
    return REASONS[reason].retryable
