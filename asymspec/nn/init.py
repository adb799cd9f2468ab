"""Drawing the trainable weight entries the spec's ``init`` rule selects.

The plan (which layers, ``normal`` std or ``uniform`` bound) is decided at compile time by
:mod:`asymspec.passes.init_plan`; this module only draws.  Each planned layer gets its own
generator, seeded by (init seed, ``"init-weights"``, layer name), so weights are bit-identical in
any process and do not depend on which other layers are planned.  The layer's default draw
(weight, then bias, from its ``"init"`` generator) has already happened in its constructor and
is kept for the bias: changing the weight rule never changes a bias.  Only trainable entries are
written — W-Asym frozen entries keep their fixed values, and fully fixed weights (FiGLU's F),
masks, fixed values and syre noise are buffers this never touches.
"""

from __future__ import annotations

import torch
from torch import nn

from asymspec.seeding import generator

PLAN_KEY = "init"  # = asymspec.passes.init_plan.PLAN_KEY (not imported: keeps nn free of passes)


def apply_init(model: nn.Module, ir, init_seed: int) -> None:
    """Re-draw, in place, the trainable weight entries of every layer in ``ir``'s init plan."""
    plan = ir.g.graph.get(PLAN_KEY) or {}
    for name, entry in plan.items():
        layer = model.get_submodule(name)
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, nn.Parameter):  # fully fixed: nothing trainable to draw
            continue
        gen = generator(init_seed, "init-weights", name)
        if entry["dist"] == "normal":
            new = torch.randn(weight.shape, generator=gen) * entry["scale"]
        else:
            new = (torch.rand(weight.shape, generator=gen) * 2 - 1) * entry["scale"]
        mask = getattr(layer, "weight_mask", None)
        with torch.no_grad():
            weight.copy_(new if mask is None else torch.where(mask, new, weight))
