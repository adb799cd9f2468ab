"""Parse YAML into plain JSON-like data while remembering where every value came from.

``yaml.safe_load`` forgets positions, so we compose the node tree with PyYAML's SafeLoader and
convert it ourselves.  The result records, for every JSON path (a tuple of ``str`` keys and
``int`` list indices), the 1-based ``(line, column)`` of the value and, for mapping entries, of
the key.  Only JSON-compatible values come out: strings, integers, finite floats, booleans,
null, lists and string-keyed mappings.  Anything else (duplicate keys, non-string keys, custom
tags, recursive aliases, ``.nan``) is a :class:`~asymspec.errors.SpecError` at its position.
Timestamps (``2024-01-01``) are kept as the text the user wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from asymspec.errors import SpecError

Path = tuple[str | int, ...]
Location = tuple[int, int]

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_SCALAR_KINDS = {
    _TAG + "str": "string",
    _TAG + "int": "integer",
    _TAG + "float": "number",
    _TAG + "bool": "boolean",
    _TAG + "null": "null",
    _TAG + "timestamp": "timestamp",
}
# A bound on converted nodes, so that alias bombs ("billion laughs") fail fast.
MAX_NODES = 200_000


@dataclass
class ParsedYaml:
    """Converted data plus the positions of its parts (1-based line, column)."""

    data: Any
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)


def _tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _loc(node: Node) -> Location:
    return node.start_mark.line + 1, node.start_mark.column + 1


def parse_yaml(text: str, filename: str | None = None) -> ParsedYaml:
    """Parse one YAML document; an empty document gives ``data=None``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, filename) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        position = exc.position
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise SpecError(f"invalid YAML: {exc.reason} (character #x{code:04x})", filename, line,
                        column) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", filename, 1, 1) from None
    except RecursionError:
        raise SpecError("invalid YAML: nesting is too deep", filename, 1, 1) from None
    parsed = ParsedYaml(None)
    if node is None:
        return parsed
    converter = _Converter(filename, parsed)
    try:
        parsed.data = converter.convert(node, ())
    except RecursionError:
        raise SpecError("invalid YAML: nesting is too deep", filename, *_loc(node)) from None
    return parsed


def _syntax_error(exc: yaml.MarkedYAMLError, filename: str | None) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    message = f"invalid YAML: {problem}"
    if exc.context and exc.problem and exc.context_mark is not None:
        cm = exc.context_mark
        message += f" ({exc.context} at line {cm.line + 1}, column {cm.column + 1})"
    if exc.note:
        message += f" ({exc.note})"
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return SpecError(message, filename, line, column)


class _Converter:
    def __init__(self, filename: str | None, out: ParsedYaml) -> None:
        self.filename = filename
        self.out = out
        self.constructor = SafeConstructor()
        self.active: set[int] = set()  # ids of collection nodes being converted (alias cycles)
        self.count = 0

    def error(self, node: Node, path: Path, message: str) -> SpecError:
        return SpecError(message, self.filename, *_loc(node), field_path=tuple(path))

    def convert(self, node: Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(node, path, f"spec is too large (more than {MAX_NODES} values; "
                                         "alias expansion?)")
        self.out.values[path] = _loc(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise self.error(node, path, "recursive YAML alias (a value that contains itself)")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _TAG + "seq":
                    raise self.error(node, path,
                                     f"unsupported YAML tag {_tag(node.tag)!r} on a list")
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != _TAG + "map":
                    raise self.error(node, path,
                                     f"unsupported YAML tag {_tag(node.tag)!r} on a mapping")
                return self.mapping(node, path)
            raise self.error(node, path, f"unsupported YAML node {type(node).__name__}")
        finally:
            self.active.discard(id(node))

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        kind = _SCALAR_KINDS.get(node.tag)
        if kind is None:
            raise self.error(node, path, f"unsupported YAML tag {_tag(node.tag)!r}")
        if kind == "timestamp":
            return node.value
        constructors = {
            "string": self.constructor.construct_yaml_str,
            "integer": self.constructor.construct_yaml_int,
            "number": self.constructor.construct_yaml_float,
            "boolean": self.constructor.construct_yaml_bool,
            "null": self.constructor.construct_yaml_null,
        }
        try:
            value = constructors[kind](node)
        except Exception:  # e.g. "0x_" matches the int pattern but int() rejects it
            raise self.error(node, path, f"cannot read {node.value!r} as {kind}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(node, path, f"expected a finite number, got {node.value!r}")
        return value

    def key(self, node: Node, path: Path) -> str:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            return node.value
        if isinstance(node, ScalarNode) and node.tag in _SCALAR_KINDS:
            kind = _SCALAR_KINDS[node.tag]
            article = "an" if kind[0] in "aeiou" else "a"
            raise self.error(node, (*path, node.value), f"mapping key {node.value!r} is read as "
                             f"{article} {kind}; keys must be strings (quote it: '{node.value}')")
        raise self.error(node, path, "mapping keys must be plain strings")

    def mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            child = (*path, key)
            if key in result:
                first = self.out.keys[child]
                raise self.error(key_node, child, f"duplicate key {key!r} (first defined at line "
                                                  f"{first[0]})")
            self.out.keys[child] = _loc(key_node)
            result[key] = self.convert(value_node, child)
        # YAML merge keys ("<<: *defaults"): keys written explicitly win; among several merged
        # mappings the earlier one wins.  Merged values are located where they were written.
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise self.error(source, path, "a merge key ('<<') must name a mapping or a "
                                                   "list of mappings")
                self.merge_from(source, path, result)
        return result

    def merge_from(self, source: MappingNode, path: Path, result: dict[str, Any]) -> None:
        scratch = ParsedYaml(None)
        sub = _Converter(self.filename, scratch)
        sub.active, sub.count = self.active, self.count
        merged = sub.convert(source, path)
        self.count = sub.count
        for key, value in merged.items():
            if key in result:
                continue
            result[key] = value
            prefix = (*path, key)
            for table, target in ((scratch.values, self.out.values), (scratch.keys, self.out.keys)):
                for p, loc in table.items():
                    if p[: len(prefix)] == prefix:
                        target[p] = loc
