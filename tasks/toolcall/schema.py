"""A validator for the subset of JSON schema the tool specs use.

Supported keywords: `type` (string, integer, number, boolean, array, object, null), `enum`, `properties`,
`required`, `additionalProperties` (boolean), `items`, `minItems`, `maxItems`, `minimum`, `maximum`,
`pattern`. Anything else is ignored. Booleans are not numbers; integers are numbers.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way `value` breaks `schema`, as `path: problem` strings (empty when valid)."""
    errors: list[str] = []
    t = schema.get("type")
    if t is not None:
        if t not in _TYPES:
            return [f"{path}: unsupported type {t!r}"]
        if not _TYPES[t](value):
            return [f"{path}: expected {t}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']!r}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for k, item in enumerate(value):
                errors += validate(item, schema["items"], f"{path}[{k}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required {key!r}")
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected property {key!r}")
    return errors


def validate_call(call: dict[str, Any], tools: list[dict[str, Any]]) -> list[str]:
    """Problems of a `{"name", "parameters"}` call against the tool of that name among `tools`."""
    spec = next((t for t in tools if t["name"] == call.get("name")), None)
    if spec is None:
        return [f"no tool named {call.get('name')!r}"]
    return validate(call.get("parameters"), spec["parameters"], call["name"])
