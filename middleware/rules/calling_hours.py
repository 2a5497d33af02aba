"""The customer's legal calling hours, from rules kept as data (``CALLING_HOURS_FILE``).

The shipped ``data/calling_hours.json`` holds the US federal rule (08:00-21:00), Florida
numbers (08:00-20:00, by area code), Canada's CRTC hours and a default for other
countries. The first rule matching a number applies, in every zone of the number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

from middleware.rules.number import CustomerNumber
from middleware.rules.time import CallingHours, parse_weekly

#: The shipped rules, read from the installed package.
DEFAULT_FILE: Final = "data/calling_hours.json"


class CallingHoursError(ValueError):
    """The rules file is malformed; the message names the rule and field."""


@dataclass(frozen=True)
class Rule:
    """One row of the rules file."""

    id: str
    country: str
    area_codes: frozenset[str]
    windows: dict[int, tuple[int, int]]
    source: str

    def matches(self, number: CustomerNumber) -> bool:
        """Whether the rule covers this number."""
        if self.country and self.country != number.region:
            return False
        if self.area_codes:
            national = number.e164[2:] if number.e164.startswith("+1") else ""
            return national[:3] in self.area_codes
        return True


def _rule(raw: dict[str, Any], index: int) -> Rule:
    rule_id = str(raw.get("id") or f"#{index}")
    try:
        windows = parse_weekly(dict(raw.get("hours", {})), f"rule {rule_id} hours")
    except ValueError as exc:
        raise CallingHoursError(str(exc)) from exc
    if not windows:
        raise CallingHoursError(f"rule {rule_id}: no hours")
    return Rule(rule_id, str(raw.get("country", "")).upper(),
                frozenset(str(a) for a in raw.get("areaCodes", [])), windows,
                str(raw.get("source", "")))


def load_rules(path: Path | None = None) -> list[Rule]:
    """Read and check the rules; the last one should match every number."""
    source: Traversable = path or resources.files("middleware").joinpath(DEFAULT_FILE)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CallingHoursError(f"{source}: {exc}") from exc
    rules = [_rule(raw, i) for i, raw in enumerate(data.get("rules", []))]
    if not rules:
        raise CallingHoursError(f"{source}: no rules")
    return rules


def calling_hours(rules: list[Rule], number: CustomerNumber) -> CallingHours | None:
    """The calling hours that apply to a number, or ``None`` when no rule or zone is known."""
    if not number.zones:
        return None
    for rule in rules:
        if rule.matches(number):
            return CallingHours(number.zones, rule.windows, f"{rule.id}: {rule.source}")
    return None
