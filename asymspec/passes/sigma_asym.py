"""σ-Asymmetry (Lim et al. 2024, §4.2): replace activations by FiGLU, σ(x) = sigmoid(Fx) ⊙ x.

``F`` is a frozen random matrix, N(0, f_std^2) (or f_std^2 / d with ``scale: inv_sqrt_dim``);
for image tensors it is a 1x1 convolution.  In the IR the activation node ``A`` reading ``X``
becomes ``A = X * A_gate`` with ``A_gate = sigmoid(A_F)`` and ``A_F`` a linear / 1x1-conv node
whose weight edge is entirely fixed to ``F`` — so the verifier sees F's values as edge colours
(Proposition 2: with distinct nonzero entries no permutation survives).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from asymspec.ir.deferred import Deferred
from asymspec.ir.graph import IRGraph
from asymspec.passes.select import settings_for

if TYPE_CHECKING:
    import torch

NAME = "sigma_asym"
FIELDS = ("f_std", "scale")


def apply(ir: IRGraph, cfg: dict, seed: int, error, draw: bool = True) -> list[str]:
    """Replace the selected activations by FiGLU (``draw=False``: F left a deferred
    placeholder, the added nodes and edges as with ``draw=True``)."""
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
        std = given = float(s.get("f_std", 1.0))
        if s.get("scale", "absolute") == "inv_sqrt_dim":
            std /= math.sqrt(d)
        image = node["layout"] == "image"
        shape = (d, d, 1, 1) if image else (d, d)
        if draw:
            import torch

            from asymspec.seeding import generator

            F = torch.randn(shape, generator=generator(seed, NAME, "F", name)) * std
            _require_distinct_nonzero(F, name, given, ("asymmetry", NAME) + s["_source"].get(
                "f_std", ("f_std",)), error)
            mask = torch.zeros(shape, dtype=torch.bool)
        else:
            F, mask = Deferred(shape), Deferred(shape, "mask", 0)
        f_name, g_name = f"{name}_F", f"{name}_gate"
        op = "conv2d" if image else "linear"
        attrs = ({"kernel_size": 1, "stride": 1, "padding": 0, "in_channels": d} if image
                 else {"in_features": d})
        ir.add_node(f_name, op, [x], d, node["shape"], node["layout"], role="gate",
                    attrs=attrs, source=node["source"], added_by=NAME)
        ir.add_dense_edge(x, f_name, shape)
        e = ir.edge(x, f_name)
        e["mask"] = mask
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


def prop2_problem(F: torch.Tensor) -> tuple[str, str] | None:
    """Why Proposition 2 of Lim et al. (App. B.2.1) does not certify ``sigmoid(F x) * x``, or None.

    The proposition (its Props. 4 and 5) holds for any square F with *no zero entry* (no
    diagonal equivariance) and *no permutation symmetry* (``P2 F P1 = F`` only for ``P1 = P2 =
    I``: no permutation equivariance).  The paper's "distinct entries" is only a sufficient
    condition for the latter and fails in float32 for large layers (birthday collisions), so
    the test used is another sufficient one: the rows of F are pairwise distinct as multisets
    of values (so ``P2 = I``), and so are the columns (so ``P1 = I``).  F may be a 1x1
    convolution's ``(d, d, 1, 1)`` weight.

    Returns ``(code, text)``: code ``shape`` | ``finite`` | ``zero`` | ``rows`` | ``columns``.
    """
    import torch

    d = F.shape[0]
    if F.dim() < 2 or F.shape[1] != d or any(int(k) != 1 for k in F.shape[2:]):
        return "shape", f"F has shape {tuple(F.shape)}, not a square matrix (or 1x1 kernel)"
    M = F.reshape(d, d)
    if not bool(torch.isfinite(M).all()):
        return "finite", "F has infinite or NaN entries"
    zeros = int((M == 0).sum())
    if zeros:
        return "zero", f"F has {zeros} zero entr{'y' if zeros == 1 else 'ies'}"
    for axis, what in ((1, "rows"), (0, "columns")):
        lines = torch.sort(M, dim=axis).values
        lines = lines if axis == 1 else lines.T
        if torch.unique(lines, dim=0).shape[0] != d:
            return what, f"two {what} of F hold the same values"
    return None


def _require_distinct_nonzero(F: torch.Tensor, layer: str, std: float, where: tuple,
                              error) -> None:
    """Refuse a drawn F that fails :func:`prop2_problem`: the verifier's "FiGLU: no continuous
    symmetry (proven)" rests on it; with ``f_std: 0`` FiGLU is x/2 and every invertible map of
    the layer is a symmetry."""
    problem = prop2_problem(F)
    if problem is None:
        return
    code, text = problem
    if code == "finite":
        raise error(where, f"layer '{layer}': f_std={std:g} overflows float32 (F has infinite "
                    "entries); use a smaller f_std")
    if code == "zero":
        raise error(where, f"layer '{layer}': {text} (f_std={std:g}); FiGLU's asymmetry (Lim et "
                    "al. Prop. 2) needs F without zero entries: f_std must be positive and "
                    "large enough for float32")
    raise error(where, f"layer '{layer}': {text} (f_std={std:g}), so asymmetry (Lim et al. "
                "Prop. 2) cannot be certified; change f_std or asymmetry.seed")
