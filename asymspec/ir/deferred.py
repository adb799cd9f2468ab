"""Placeholders for the tensors an asymmetry pass would draw, for counting without drawing.

``compile_ir(spec, draw=False)`` runs every pass's *decisions* — which layers it selects, the
settings each gets, the nodes and edges it adds, every shape-level condition it checks (``nfix``
against the fan-in, enough distinct masks) — but draws no random tensor: where a pass would store
a mask, fixed values, noise or a fixed bias it stores a :class:`Deferred` with that tensor's
shape (and, for a mask, how many of its entries are trainable).  Counting those placeholders
gives exactly the counts of the drawn IR, because a pass's decisions never depend on the values it
draws; ``asymspec show`` prints them without importing torch, so a spec with a trillion-entry
layer costs nothing to describe (the size limits still refuse to build it).

What needs drawn values is refused on a deferred IR (:func:`require_drawn`): emitting modules,
the symmetry check, continuous-symmetry rules.  Conditions on the drawn values themselves
(FiGLU's F without zero or repeated entries, float32 overflow) are checked when values are
drawn; the scales that could overflow are refused earlier, at spec validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DRAWN_KEY = "drawn"  # graph attribute: False on an IR compiled with draw=False


@dataclass(frozen=True)
class Deferred:
    """A tensor a pass decided to create but did not draw.

    ``shape``: the tensor's shape.  ``kind``: ``"mask"`` (bool, True = trainable) or
    ``"values"`` (float32 fixed values, noise or biases).  ``trainable``: for a mask, its number
    of True entries (what ``int(mask.sum())`` would give once drawn).
    """

    shape: tuple[int, ...]
    kind: str = "values"
    trainable: int | None = None

    def numel(self) -> int:
        return math.prod(self.shape)

    def count_true(self) -> int:
        """The number of True entries of a deferred mask."""
        if self.kind != "mask" or self.trainable is None:
            raise TypeError("count_true() is defined only for a deferred mask")
        return self.trainable


def mask_count(mask: Any) -> int:
    """Trainable (True) entries of a drawn bool mask or a deferred one."""
    if isinstance(mask, Deferred):
        return mask.count_true()
    return int(mask.sum())


def is_drawn(ir: Any) -> bool:
    """Whether ``ir`` holds drawn tensors (every IR except one compiled with ``draw=False``)."""
    return ir.g.graph.get(DRAWN_KEY, True)


def require_drawn(ir: Any, what: str) -> None:
    """Refuse ``what`` (emitting, checking) on an IR whose random tensors were not drawn."""
    if not is_drawn(ir):
        raise ValueError(f"{what} needs the drawn masks and fixed values; this IR was compiled "
                         "with draw=False (counts only): compile it with draw=True")
