"""The experiment schema of one runner kind: the core ``schemas/experiment.schema.json`` with the
runner's ``settings_schema`` fragment merged in.

A fragment is a mapping with any of::

    properties          top-level spec fields of this kind (JSON Schema, with defaults)
    required            top-level fields this kind needs (added to the core's ``name``)
    $defs               definitions the properties refer to (``#/$defs/...``); may use the
                        core's (``recipe``, ``recipe_override``, ``variant``, ``upstream``)
    variant_properties  extra fields of each entry of ``variants`` (e.g. lmc's ``align``)

Core fields other than ``name``, ``kind``, ``profile`` and ``profiles`` may be redefined by a
fragment (e.g. to give ``dataset`` a default).  A malformed fragment is a programming error of
the runner and raises :class:`TypeError` when the kind is first used.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from asymspec.spec.schema import StrictValidator, load_schema

CORE = "experiment"
FRAGMENT_KEYS = {"properties", "required", "$defs", "variant_properties", "description"}
FIXED = {"name", "kind", "profile", "profiles"}


def merge_fragment(core: dict[str, Any], fragment: dict[str, Any] | None,
                   kind: str = "?") -> dict[str, Any]:
    """A new schema: ``core`` plus ``fragment`` (see the module docstring)."""
    schema = copy.deepcopy(core)
    if not fragment:
        return schema
    if not isinstance(fragment, dict) or set(fragment) - FRAGMENT_KEYS:
        extra = sorted(set(fragment) - FRAGMENT_KEYS) if isinstance(fragment, dict) else fragment
        raise TypeError(f"runner {kind!r}: settings_schema may only have the keys "
                        f"{sorted(FRAGMENT_KEYS)}; got {extra}")
    props = fragment.get("properties", {})
    clash = FIXED & set(props)
    if clash:
        raise TypeError(f"runner {kind!r}: settings_schema cannot redefine {sorted(clash)}")
    schema["properties"].update(copy.deepcopy(props))
    schema["required"] = list(dict.fromkeys(schema.get("required", []) +
                                            list(fragment.get("required", []))))
    schema.setdefault("$defs", {}).update(copy.deepcopy(fragment.get("$defs", {})))
    extra = fragment.get("variant_properties")
    if extra:
        schema["$defs"]["variant"]["properties"].update(copy.deepcopy(extra))
    if fragment.get("description"):
        schema["description"] = f"{schema['description']} Kind {kind!r}: {fragment['description']}"
    StrictValidator.check_schema(schema)
    return schema


@cache
def _validator_for(cls: type) -> Any:
    fragment = getattr(cls, "settings_schema", None)
    return StrictValidator(merge_fragment(load_schema(CORE), fragment, getattr(cls, "kind", "?")))


def experiment_validator(runner_cls: type | None = None) -> Any:
    """The validator of the merged schema for ``runner_cls`` (the core one for ``None``);
    cached per class."""
    if runner_cls is None:
        return StrictValidator(load_schema(CORE))
    return _validator_for(runner_cls)


def experiment_schema(runner_cls: type | None = None) -> dict[str, Any]:
    """The merged JSON Schema (e.g. for documentation or editors)."""
    return experiment_validator(runner_cls).schema
