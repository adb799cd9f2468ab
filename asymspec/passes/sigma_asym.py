"""σ-Asymmetry (Lim et al. 2024, §4.2): replace activations by FiGLU, σ(x) = sigmoid(Fx) ⊙ x.

``F`` is a frozen random matrix, N(0, f_std^2) (or f_std^2 / d with ``scale: inv_sqrt_dim``);
for image tensors it is a 1x1 convolution.  In the IR the activation node ``A`` reading ``X``
becomes ``A = X * A_gate`` with ``A_gate = sigmoid(A_F)`` and ``A_F`` a linear / 1x1-conv node
whose weight edge is entirely fixed to ``F`` — so the verifier sees F's values as edge colours
(Proposition 2: with distinct nonzero entries no permutation survives).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from asymspec.ir.graph import IRGraph
from asymspec.passes.select import settings_for
from asymspec.seeding import generator

NAME = "sigma_asym"
FIELDS = ("f_std", "scale")


def apply(ir: IRGraph, cfg: dict, seed: int, error) -> list[str]:
    changed = []
    for name in list(ir.g.nodes):
        node = ir.node(name)
        if node["op"] != "activation" or node["added_by"] is not None:
            continue
        s = settings_for(name, cfg, FIELDS)
        if s is None:
            continue
        (x,) = node["inputs"]
        d = node["size"]
        std = float(s.get("f_std", 1.0))
        if s.get("scale", "absolute") == "inv_sqrt_dim":
            std /= math.sqrt(d)
        image = node["layout"] == "image"
        shape = (d, d, 1, 1) if image else (d, d)
        F = torch.randn(shape, generator=generator(seed, NAME, "F", name)) * std
        f_name, g_name = f"{name}_F", f"{name}_gate"
        op = "conv2d" if image else "linear"
        attrs = ({"kernel_size": 1, "stride": 1, "padding": 0, "in_channels": d} if image
                 else {"in_features": d})
        ir.add_node(f_name, op, [x], d, node["shape"], node["layout"], role="gate",
                    attrs=attrs, source=node["source"], added_by=NAME)
        ir.add_dense_edge(x, f_name, shape)
        e = ir.edge(x, f_name)
        e["mask"] = torch.zeros(shape, dtype=torch.bool)
        e["fixed"] = F
        e["decided_by"].append(NAME)
        ir.add_node(g_name, "activation", [f_name], d, node["shape"], node["layout"],
                    role="gate", attrs={"fn": "sigmoid"}, source=node["source"], added_by=NAME)
        ir.add_map_edge(f_name, g_name, np.arange(d))
        node["op"] = "mul"
        node["attrs"] = {"fn": "figlu", "replaced": node["attrs"].get("fn")}
        node["inputs"] = [x, g_name]
        ir.add_map_edge(g_name, name, np.arange(d), slot=1)
        node.setdefault("asymmetry", {})[NAME] = {"f_std": std}
        changed.append(name)
    return changed
