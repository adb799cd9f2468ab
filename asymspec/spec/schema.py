"""Finding, loading and validating against the JSON Schemas in ``schemas/``.

Installed packages carry the schemas as package data in ``asymspec/_schemas``; a source checkout
has them in the repository's ``schemas/``.  The first directory that has the file wins.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.protocols import Validator

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIRS = (_PACKAGE_ROOT / "_schemas", _PACKAGE_ROOT.parent / "schemas")


def schema_path(name: str = "model") -> Path:
    """The path of ``<name>.schema.json``: ``asymspec/_schemas`` first, then ``schemas/``."""
    filename = f"{name}.schema.json"
    for directory in SCHEMA_DIRS:
        candidate = directory / filename
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in SCHEMA_DIRS)
    raise FileNotFoundError(f"schema {filename} not found (searched {searched})")


@cache
def load_schema(name: str = "model") -> dict[str, Any]:
    """The parsed schema (cached; do not mutate it)."""
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


def _is_strict_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema calls 8.0 an integer; a spec that says `nfix: 8.0` is more likely a mistake and
    # downstream code wants real ints, so only Python ints (not bools) count.
    return isinstance(instance, int) and not isinstance(instance, bool)


StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)


@cache
def validator(name: str = "model") -> Validator:
    """A (cached) draft 2020-12 validator for the named schema, with strict integers."""
    return StrictValidator(load_schema(name))


def resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any]:
    """Resolve a local ``$ref`` such as ``#/$defs/mlp`` within ``root``."""
    if not ref.startswith("#"):
        raise ValueError(f"only local $refs are supported, got {ref!r}")
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node
