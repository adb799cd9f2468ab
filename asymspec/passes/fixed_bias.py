"""Fixed biases (Lim et al. 2024, appendix E.3): freeze every bias to U(-k, k).

The paper shows this does *not* give linear mode connectivity, although the distinct fixed
biases do remove the graph automorphisms (each neuron gets its own colour) — a useful contrast
for the verifier and the LMC experiment.
"""

from __future__ import annotations

from asymspec.ir.deferred import Deferred
from asymspec.ir.graph import IRGraph
from asymspec.passes.select import require_finite, settings_for

NAME = "fixed_bias"
FIELDS = ("k",)


def apply(ir: IRGraph, cfg: dict, seed: int, error, draw: bool = True) -> list[str]:
    """Freeze the selected trainable biases (``draw=False``: as deferred placeholders)."""
    changed = []
    for name in list(ir.g.nodes):
        node = ir.node(name)
        if node["bias"] != "trainable" or node["added_by"] is not None or node["shares"]:
            continue
        s = settings_for(name, cfg, FIELDS)
        if s is None:
            continue
        k = float(s.get("k", 1.0))
        if draw:
            node["bias"] = _draw(node["size"], k, seed, name)
            require_finite(node["bias"], name, "k", k,
                           ("asymmetry", NAME) + s["_source"].get("k", ("k",)), error)
        else:
            node["bias"] = Deferred((node["size"],))
        node.setdefault("asymmetry", {})[NAME] = {"k": k}
        changed.append(name)
    return changed


def _draw(size: int, k: float, seed: int, layer: str):
    """U(-k, k) biases from the layer's own stream."""
    import torch

    from asymspec.seeding import generator

    u = torch.rand(size, generator=generator(seed, NAME, "bias", layer))
    return (2 * u - 1) * k
