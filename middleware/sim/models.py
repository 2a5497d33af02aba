"""Request bodies checked against the official Genesys Cloud models.

``genesys_models.json`` (next to this module) is a subset of the project's extract of the
official Python SDK PureCloudPlatformClientV2 269.0.0; its ``_meta`` names the source. Each
model lists its ``fields`` (JSON name -> SDK type), ``enums`` and ``required`` flags.

A body is checked recursively, like the platform's binding does:

- a field the model does not have is ``unknown.field``;
- a value of the wrong JSON type is ``invalid.type``: ``str``, ``int`` (not a boolean),
  ``float`` (any number), ``bool``, ``list[X]``, ``dict(str, X)``, ``object`` (anything), or
  a nested model (a JSON object checked the same way);
- ``datetime`` must be an ISO-8601 string with a zone (``invalid.datetime``), ``date`` a
  ``yyyy-MM-dd`` string (``invalid.date``);
- a string outside the field's enum is ``invalid.enum.value``;
- a required field that is absent (or ``null``) is ``required.field.missing``; ``null``
  elsewhere counts as absent.

A model that a field refers to but that the SDK extract does not carry is **opaque**: any
JSON object passes. ``OPAQUE_MODELS`` lists the ones reachable from the validated bodies
(mostly conversation media the simulator never reads, and analytics filters it does not
implement); a test checks that every model reachable from a validated body is either in
the file or in that list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

from middleware.sim.wire import Detail, parse_date, parse_instant

OPAQUE_MODELS: Final[frozenset[str]] = frozenset({
    # Reached from Conversation (the PATCH disconnect body) through Participant/Callback.
    "AddressableEntityRef", "AfterCallWork", "Call", "Cobrowsesession", "ConversationChat",
    "ConversationDivisionMembership", "ConversationQueueMediaSettings", "DialerPreview",
    "Email", "Evaluation", "InternalMessage", "Message", "ScreenMonitoring", "Screenshare",
    "Segment", "SocialExpression", "TransferResponse", "Video", "Voicemail", "Wrapup",
    # Reached from ConversationQuery: filters and aggregations the simulator does not run.
    "AnalyticsQueryAggregation", "EvaluationDetailQueryFilter", "ResolutionDetailQueryFilter",
    "SurveyDetailQueryFilter",
})

_PRIMITIVES: Final = frozenset({"str", "int", "float", "bool", "datetime", "date", "object"})
_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, ?(.+)\)$")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _model_names(type_name: str) -> set[str]:
    """Model names a field type mentions (``list[ScoredAgent]`` -> ``{"ScoredAgent"}``)."""
    for pattern in (_LIST, _DICT):
        match = pattern.match(type_name)
        if match:
            return _model_names(match[1])
    return set() if type_name in _PRIMITIVES else {type_name}


class ModelCatalog:
    """The official models, and the check of a JSON value against one of them."""

    def __init__(self, models: Mapping[str, Any]) -> None:
        self._models = dict(models)

    @classmethod
    def load(cls) -> ModelCatalog:
        """Read the shipped ``genesys_models.json``."""
        text = resources.files("middleware.sim").joinpath("genesys_models.json").read_text(
            encoding="utf-8"
        )
        return cls(json.loads(text)["models"])

    def has(self, name: str) -> bool:
        """Whether the extract carries this model."""
        return name in self._models

    def reachable(self, name: str) -> set[str]:
        """Every model name reachable from ``name`` through field types, carried or not."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for type_name in self._models.get(current, {}).get("fields", {}).values():
                todo.extend(_model_names(type_name))
        return seen

    def validate(self, model: str, value: Any, *, partial: bool = False) -> list[Detail]:
        """Every violation of ``value`` against ``model``; ``partial`` skips top-level required."""
        out: list[Detail] = []
        self._check_model(model, value, "", out, required=not partial, nested_required=True)
        return out

    def conformance(self, model: str, value: Any) -> list[Detail]:
        """Violations of an answer: fields, types and enums, but no required flags.

        The SDK docs' required flags describe what a client must send (``User.version`` is
        "required when updating"), not what every answer carries.
        """
        out: list[Detail] = []
        self._check_model(model, value, "", out, required=False, nested_required=False)
        return out

    def _check_model(
        self, model: str, value: Any, path: str, out: list[Detail], *,
        required: bool, nested_required: bool,
    ) -> None:
        if not isinstance(value, dict):
            out.append(Detail(path or "body", "invalid.type"))
            return
        spec = self._models.get(model)
        if spec is None:
            return
        fields: dict[str, str] = spec["fields"]
        enums: dict[str, list[str]] = spec.get("enums", {})
        required_fields = spec.get("required")
        for key in value:
            if key not in fields:
                out.append(Detail(_join(path, key), "unknown.field"))
        # Some models carry a note instead of a list when the SDK docs did not cover them.
        if required and isinstance(required_fields, list):
            for key in required_fields:
                if value.get(key) is None:
                    out.append(Detail(_join(path, key), "required.field.missing"))
        for key, item in value.items():
            if key in fields and item is not None:
                self._check(fields[key], item, _join(path, key), enums.get(key), out,
                            nested_required)

    def _check(
        self, type_name: str, value: Any, path: str, enum: list[str] | None, out: list[Detail],
        required: bool,
    ) -> None:
        list_match = _LIST.match(type_name)
        if list_match:
            if not isinstance(value, list):
                out.append(Detail(path, "invalid.type"))
                return
            for index, item in enumerate(value):
                self._check(list_match[1], item, f"{path}[{index}]", None, out, required)
            return
        dict_match = _DICT.match(type_name)
        if dict_match:
            if not isinstance(value, dict):
                out.append(Detail(path, "invalid.type"))
                return
            for key, item in value.items():
                self._check(dict_match[1], item, _join(path, key), None, out, required)
            return
        code = _primitive_violation(type_name, value, enum)
        if code is not None:
            out.append(Detail(path, code))
        elif type_name not in _PRIMITIVES:
            self._check_model(type_name, value, path, out, required=required,
                              nested_required=required)


def _primitive_violation(type_name: str, value: Any, enum: list[str] | None) -> str | None:
    """The error code of a primitive value, or ``None`` when it passes (or is a model)."""
    if type_name == "str":
        if not isinstance(value, str):
            return "invalid.type"
        return "invalid.enum.value" if enum and value not in enum else None
    if type_name == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "invalid.type"
    if type_name == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "invalid.type"
    if type_name == "bool":
        return None if isinstance(value, bool) else "invalid.type"
    if type_name == "datetime":
        if not isinstance(value, str):
            return "invalid.type"
        return None if parse_instant(value) is not None else "invalid.datetime"
    if type_name == "date":
        if not isinstance(value, str):
            return "invalid.type"
        return None if parse_date(value) is not None else "invalid.date"
    return None
