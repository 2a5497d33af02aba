"""Customer numbers: one canonical E.164 form per customer, and keys that never reveal it."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final

import phonenumbers
from phonenumbers import timezone as phone_timezone

from middleware.logs import mask_number

_UNKNOWN_ZONE: Final = "Etc/Unknown"


@dataclass(frozen=True)
class CustomerNumber:
    """A valid number in E.164 form, with its region and the IANA zones it may ring in."""

    e164: str
    region: str
    zones: tuple[str, ...]

    @property
    def masked(self) -> str:
        """The number as logs may show it."""
        return mask_number(self.e164)


def normalise(raw: str, country: str) -> CustomerNumber | None:
    """Parse a number as typed or as Architect gives it; ``None`` when it is not a valid number.

    ``tel:`` URIs (with visual separators and parameters) are accepted; ``country`` is
    the ISO 3166 hint for national formats such as ``(415) 555-2671``.
    """
    text = raw.strip()
    if text[:4].lower() == "tel:":
        text = text[4:].split(";", 1)[0]
    if not text or len(text) > 64:
        return None
    try:
        parsed = phonenumbers.parse(text, country.upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    zones = tuple(
        z for z in phone_timezone.time_zones_for_number(parsed) if z != _UNKNOWN_ZONE
    )
    return CustomerNumber(
        e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        region=phonenumbers.region_code_for_number(parsed) or "",
        zones=zones,
    )


def number_of(fields: dict[str, Any], default_country: str) -> CustomerNumber | None:
    """The ``customerNumber`` of an action's input, read with its ``customerCountry`` hint."""
    return normalise(str(fields["customerNumber"]),
                     str(fields.get("customerCountry") or default_country))


def invalid_number_message(fields: dict[str, Any], default_country: str) -> str:
    """Why ``customerNumber`` was refused, in words a flow author can act on: the country it
    was read as, and how to change that."""
    raw = str(fields.get("customerNumber") or "").strip()
    if raw[:4].lower() == "tel:":
        raw = raw[4:]
    given = str(fields.get("customerCountry") or "")
    country = (given or default_country).upper()
    if raw.startswith(("+", "00")):
        return ("The customer number is not a valid phone number (read as an international "
                "number by its + prefix).")
    source = "customerCountry" if given else "the default DEFAULT_COUNTRY"
    return (f"The customer number is not a valid phone number when read as a national number "
            f"of {country} ({source}); send it in international format (+ and country code) "
            "or set customerCountry to the country it belongs to.")


class NumberKeys:
    """HMAC digests of E.164 numbers, for Redis keys: the first key writes, all keys read.

    Each digest starts with the number's shard (``store.keys.SHARDS``): one hex digit of an
    unkeyed hash of the number, so every digest of a number, under any PII key, names the
    same shard and a rotation never moves it. Four bits of an unkeyed hash say nothing a
    key may not: a sixteenth of all numbers share each digit.
    """

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("at least one PII key is needed")
        self._keys = keys

    def current(self, e164: str) -> str:
        """The digest new records are written under."""
        return self._digest(self._keys[0], e164)

    def all(self, e164: str) -> tuple[str, ...]:
        """Every digest a record for this number may have been written under."""
        return tuple(self._digest(key, e164) for key in self._keys)

    @staticmethod
    def shard(e164: str) -> str:
        """The number's shard: the first character of each of its digests."""
        return hashlib.sha256(b"shard:" + e164.encode()).hexdigest()[0]

    @classmethod
    def _digest(cls, key: bytes, e164: str) -> str:
        # ``hmac.digest``: the same HMAC in one C call, a fraction of ``hmac.new``'s cost.
        return cls.shard(e164) + hmac.digest(key, e164.encode(), "sha256").hex()[:32]
