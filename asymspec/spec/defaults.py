"""Filling in defaults, so that code after the loader never needs to know any.

Two steps, both on *validated* data:

1. :func:`fill_defaults` copies every ``default`` of the schema into the data, recursively:
   through ``$ref``, ``allOf``, ``if``/``then``/``else`` (so the family- and op-specific
   definitions selected by ``family`` / ``op`` contribute theirs), ``properties``,
   ``additionalProperties`` (maps such as ``inputs``) and ``items`` (lists of layers).  Integers
   given where the schema says ``number`` become floats (``kappa: 1`` -> ``1.0``), so equal specs
   hash equally.  Keys come out in schema order, then any others in their original order.
2. :func:`resolve_derived` replaces the ``null`` defaults whose meaning depends on other fields by
   that meaning: cnn ``strides`` (all 1), conv2d ``padding`` (kernel_size // 2), pooling
   ``stride`` (kernel_size) and layers ``outputs`` (the last layer).
"""

from __future__ import annotations

import copy
from typing import Any

from jsonschema.protocols import Validator

from asymspec.spec.schema import resolve_ref


def fill_defaults(instance: Any, schema: dict[str, Any], validator: Validator) -> Any:
    """A copy of ``instance`` (valid against ``schema``) with all defaults filled in."""
    return _fill(instance, [schema], validator.schema, validator)


def _applicable(schema: dict[str, Any], instance: Any, root: dict[str, Any],
                validator: Validator) -> list[dict[str, Any]]:
    """``schema`` plus every subschema that applies to ``instance`` in place (same location)."""
    out = [schema]
    if "$ref" in schema:
        out += _applicable(resolve_ref(root, schema["$ref"]), instance, root, validator)
    for sub in schema.get("allOf", ()):
        out += _applicable(sub, instance, root, validator)
    if "if" in schema:
        branch = "then" if validator.evolve(schema=schema["if"]).is_valid(instance) else "else"
        if branch in schema:
            out += _applicable(schema[branch], instance, root, validator)
    return out


def _types(schemas: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for s in schemas:
        t = s.get("type")
        if t is not None:
            found |= {t} if isinstance(t, str) else set(t)
    return found


def _fill(instance: Any, schemas: list[dict[str, Any]], root: dict[str, Any],
          validator: Validator) -> Any:
    applicable = [a for s in schemas for a in _applicable(s, instance, root, validator)]
    if isinstance(instance, dict):
        return _fill_object(instance, applicable, root, validator)
    if isinstance(instance, list):
        items = [s["items"] for s in applicable if isinstance(s.get("items"), dict)]
        return [_fill(item, items, root, validator) for item in instance]
    if isinstance(instance, int) and not isinstance(instance, bool):
        types = _types(applicable)
        if "number" in types and "integer" not in types:
            try:
                return float(instance)
            except OverflowError:  # beyond float range: the semantic checks reject it
                return instance
    return instance


def _fill_object(instance: dict[str, Any], applicable: list[dict[str, Any]],
                 root: dict[str, Any], validator: Validator) -> dict[str, Any]:
    per_key: dict[str, list[dict[str, Any]]] = {}
    for s in applicable:
        for key, sub in s.get("properties", {}).items():
            per_key.setdefault(key, []).append(sub)
    extra = [s["additionalProperties"] for s in applicable
             if isinstance(s.get("additionalProperties"), dict)]
    out: dict[str, Any] = {}
    for key, subs in per_key.items():
        if key in instance:
            out[key] = _fill(instance[key], subs, root, validator)
            continue
        for sub in subs:
            if "default" in sub:
                out[key] = _fill(copy.deepcopy(sub["default"]), subs, root, validator)
                break
    for key, value in instance.items():
        if key not in out:
            out[key] = _fill(value, extra, root, validator)
    return out


def resolve_derived(data: dict[str, Any]) -> dict[str, Any]:
    """Replace context-dependent ``null`` defaults by their meaning (in place; returns ``data``)."""
    model = data["model"]
    family = model["family"]
    if family == "cnn" and model["strides"] is None:
        model["strides"] = [1] * len(model["channels"])
    if family == "layers":
        for layer in model["layers"]:
            if layer["op"] == "conv2d" and layer["padding"] is None:
                layer["padding"] = layer["kernel_size"] // 2
            if layer["op"] in ("avgpool", "maxpool") and layer["stride"] is None:
                layer["stride"] = layer["kernel_size"]
        if model["outputs"] is None:
            model["outputs"] = [model["layers"][-1]["name"]]
    return data
