"""The JSON Schema files (draft 2020-12) of the PLC messages, and a small validator for them.

The ``plc-<topic>.schema.json`` files beside this module are the contract with PLC / L2
integrators (see README.md here). The publisher checks every outgoing message against them
with `validate`, which interprets the subset of JSON Schema those files use (type, const,
enum, required, properties, additionalProperties, items, minimum / maximum, exclusiveMinimum,
minLength, pattern, allOf, if / then). It avoids a runtime dependency on `jsonschema` and is
fast enough to run on every message; the tests check real messages with the full `jsonschema`
library too, so the two cannot drift apart unnoticed. A keyword outside the subset raises
`ValueError` rather than being ignored silently.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
TOPICS: tuple[str, ...] = ("defect", "coil", "alarm", "heartbeat")

_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description"})
_OBJECT_KEYWORDS = frozenset({"required", "properties", "additionalProperties"})
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # JSON has no NaN or infinity: a value that cannot be serialised is not a number here.
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_path(topic: str) -> Path:
    """The schema file of a topic."""
    if topic not in TOPICS:
        raise ValueError(f"topic: expected one of {', '.join(TOPICS)}, got {topic!r}")
    return SCHEMA_DIR / f"plc-{topic}.schema.json"


@cache
def load_schema(topic: str) -> dict[str, Any]:
    """The parsed schema of a topic (cached; treat it as read-only)."""
    return json.loads(schema_path(topic).read_text(encoding="utf-8"))


def validate(topic: str, message: Any) -> list[str]:
    """Problems of `message` against the topic's schema, each naming the field; empty when valid."""
    errors: list[str] = []
    _check(load_schema(topic), message, "", errors)
    return errors


def _check(schema: dict[str, Any], value: Any, where: str, errors: list[str]) -> None:
    name = where or "message"
    for key, rule in schema.items():
        if key in _ANNOTATIONS or key in _OBJECT_KEYWORDS or key == "then":
            continue
        if key == "type":
            kinds = rule if isinstance(rule, list) else [rule]
            if not any(_TYPES[k](value) for k in kinds):
                errors.append(f"{name}: expected {' or '.join(kinds)}, got {_describe(value)}")
                return  # the other keywords would only repeat the type problem
        elif key == "const":
            if value != rule or type(value) is not type(rule):
                errors.append(f"{name}: expected {rule!r}, got {_describe(value)}")
        elif key == "enum":
            if value not in rule:
                errors.append(f"{name}: expected one of {', '.join(map(str, rule))}, got {_describe(value)}")
        elif key in ("minimum", "maximum", "exclusiveMinimum"):
            _check_bound(key, rule, value, name, errors)
        elif key == "minLength":
            if isinstance(value, str) and len(value) < rule:
                errors.append(f"{name}: expected at least {rule} characters, got {value!r}")
        elif key == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{name}: {value!r} does not match {rule}")
        elif key == "items":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _check(rule, item, f"{where}[{i}]", errors)
        elif key == "allOf":
            for sub in rule:
                _check(sub, value, where, errors)
        elif key == "if":
            probe: list[str] = []
            _check(rule, value, where, probe)
            if not probe and "then" in schema:
                _check(schema["then"], value, where, errors)
        else:
            raise ValueError(f"schema keyword {key!r} is not supported by inspection.schemas.validate")
    if isinstance(value, dict) and _OBJECT_KEYWORDS.intersection(schema):
        _check_object(schema, value, where, errors)


def _check_object(schema: dict[str, Any], value: dict[str, Any], where: str, errors: list[str]) -> None:
    prefix = f"{where}." if where else ""
    for key in schema.get("required", ()):
        if key not in value:
            errors.append(f"{prefix}{key}: missing")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _check(properties[key], item, f"{prefix}{key}", errors)
        elif extra is False:
            errors.append(f"{prefix}{key}: unknown field")
        elif isinstance(extra, dict):
            _check(extra, item, f"{prefix}{key}", errors)


def _check_bound(key: str, bound: float, value: Any, name: str, errors: list[str]) -> None:
    if not _TYPES["number"](value):
        return
    broken = {"minimum": value < bound, "maximum": value > bound, "exclusiveMinimum": value <= bound}[key]
    if broken:
        words = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">"}[key]
        errors.append(f"{name}: expected a number {words} {bound}, got {value!r}")


def _describe(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
