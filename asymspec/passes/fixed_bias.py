"""Fixed biases (Lim et al. 2024, appendix E.3): freeze every bias to U(-k, k).

The paper shows this does *not* give linear mode connectivity, although the distinct fixed
biases do remove the graph automorphisms (each neuron gets its own colour) — a useful contrast
for the verifier and the LMC experiment.
"""

from __future__ import annotations

import torch

from asymspec.ir.graph import IRGraph
from asymspec.passes.select import require_finite, settings_for
from asymspec.seeding import generator

NAME = "fixed_bias"
FIELDS = ("k",)


def apply(ir: IRGraph, cfg: dict, seed: int, error) -> list[str]:
    changed = []
    for name in list(ir.g.nodes):
        node = ir.node(name)
        if node["bias"] != "trainable" or node["added_by"] is not None or node["shares"]:
            continue
        s = settings_for(name, cfg, FIELDS)
        if s is None:
            continue
        k = float(s.get("k", 1.0))
        u = torch.rand(node["size"], generator=generator(seed, NAME, "bias", name))
        node["bias"] = (2 * u - 1) * k
        require_finite(node["bias"], name, "k", k,
                       ("asymmetry", NAME) + s["_source"].get("k", ("k",)), error)
        node.setdefault("asymmetry", {})[NAME] = {"k": k}
        changed.append(name)
    return changed
