"""Sweep grids: which cells a sweep has, and the ``--set`` overrides each cell applies.

A grid is the Cartesian product of its ``axes`` (in the order written) followed by its explicit
``points``.  An axis is a field path that ``--set`` accepts (``train.warmup_epochs``,
``asymmetry.w_asym.kappa``, ``variants.w_asym.train.lr``, ...) or one of the *derived* axes:

``nfix_scale``
    multiplies every per-layer W-Asym ``nfix`` of the model (the block's default and each
    ``overrides`` entry) by the value, rounding half up — Fig 6's "number fixed" axis, which is
    Table 11's counts scaled by 0, .25, .5, .75, 1 (the reference's ``--n_mul``).  For an
    experiment base it acts on every trained variant whose model has a ``w_asym`` block.

A cell is a mapping ``axis -> value``; its id is derived from that mapping alone (a SHA-256 of
its canonical JSON), so changing one value in the grid changes one cell's id and nothing else.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

DERIVED_AXES = ("nfix_scale",)


@dataclass(frozen=True)
class Cell:
    """One point of a sweep: ``values`` maps each axis to its value (in grid order)."""

    values: dict[str, Any] = field(hash=False)
    index: int = 0

    @property
    def id(self) -> str:
        blob = json.dumps(self.values, sort_keys=True, separators=(",", ":"))
        return "cell-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def label(self) -> str:
        """``kappa=1.5, nfix_scale=0.25`` (the last path segment of each axis)."""
        return ", ".join(f"{axis_label(a)}={_fmt(v)}" for a, v in self.values.items())


def axis_label(axis: str) -> str:
    return axis.rsplit(".", 1)[-1].strip("\"'")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if not isinstance(value, str) else value


def expand(axes: dict[str, list[Any]] | None, points: Iterable[dict[str, Any]] | None = None
           ) -> list[Cell]:
    """All cells: the product of ``axes`` (first axis varies slowest), then ``points``.

    Duplicate cells (same mapping) are kept once, at their first position.
    """
    cells: list[Cell] = []
    seen: set[str] = set()

    def add(values: dict[str, Any]) -> None:
        cell = Cell(dict(values), len(cells))
        if cell.id not in seen:
            seen.add(cell.id)
            cells.append(cell)

    axes = axes or {}
    if axes:
        names = list(axes)
        for combo in itertools.product(*(axes[n] for n in names)):
            add(dict(zip(names, combo)))
    for point in points or []:
        add(dict(point))
    return cells


def scale_count(n: int, scale: float) -> int:
    """``round(n * scale)`` with halves rounded up (deterministic, unlike banker's rounding)."""
    return int(math.floor(n * scale + 0.5))


def scaled_nfix(w_asym: dict[str, Any], scale: float) -> list[tuple[tuple[str, ...], int]]:
    """``(path within the w_asym block, new nfix)`` for the default and every override."""
    out: list[tuple[tuple[str, ...], int]] = []
    if "nfix" in w_asym:
        out.append((("nfix",), scale_count(int(w_asym["nfix"]), scale)))
    for glob, values in (w_asym.get("overrides") or {}).items():
        if isinstance(values, dict) and "nfix" in values:
            out.append((("overrides", glob, "nfix"), scale_count(int(values["nfix"]), scale)))
    return out


def quote_segment(segment: str) -> str:
    """A key segment as ``--set`` reads it (quoted when it holds dots, globs or '=')."""
    if segment and all(c.isalnum() or c in "_-" for c in segment):
        return segment
    return json.dumps(segment)


def override_text(path: Iterable[str], value: Any) -> str:
    """``a.b."c.*".d=<value as one-line JSON/YAML>``."""
    key = ".".join(quote_segment(str(p)) for p in path)
    return f"{key}={json.dumps(value)}"


def model_overrides(cell: Cell, w_asym: dict[str, Any] | None) -> list[str]:
    """``--set`` overrides of a *model* spec for ``cell`` (``w_asym`` = its resolved block)."""
    out = []
    for axis, value in cell.values.items():
        if axis == "nfix_scale":
            if not w_asym:
                raise ValueError("nfix_scale needs a model with a w_asym block")
            out += [override_text(("asymmetry", "w_asym") + p, n)
                    for p, n in scaled_nfix(w_asym, float(value))]
        else:
            out.append(f"{axis}={json.dumps(value)}")
    return out


def experiment_overrides(cell: Cell,
                         variant_w_asym: Callable[[], dict[str, dict[str, Any] | None]],
                         variant_overrides: Callable[[str], list[str]]) -> list[str]:
    """``--set`` overrides of an *experiment* spec for ``cell``.

    ``variant_w_asym()`` gives each trained variant's resolved ``w_asym`` block (or None);
    ``variant_overrides(v)`` the model overrides the variant already has — a derived axis
    appends to them (``--set`` replaces whole lists).
    """
    out = []
    for axis, value in cell.values.items():
        if axis == "nfix_scale":
            blocks = {v: b for v, b in variant_w_asym().items() if b}
            if not blocks:
                raise ValueError("nfix_scale needs a variant whose model has a w_asym block")
            for variant, block in blocks.items():
                extra = [override_text(("asymmetry", "w_asym") + p, n)
                         for p, n in scaled_nfix(block, float(value))]
                out.append(override_text(("variants", variant, "overrides"),
                                         list(variant_overrides(variant)) + extra))
        else:
            out.append(f"{axis}={json.dumps(value)}")
    return out
