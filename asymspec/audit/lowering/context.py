"""The typed object every audit op handler receives (instead of 7-8 positional arguments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch.fx as fx
from torch import nn

if TYPE_CHECKING:
    from asymspec.audit.lowering.interpreter import Lowerer


@dataclass
class Call:
    """One op to lower.

    ``args`` / ``kwargs`` hold the lowered operands (:class:`Feat`, :class:`Raw`, python values),
    ``real_args`` / ``real_kwargs`` the concrete values they were computed from on the example
    inputs, ``out`` the op's concrete output.  ``module`` and ``qual`` (its qualified name, the
    IR node's base name) are set for leaf modules; ``node`` for fx nodes (None for a handler's
    child module lowered directly, e.g. ``GINConv.nn``)."""

    lowerer: Lowerer
    node: fx.Node | None
    args: list | tuple
    kwargs: dict = field(default_factory=dict)
    real_args: list | tuple = ()
    real_kwargs: dict = field(default_factory=dict)
    out: Any = None
    module: nn.Module | None = None
    qual: str = ""
