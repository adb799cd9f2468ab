"""syre asymmetry (Bürgin et al. 2026): a dense, fixed Gaussian offset on every weight.

The effective weight is ``W + kappa * N`` with N ~ N(0, 1) frozen; every entry of a selected
layer gets its own fixed value, so its edges all carry distinct colours for the verifier.
"""

from __future__ import annotations

from asymspec.ir.deferred import Deferred
from asymspec.ir.graph import IRGraph
from asymspec.passes.select import require_finite, settings_for

NAME = "syre"
FIELDS = ("kappa",)


def apply(ir: IRGraph, cfg: dict, seed: int, error, draw: bool = True) -> list[str]:
    """Give every selected weight its fixed noise (``draw=False``: a deferred placeholder)."""
    changed = []
    for _, dst, edge in list(ir.dense_edges()):
        if ir.node(dst)["shares"] or ir.node(dst)["added_by"] is not None:
            continue
        s = settings_for(dst, cfg, FIELDS)
        if s is None or float(s.get("kappa", 1.0)) == 0.0:
            continue
        kappa = float(s.get("kappa", 1.0))
        if draw:
            import torch

            from asymspec.seeding import generator

            noise = torch.randn(edge["weight_shape"],
                                generator=generator(seed, NAME, "noise", dst))
            edge["offset"] = noise * kappa
            require_finite(edge["offset"], dst, "kappa", kappa,
                           ("asymmetry", NAME) + s["_source"].get("kappa", ("kappa",)), error)
        else:
            edge["offset"] = Deferred(tuple(edge["weight_shape"]))
        edge["decided_by"].append(NAME)
        ir.node(dst).setdefault("asymmetry", {})[NAME] = {"kappa": kappa}
        changed.append(dst)
    return changed
