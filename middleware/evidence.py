"""Rendering one customer's consent evidence for people (a table) and for machines (JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Final

_COLUMNS: Final = ("when", "event", "id", "details")


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
