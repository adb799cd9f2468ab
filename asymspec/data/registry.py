"""The dataset registry: ``name -> DatasetEntry`` (loader, kind, splits, options schema).

Experiments name their data by ``dataset.name``; a runner or a user package adds a data set
with :func:`register_dataset` (usable as a decorator) before the experiment is loaded, and the
experiment loader then accepts the name and validates ``dataset.options`` against the entry's
``options_schema`` (a JSON Schema for the keyword options of the loader), with located errors.

A loader is ``loader(split, root, **options)`` and returns an
:class:`~asymspec.data.datasets.ArrayDataset`-like object (``x``, ``y``, ``num_classes``,
``subset(n, seed)``) for ``kind="image"`` / ``"array"``, or a
:class:`~asymspec.data.datasets.GraphSplit` for ``kind="graph"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymspec.errors import UserError

KINDS = ("image", "array", "graph")


@dataclass(frozen=True)
class DatasetEntry:
    """One registered data set."""

    name: str
    loader: Callable[..., Any]
    kind: str = "image"
    splits: tuple[str, ...] = ("train", "test")
    options_schema: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Callable[..., Any] | None = None, *,
                     kind: str = "image", splits: tuple[str, ...] = ("train", "test"),
                     options_schema: dict[str, Any] | None = None, description: str = "",
                     replace: bool = False):
    """Register ``loader(split, root: Path, **options)`` as data set ``name``.

    Usable directly or as a decorator (``@register_dataset("mine", kind="array")``).  Names are
    unique unless ``replace=True``.  ``options_schema`` is the JSON Schema of the options
    mapping (``{"type": "object", "properties": ...}``); without one the data set takes none.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and not replace and _REGISTRY[name].loader is not fn:
            raise ValueError(f"dataset {name!r} is already registered; pass replace=True")
        schema = options_schema or {"type": "object", "additionalProperties": False,
                                    "properties": {}}
        _REGISTRY[name] = DatasetEntry(name, fn, kind, tuple(splits), schema, description)
        return fn

    return deco(loader) if loader is not None else deco


def dataset_entry(name: str) -> DatasetEntry:
    """The entry for ``name`` (:class:`UserError` naming the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(_REGISTRY)} (a package "
                        "adds one with asymspec.data.register_dataset)") from None


def registered() -> dict[str, DatasetEntry]:
    """All registered data sets (a copy), in registration order."""
    return dict(_REGISTRY)


def load_registered(name: str, split: str, root: Path, **options: Any) -> Any:
    entry = dataset_entry(name)
    if split not in entry.splits:
        raise UserError(f"dataset {name!r} has no split {split!r}; use one of {entry.splits}")
    if options and not entry.options_schema.get("properties"):
        raise UserError(f"dataset {name!r} takes no options, got {sorted(options)}")
    return entry.loader(split, root, **options)
