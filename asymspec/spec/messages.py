"""Turning jsonschema validation errors into one precise, readable problem.

Each :class:`jsonschema.ValidationError` becomes a :class:`Problem`: the JSON path of the
offending field, a message saying what was expected, and where to point (``"key"`` for unknown
keys, ``"parent"`` for a missing required field, ``"value"`` otherwise).  :func:`pick` chooses
the problem to report: the shallowest, and at equal depth a wrong type before an unknown key,
an unknown key before a bad value, a bad value before a missing field, then document order.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import ValidationError

Path = tuple[str | int, ...]

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
_JSON_TYPE_NAMES = {"object": "mapping", "array": "list"}
_RANK = {"type": 0, "unknown": 1, "required": 3}


@dataclass(frozen=True)
class Problem:
    path: Path  # the field the message is about
    message: str
    anchor: str  # "key", "value" or "parent": which position of `path` to report
    depth: int  # depth of the instance the schema keyword rejected (for ranking)
    rank: int


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def show(value: Any, limit: int = 60) -> str:
    """A short YAML-ish rendering of a value for messages."""
    if isinstance(value, str):
        text = repr(value)
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def got(value: Any) -> str:
    name = type_name(value)
    return "got null" if value is None else f"got {name} {show(value)}"


def _suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (ignoring case), if any is close."""
    by_lower = {c.lower(): c for c in candidates if isinstance(c, str)}
    matches = difflib.get_close_matches(word.lower(), list(by_lower), 1, 0.6)
    return by_lower[matches[0]] if matches else None


def _discriminator(schema: dict[str, Any]) -> str:
    """' for op 'conv2d'' when ``schema`` is the op/family-specific definition, else ''."""
    props = schema.get("properties", {})
    for key, label in (("op", "op"), ("family", "family")):
        const = props.get(key, {}).get("const") if isinstance(props.get(key), dict) else None
        if const is not None:
            return f" for {label} {const!r}"
    return ""


def _one_of(values: list[Any]) -> str:
    return ", ".join("null" if v is None else str(v) for v in values)


def problems(error: ValidationError) -> list[Problem]:
    """The problems one validation error stands for (usually one)."""
    path: Path = tuple(error.absolute_path)
    kw = error.validator
    value = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    depth = len(path)

    def value_problem(message: str, rank: int = 2) -> list[Problem]:
        return [Problem(path, message, "value", depth, rank)]

    if "propertyNames" in error.relative_schema_path:
        key = str(value)
        what = "input name" if path and path[-1] == "inputs" else "key"
        return [Problem((*path, key), f"invalid {what} {key!r}: {_explain(error)}", "key",
                        depth, 1)]
    if kw == "additionalProperties" and isinstance(value, dict):
        allowed = list(schema.get("properties", {}))
        missing = [k for k in schema.get("required", []) if k not in value]
        found = []
        for key in value:
            if key in allowed:
                continue
            hint = _suggest(key, allowed) or (missing[0] if len(missing) == 1 else None)
            where = _discriminator(schema)
            msg = f"unknown key {key!r}{where}"
            msg += f" (did you mean {hint!r}?)" if hint else f"; valid keys: {', '.join(allowed)}"
            found.append(Problem((*path, key), msg, "key", depth, _RANK["unknown"]))
        return found
    if kw == "required" and isinstance(value, dict):
        out = []
        allowed = set(schema.get("properties", {}))
        for name in error.validator_value:
            if name in value:
                continue
            unknown = [k for k in value if k not in allowed]
            typo = _suggest(name, unknown)
            if typo is not None:
                out.append(Problem((*path, typo), f"unknown key {typo!r} (did you mean {name!r}?)",
                                   "key", depth, _RANK["unknown"]))
                continue
            where = _discriminator(schema)
            msg = f"missing required field {name!r}" + (f" (required{where})" if where else "")
            choices = schema.get("properties", {}).get(name, {}).get("enum")
            if choices:
                msg += f"; one of {_one_of(choices)}"
            out.append(Problem((*path, name), msg, "parent", depth, _RANK["required"]))
        return out
    if kw == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else list(expected)
        names = " or ".join(_JSON_TYPE_NAMES.get(t, t) for t in expected)
        return value_problem(f"expected {names}, {got(value)}", _RANK["type"])
    if kw == "enum":
        choices = list(error.validator_value)
        msg = f"must be one of {_one_of(choices)} ({got(value)}"
        hint = _suggest(value, choices) if isinstance(value, str) else None
        msg += f"; did you mean {hint!r}?)" if hint else ")"
        return value_problem(msg)
    if kw == "const":
        if path == ("asymmetry",):
            return value_problem("must be 'none' or a mapping of methods (w_asym, sigma_asym, "
                                 f"syre, fixed_bias), {got(value)}")
        return value_problem(f"must be {show(error.validator_value)}, {got(value)}")
    return value_problem(_explain(error))


def _explain(error: ValidationError) -> str:
    kw, bound, value = error.validator, error.validator_value, error.instance
    simple: dict[str, Callable[[], str]] = {
        "minimum": lambda: f"must be >= {bound}, got {show(value)}",
        "maximum": lambda: f"must be <= {bound}, got {show(value)}",
        "exclusiveMinimum": lambda: f"must be > {bound}, got {show(value)}",
        "exclusiveMaximum": lambda: f"must be < {bound}, got {show(value)}",
        "minItems": lambda: (f"must have at least {bound} item{'s' if bound != 1 else ''}, "
                             f"got {len(value)}"),
        "maxItems": lambda: f"must have at most {bound} items, got {len(value)}",
        "minLength": lambda: ("must not be empty" if bound == 1
                              else f"must have at least {bound} characters, got {show(value)}"),
        "minProperties": lambda: f"must have at least {bound} entr{'y' if bound == 1 else 'ies'}",
    }
    if kw in simple:
        return simple[kw]()
    if kw == "pattern":
        if bound == NAME_PATTERN:
            return ("must be a name made of letters, digits and '_' (not starting with a digit), "
                    f"optionally dotted like 'block1.conv2', got {show(value)}")
        return f"must match the pattern {bound!r}, got {show(value)}"
    return error.message


def _doc_order(problem: Problem, locate: Callable[[Path], tuple[int | None, int | None]]):
    line, column = locate(problem.path)
    return (line if line is not None else 1 << 30, column or 0)


def pick(errors: Iterable[ValidationError],
         locate: Callable[[Path], tuple[int | None, int | None]]) -> tuple[Problem, int]:
    """The problem to report and how many other distinct problems there are."""
    found: dict[tuple[Path, str], Problem] = {}
    for error in errors:
        for problem in problems(error):
            found.setdefault((problem.path, problem.message), problem)
    if not found:
        raise ValueError("pick() needs at least one error")
    ordered = sorted(found.values(),
                     key=lambda p: (p.depth, p.rank, _doc_order(p, locate), str(p.path)))
    best = ordered[0]
    # Two messages about one field (a wrong type and the enum it also misses) count once; a
    # missing field beside the unknown key that is probably its misspelling is not news either.
    others = {
        p.path for p in ordered[1:]
        if not (best.rank == _RANK["unknown"] and p.rank == _RANK["required"]
                and p.path[:-1] == best.path[:-1])
    } - {best.path}
    return best, len(others)
