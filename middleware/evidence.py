"""Rendering one customer's consent evidence for people (a table) and for machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from middleware.ledger.records import EVENT_FIELDS, EVENT_KINDS, IMPLIED_STATES

_COLUMNS: Final = ("when", "event", "id", "details")
_KIND_NAMES: Final = {code: name for name, code in EVENT_KINDS.items()}
_FIELD_NAMES: Final = {short: name for name, short in EVENT_FIELDS.items()}
#: The fields each kind of callback event showed, in order, before events were compact.
_SHAPES: Final = {
    "cb": ("callbackId", "state", "consentId", "agentId", "queueId", "scheduledMs", "at"),
    "cr": ("callbackId", "scheduledMs", "at"),
    "cc": ("callbackId", "state", "at"),
}
#: A consent event shows its record, as it did when the event carried a copy of it.
_CONSENT_FIELDS: Final = ("consentId", "kind", "numberKey", "number", "customerName",
                          "consentSource", "capturedAt", "consentText", "conversationId",
                          "agentId", "recordedAt", "via")


def _iso(ms: Any) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds")


def expand_events(events: list[dict[str, Any]], consents: Mapping[str, Mapping[str, str]]
                  ) -> list[dict[str, str]]:
    """Stored events with the SPEC's field names and ISO times, as people and exports read
    them: compact ones (short codes, epoch ms) mapped back, consent events filled from
    their ``consents`` record; events written in the older long form pass as they are."""
    expanded: list[dict[str, str]] = []
    for event in events:
        code = str(event.get("e", ""))
        if code not in _KIND_NAMES:
            expanded.append({k: str(v) for k, v in event.items()})
            continue
        kind = _KIND_NAMES[code]
        if code in ("co", "rv"):
            consent_id = str(event.get("k", ""))
            record = consents.get(consent_id, {})
            full = {"event": kind, **{name: str(record.get(name, "")) for name in
                                      _CONSENT_FIELDS}}
            full["consentId"] = consent_id
            full["recordedAt"] = full["recordedAt"] or _iso(event.get("t", 0))
            expanded.append(full)
            continue
        named = {_FIELD_NAMES.get(k, k): v for k, v in event.items() if k != "e"}
        named.setdefault("state", IMPLIED_STATES.get(code, ""))
        if "at" in named:
            named["at"] = _iso(named["at"])
        shape = _SHAPES.get(code, _SHAPES["cb"])
        full = {"event": kind, **{name: str(named.get(name, "")) for name in shape}}
        full.update({k: str(v) for k, v in named.items() if k not in full})
        expanded.append(full)
    return expanded


def _when(event: dict[str, str]) -> str:
    return event.get("recordedAt") or event.get("at") or ""


def _details(event: dict[str, str]) -> str:
    kind = event.get("event", "")
    if kind in ("consent", "revocation"):
        parts = [f"captured {event.get('capturedAt', '')}", f"via {event.get('via', '')}"]
        for key, label in (("consentSource", "source"), ("customerName", "name"),
                           ("consentText", "text"), ("conversationId", "conversation"),
                           ("agentId", "agent")):
            if event.get(key):
                parts.append(f"{label} {event[key]}")
        return "; ".join(parts)
    if kind in ("callback", "callback-rescheduled", "callback-reassigned"):
        scheduled = datetime.fromtimestamp(int(event.get("scheduledMs", "0")) / 1000, UTC)
        if kind == "callback-rescheduled":
            return f"moved to {scheduled.isoformat(timespec='seconds')}"
        if kind == "callback-reassigned":
            return (f"replaces {event.get('replaces', '')}; scheduled "
                    f"{scheduled.isoformat(timespec='seconds')}; agent "
                    f"{event.get('agentId', '') or 'queue'}")
        return (f"scheduled {scheduled.isoformat(timespec='seconds')}; agent "
                f"{event.get('agentId', '') or 'queue'}; consent {event.get('consentId', '')}")
    return f"state {event.get('state', '')}"


def _ident(event: dict[str, str]) -> str:
    return event.get("consentId", "") if event.get("event") in ("consent", "revocation") \
        else event.get("callbackId", "")


def render_evidence(e164: str, events: list[dict[str, str]], fmt: str) -> str:
    """The history as JSON (``{"number", "events"}``) or as an aligned text table."""
    if fmt == "json":
        return json.dumps({"number": e164, "events": events}, indent=2)
    rows = [_COLUMNS] + [(_when(e), e.get("event", ""), _ident(e), _details(e)) for e in events]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"Consent evidence for {e164}: {len(events)} event(s)"]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) if i < 3 else cell
                               for i, cell in enumerate(row)).rstrip())
    return "\n".join(lines)
