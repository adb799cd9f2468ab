"""The :class:`Spec` object: a validated, default-filled spec and where its parts came from.

Field paths are tuples of ``str`` keys and ``int`` list indices, e.g.
``("model", "layers", 3, "in")`` (shown as ``model.layers[3].in``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from asymspec.errors import SpecError
from asymspec.spec.overrides import Override

Path = tuple[str | int, ...]
Location = tuple[int, int]


@dataclass
class Spec:
    """A loaded spec.

    ``data`` is validated and has every default filled in (see :mod:`asymspec.spec.defaults`).
    ``locations`` maps a field path to the 1-based ``(line, column)`` of its *value* in ``file``;
    ``key_locations`` maps a mapping entry's path to the position of its *key*.  Both are empty
    for specs loaded from a dict.  Fields set by a command-line override are located at the
    override (see :meth:`error`), not in the file.
    """

    data: dict[str, Any]
    file: str | None = None
    locations: dict[Path, Location] = field(default_factory=dict)
    text: str | None = None
    key_locations: dict[Path, Location] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    created: dict[Path, Override] = field(default_factory=dict)  # mappings overrides created

    # -- convenience accessors -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def seed(self) -> int:
        return self.data["seed"]

    @property
    def family(self) -> str:
        return self.data["model"]["family"]

    @property
    def model(self) -> dict[str, Any]:
        return self.data["model"]

    @property
    def asymmetry_methods(self) -> dict[str, dict[str, Any]]:
        """``{method: block}`` for the asymmetry methods in use (empty for ``none``)."""
        asym = self.data["asymmetry"]
        if not isinstance(asym, dict):
            return {}
        return {k: v for k, v in asym.items() if k != "seed" and v is not None}

    def get(self, path: Sequence[str | int]) -> Any:
        """The value at a field path (``KeyError``/``IndexError`` if absent)."""
        node: Any = self.data
        for part in path:
            node = node[part]
        return node

    # -- locations and errors --------------------------------------------------------------
    def override_for(self, path: Sequence[str | int]) -> Override | None:
        """The last override that set ``path`` (or an ancestor), or that created it, if any."""
        path = tuple(path)
        for override in reversed(self.overrides):
            if path[: len(override.path)] == override.path:
                return override
        for created, override in self.created.items():
            if path[: len(created)] == created:
                return override
        return None

    def locate(self, path: Sequence[str | int]) -> tuple[int | None, int | None]:
        """Position in ``file`` of ``path``, or of its nearest located ancestor.

        For the path itself the value's position is preferred; for an ancestor the position of
        its key (``model:`` rather than the first line inside it).  ``(None, None)`` if nothing
        is located (dict input).
        """
        path = tuple(path)
        if path in self.locations:
            return self.locations[path]
        if path in self.key_locations:
            return self.key_locations[path]
        for n in range(len(path) - 1, -1, -1):
            ancestor = path[:n]
            loc = self.key_locations.get(ancestor) or self.locations.get(ancestor)
            if loc is not None:
                return loc
        return None, None

    def error(self, path: Sequence[str | int], message: str) -> SpecError:
        """A :class:`SpecError` about the field at ``path``, located as well as possible.

        Use this for every problem found after loading (IR builder, passes), e.g.
        ``raise spec.error(("model", "layers", 3, "in"), "unknown layer 'fc9'")``.
        """
        path = tuple(path)
        override = self.override_for(path)
        if override is not None:
            return override.error(message, path=path)
        line, column = self.locate(path)
        return SpecError(message, self.file, line, column, path)

    def with_overrides(self, overrides: Sequence[str]) -> Spec:
        """This spec reloaded with more overrides (keeps line numbers when loaded from text)."""
        from asymspec.spec.loader import load_spec, load_spec_text

        if self.text is None:
            return load_spec(self.data, overrides=list(overrides))
        previous = [o.text for o in self.overrides]
        return load_spec_text(self.text, self.file, previous + list(overrides))

    # -- serialisation ---------------------------------------------------------------------
    def to_yaml(self) -> str:
        """The resolved spec (defaults filled in) as YAML; loading it gives the same ``data``."""
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None,
                              allow_unicode=True, width=100)

    def canonical_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)

    def content_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``data``: stable across runs and machines."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
