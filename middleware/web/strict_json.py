"""The one JSON reader of the HTTP edge: UTF-8 only, bounded depth, no ambiguity (SPEC §2).

``json.loads`` alone accepts what a contract must refuse: it guesses UTF-16 and UTF-32
from bytes, lets the last of two equal keys win, keeps NUL and lone surrogates in
strings, reads integers of any size and the non-JSON ``NaN``/``Infinity``, and recurses
until the interpreter's stack runs out. Every refusal here is a ``ContractViolation``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from middleware.errors import ContractViolation

MAX_DEPTH: Final = 32
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

_MARK: Final = re.compile(r'["\[\]{}]')
_STRING_REST: Final = re.compile(r'(?:[^"\\]|\\.)*"', re.DOTALL)
_BAD_CHAR: Final = re.compile("[\x00\ud800-\udfff]")


def loads(body: bytes) -> Any:
    """The JSON value of ``body``, or ``ContractViolation`` naming what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractViolation("The body is not UTF-8.") from exc
    _check_depth(text)
    try:
        value = json.loads(text, object_pairs_hook=_unique_object,
                           parse_constant=_no_constant, parse_int=_int32)
    except ContractViolation:
        raise
    except ValueError as exc:
        raise ContractViolation("The body is not valid JSON.") from exc
    _check_strings(value, "body")
    return value


def check_fields(fields: dict[str, Any]) -> None:
    """The same value limits for inputs that arrive another way (a CSV row): no NUL or
    unpaired surrogate in a string, no integer outside 32 bits."""
    _check_strings(fields, "body")
    for name, value in fields.items():
        if isinstance(value, int) and not isinstance(value, bool) \
                and not INT32_MIN <= value <= INT32_MAX:
            raise ContractViolation(f"Field {_printable(name)} is an integer outside 32 bits.")


def _check_depth(text: str) -> None:
    # Counted before parsing: the decoder's recursion is what a deep body attacks.
    # One pass, skipping each string whole, so brackets inside strings are never counted.
    depth, pos = 0, 0
    while (mark := _MARK.search(text, pos)) is not None:
        char, pos = mark.group(), mark.end()
        if char == '"':
            rest = _STRING_REST.match(text, pos)
            if rest is None:
                return  # an unterminated string: the decoder refuses it
            pos = rest.end()
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ContractViolation(f"The body is nested deeper than {MAX_DEPTH} levels.")
        else:
            depth -= 1


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ContractViolation(f"Field {_printable(key)} is given twice.")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ContractViolation(f"{name} is not a JSON number.")


def _int32(digits: str) -> int:
    # Big digit strings are refused by length before int() spends time converting them.
    value = int(digits) if len(digits) <= 12 else INT32_MAX + 1
    if not INT32_MIN <= value <= INT32_MAX:
        raise ContractViolation("An integer in the body is outside 32 bits.")
    return value


def _check_strings(value: Any, where: str) -> None:
    if isinstance(value, str):
        if _BAD_CHAR.search(value):
            raise ContractViolation(f"Field {where} holds NUL or an unpaired surrogate.")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _BAD_CHAR.search(key):
                raise ContractViolation("A field name holds NUL or an unpaired surrogate.")
            _check_strings(item, key if where == "body" else f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, where)
    elif isinstance(value, float) and value in (float("inf"), float("-inf")):
        raise ContractViolation(f"Field {where} is a number out of range.")


def _printable(key: str) -> str:
    return _BAD_CHAR.sub("?", key)[:64]
