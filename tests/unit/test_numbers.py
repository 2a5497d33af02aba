"""Customer numbers: one E.164 form per customer, keys that never reveal it."""

from __future__ import annotations

import pytest

from middleware.logs import mask_number, redact
from middleware.rules.number import NumberKeys, normalise


@pytest.mark.parametrize("raw", [
    "tel:+14155552671", "tel:+1-415-555-2671", "+1 (415) 555-2671", "(415) 555-2671",
    "415.555.2671", "4155552671", "1 415 555 2671", " +14155552671 ",
])
def test_formatting_variants_are_one_customer(raw: str) -> None:
    """Every way people and Architect write one US number normalises to the same E.164."""
    number = normalise(raw, "US")
    assert number is not None
    assert number.e164 == "+14155552671"


def test_country_hint_reads_national_numbers() -> None:
    """A national UK number is read with the GB hint."""
    number = normalise("020 7946 0958", "GB")
    assert number is not None
    assert number.e164 == "+442079460958"
    assert number.zones == ("Europe/London",)


@pytest.mark.parametrize("raw", ["", "tel:", "12", "not a number", "+1 555 555 0100",
                                 "+999 1234567", "1" * 80])
def test_invalid_numbers_are_refused(raw: str) -> None:
    """Garbage, too short, unassigned or absurdly long input is not a number."""
    assert normalise(raw, "US") is None


def test_number_zones_come_from_the_number() -> None:
    """A New York number rings in New York's zone."""
    number = normalise("+1 212 555 0199", "US")
    assert number is not None and number.zones == ("America/New_York",)


def test_keys_hide_the_number_and_rotate() -> None:
    """Digests never contain the digits; a rotated key still finds old records."""
    old = NumberKeys((b"old",))
    rotated = NumberKeys((b"new", b"old"))
    digest = old.current("+14155552671")
    assert "4155552671" not in digest
    assert digest in rotated.all("+14155552671")
    assert rotated.current("+14155552671") != digest


def test_logs_show_at_most_last_four_digits() -> None:
    """Masking keeps the last four digits; free text is redacted wherever a number sits."""
    assert mask_number("+14155552671") == "+*******2671"
    text = redact("call (415) 555-2671 with Bearer abc.def-123 now")
    assert "555" not in text and "2671" in text
    assert "abc.def" not in text


def test_redaction_keeps_genesys_ids_readable() -> None:
    """UUIDs in log lines survive masking; a number beside them does not."""
    text = redact("agent a1000000-0000-4000-8000-000000000001 number +14155552671")
    assert "a1000000-0000-4000-8000-000000000001" in text
    assert "4155552671" not in text
