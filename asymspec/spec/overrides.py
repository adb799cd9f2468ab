"""Command-line overrides: ``dotted.key=value`` applied to the raw spec before validation.

Key syntax: segments separated by ``.``; a segment that is all digits, or ``[n]``, indexes a
list (``model.layers.2.out_features=10`` or ``model.layers[2].out_features=10``); a segment in
quotes may contain dots, ``*`` or ``=`` (``asymmetry.w_asym.overrides."block1.*".nfix=2``).
The value is parsed as YAML (``[256, 256]``, ``8``, ``null``, ``gelu``).

Missing or null mappings along the way are created (so ``asymmetry.w_asym.nfix=8`` works on a
spec without ``asymmetry`` or with ``asymmetry: none``); list indices must exist.

Errors point at the override itself: ``file="<override #N>"``, ``line=1`` and the 1-based column
in the override string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from asymspec.errors import SpecError, format_json_path
from asymspec.spec.yaml_lines import parse_yaml

Path = tuple[str | int, ...]

_BARE = re.compile(r"[^.\[\]=\"'\s]+")
_INDEX = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Override:
    text: str  # the override as given
    number: int  # 1-based position among the overrides
    path: Path
    value: Any
    value_column: int  # 1-based column of the value in `text`

    @property
    def label(self) -> str:
        return f"<override #{self.number}>"

    def error(self, message: str, column: int | None = None,
              path: Path | None = None) -> SpecError:
        return SpecError(f"{message} (from override {self.text!r})", self.label, 1,
                         column or self.value_column, tuple(self.path if path is None else path))


def _bad(text: str, number: int, column: int, message: str, path: Path = ()) -> SpecError:
    return SpecError(f"bad override {text!r}: {message}", f"<override #{number}>", 1, column,
                     tuple(path))


def _split_key(text: str, number: int) -> tuple[Path, int]:
    """Parse the key; returns the path and the index of the '=' in ``text``."""
    path: list[str | int] = []
    i = 0
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    expect_segment = True
    while True:
        if expect_segment:
            if i >= n or text[i] == "=":
                what = "a key before '='" if not path else "a key after '.'"
                raise _bad(text, number, i + 1, f"expected {what}; overrides look like "
                                                "model.widths=[256,256]", path)
            if text[i] in "\"'":
                end = text.find(text[i], i + 1)
                if end < 0:
                    raise _bad(text, number, i + 1, "unclosed quote in the key", path)
                path.append(text[i + 1:end])
                i = end + 1
            else:
                m = _BARE.match(text, i)
                if m is None:
                    raise _bad(text, number, i + 1, f"unexpected {text[i]!r} in the key", path)
                segment = m.group()
                path.append(int(segment) if segment.isdigit() else segment)
                i = m.end()
            expect_segment = False
            continue
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise _bad(text, number, n + 1, "missing '='; overrides look like "
                                            "model.widths=[256,256]", path)
        if text[i] == "=":
            return tuple(path), i
        if text[i] == ".":
            expect_segment = True
            i += 1
            continue
        m = _INDEX.match(text, i)
        if m is None:
            raise _bad(text, number, i + 1, f"unexpected {text[i]!r} in the key (expected '.', "
                                            "'[index]' or '=')", path)
        path.append(int(m.group(1)))
        i = m.end()


def parse_override(text: str, number: int = 1) -> Override:
    """Parse one ``key=value`` override (``number`` is its 1-based position, for messages)."""
    if not isinstance(text, str):
        kind = type(text).__name__
        raise _bad(str(text), number, 1, f"expected a string 'key=value', got {kind}")
    path, eq = _split_key(text, number)
    raw = text[eq + 1:]
    start = eq + 1 + (len(raw) - len(raw.lstrip()))
    if not raw.strip():
        raise _bad(text, number, eq + 2, "missing value after '=' (write null for null)", path)
    if "\n" in raw:
        raise _bad(text, number, eq + 2, "the value must be on one line", path)
    try:
        value = parse_yaml(raw).data
    except SpecError as exc:
        column = eq + 1 + (exc.column or 1)
        if exc.message.startswith("invalid YAML: "):
            reason = "cannot parse the value as YAML: " + exc.message.removeprefix("invalid YAML: ")
        else:
            reason = f"bad value: {exc.message}"
        raise _bad(text, number, column, reason, path) from None
    return Override(text, number, path, value, start + 1)


def apply_override(data: dict[str, Any], override: Override) -> Path | None:
    """Set ``override.path`` in ``data`` (in place), creating missing mappings on the way.

    Returns the path of the outermost mapping it had to create, or ``None``.
    """
    node: Any = data
    path = override.path
    created: Path | None = None
    for depth, segment in enumerate(path):
        here = path[:depth]
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not isinstance(segment, int):
                raise _bad(override.text, override.number, 1,
                           f"'{format_json_path(here)}' is a list; use an index, not {segment!r}",
                           path)
            if segment >= len(node):
                raise _bad(override.text, override.number, 1,
                           f"index {segment} is out of range: '{format_json_path(here)}' has "
                           f"{len(node)} item{'s' if len(node) != 1 else ''}", path)
            key: str | int = segment
        elif isinstance(node, dict):
            key = str(segment)
        else:
            raise _bad(override.text, override.number, 1,
                       f"'{format_json_path(here)}' is a {_kind(node)}, not a mapping or list",
                       path)
        if last:
            node[key] = override.value
            return created
        child = node[key] if isinstance(node, list) or key in node else None
        if child is None or (here + (key,) == ("asymmetry",) and child == "none"):
            child = {}
            node[key] = child
            created = created or (*here, key)
        node = child
    return created


def _kind(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), type(value).__name__)
