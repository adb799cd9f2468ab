"""Continuous parameter symmetries the permutation graph cannot see, reported by rules.

For each layer with a weight (linear / conv), look at what consumes its units:

* a positively homogeneous activation (ReLU, LeakyReLU) followed by weighted layers: scaling a
  unit's incoming weights and bias by a > 0 and its outgoing weights by 1/a (*rescale*);
* an odd activation (tanh, identity): negating a unit's incoming and outgoing weights (*sign*);
* a BatchNorm: scaling a unit's incoming weights and bias by a > 0 (*bn-scale*); a LayerNorm /
  GroupNorm(1, C): scaling all units' incoming weights and biases together (*ln-scale*);
* FiGLU (σ-Asym): no permutation or diagonal equivariance (Lim et al. Prop. 2) — *proven* only
  after checking the proposition's hypotheses on the F this FiGLU actually uses (the gate's
  fixed weight, as the forward pass sees it): the form ``sigmoid(F x) * x`` with the same ``x``,
  F entirely frozen, square, without bias, with no zero entry and no permutation symmetry
  (:func:`asymspec.passes.sigma_asym.prop2_problem`).  If any fails the claim is downgraded to
  status *unknown* (certainty *unproven*) naming the failed hypothesis — never "proven".

Frozen nonzero entries in a row (W-Asym with kappa > 0) or a fixed noise offset (syre) pin that
row's scale and sign: the symmetry is then reported *broken* — *believed*, not proven, as in the
paper (§4: "we believe that they do"), because a rescaling could in principle combine with
other changes.  Symmetries that are present are *proven* (they are explicit reparametrisations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from asymspec.ir.graph import IRGraph
from asymspec.ir.ops import OPS, category

_HOMOGENEOUS = ("relu", "leaky_relu")
_ODD = ("tanh", "identity")


@dataclass
class ContinuousSymmetry:
    layer: str
    kind: str  # rescale | sign | bn-scale | ln-scale | none-figlu
    status: str  # present | broken | absent | unknown
    certainty: str  # proven | believed | unproven
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _rows_pinned(edge: dict) -> bool:
    """True if every row has a frozen nonzero entry or a fixed noise offset."""
    if edge["offset"] is not None:
        return bool((edge["offset"].flatten(1) != 0).any(dim=1).all())
    if edge["mask"] is None:
        return False
    frozen_nonzero = (~edge["mask"]) & (edge["fixed"] != 0)
    return bool(frozen_nonzero.flatten(1).any(dim=1).all())


def _any_pinned(edge: dict) -> bool:
    if edge["offset"] is not None:
        return True
    return edge["mask"] is not None and bool(((~edge["mask"]) & (edge["fixed"] != 0)).any())


def _downstream_dense(ir: IRGraph, start: str, odd: bool = False) -> list[dict] | None:
    """Dense edges reading ``start``'s units through pass-through ops (pooling, flatten, token
    selection: category ``passthrough`` in :mod:`asymspec.ir.ops`); None if something else
    (a residual add, attention, a norm, ...) reads them.  ``odd``: a sign flip must pass too,
    so only ops linear in each unit qualify (max pooling is not odd)."""
    out = []
    for c in ir.consumers(start):
        node = ir.node(c)
        e = ir.edge(start, c)
        if e["kind"] == "dense":
            out.append(e)
        elif category(node["op"]) == "passthrough" and (OPS[node["op"]].linear or not odd):
            sub = _downstream_dense(ir, c, odd)
            if sub is None:
                return None
            out.extend(sub)
        else:
            return None
    return out


def continuous_symmetries(ir: IRGraph) -> list[ContinuousSymmetry]:
    found: list[ContinuousSymmetry] = []
    for name in ir.topo_order():
        node = ir.node(name)
        if category(node["op"]) != "dense" or node["added_by"] or node["role"] == "output":
            continue
        _, edge = ir.dense_edge(name)
        pinned = _rows_pinned(edge) or isinstance(node["bias"], torch.Tensor)
        consumers = ir.consumers(name)
        figlu = [c for c in consumers
                 if ir.node(c)["op"] == "mul" and ir.node(c)["attrs"].get("fn") == "figlu"]
        if figlu:
            found.append(_figlu_claim(ir, name, figlu))
            continue
        if len(consumers) != 1:
            continue
        c = ir.node(consumers[0])
        if c["op"] == "batchnorm":
            found.append(_rule(name, "bn-scale", pinned, "BatchNorm after the layer"))
        elif c["op"] in ("layernorm",) or (c["op"] == "groupnorm" and c["attrs"]["groups"] == 1):
            joint_pinned = _any_pinned(edge) or isinstance(node["bias"], torch.Tensor)
            found.append(_rule(name, "ln-scale", joint_pinned,
                               "LayerNorm after the layer (joint scale of all units)"))
        elif c["op"] == "activation" and c["attrs"]["fn"] in _HOMOGENEOUS + _ODD:
            down = _downstream_dense(ir, consumers[0], odd=c["attrs"]["fn"] not in _HOMOGENEOUS)
            if not down:
                continue
            out_pinned = any(_any_pinned(e) for e in down)
            kind = "rescale" if c["attrs"]["fn"] in _HOMOGENEOUS else "sign"
            found.append(_rule(name, kind, pinned or out_pinned,
                               f"{c['attrs']['fn']} between weighted layers"))
    return found


def _rule(name: str, kind: str, pinned: bool, why: str) -> ContinuousSymmetry:
    if pinned:
        return ContinuousSymmetry(name, kind, "broken", "believed",
                                  why + "; frozen nonzero entries / noise fix each unit's scale")
    return ContinuousSymmetry(name, kind, "present", "proven", why)


def _figlu_claim(ir: IRGraph, layer: str, muls: list[str]) -> ContinuousSymmetry:
    """``absent (proven)`` when Prop. 2's hypotheses hold for every FiGLU reading ``layer``,
    else ``unknown (unproven)`` naming the first that fails."""
    for mul in muls:
        problem = figlu_problem(ir, mul)
        if problem is not None:
            return ContinuousSymmetry(
                layer, "none-figlu", "unknown", "unproven",
                f"FiGLU '{mul}': Prop. 2 does not apply ({problem}); its permutation and "
                "diagonal equivariances are not ruled out")
    return ContinuousSymmetry(
        layer, "none-figlu", "absent", "proven",
        "FiGLU has no permutation or diagonal equivariance (Prop. 2; its hypotheses — F frozen, "
        "square, no zero entry, no permutation symmetry — checked on the F used)")


def figlu_problem(ir: IRGraph, mul: str) -> str | None:
    """Why Lim et al.'s Prop. 2 does not cover the FiGLU node ``mul``, or None when it does.

    Reads the IR as the forward pass does: ``mul = x * gate``, ``gate = sigmoid(g)`` through an
    identity map, ``g = F x`` a bias-free linear / 1x1 convolution reading the same ``x``
    whose weight is entirely frozen (its effective weight, fixed values plus any noise offset,
    is F); then F itself must satisfy
    :func:`~asymspec.passes.sigma_asym.prop2_problem` (square, finite, no zero entry, no
    permutation symmetry).
    """
    from asymspec.passes.sigma_asym import prop2_problem

    node = ir.node(mul)
    if len(node["inputs"]) != 2:
        return "not of the form x * sigmoid(F x)"
    x, gate = node["inputs"]
    g = ir.node(gate)
    if g["op"] != "activation" or g["attrs"].get("fn") != "sigmoid" or len(g["inputs"]) != 1:
        return f"its gate '{gate}' is not a sigmoid"
    (f_node,) = g["inputs"]
    for u, v in ((f_node, gate), (gate, mul)):
        e = ir.edge(u, v)
        if e["kind"] != "map" or not np.array_equal(e["index"], np.arange(len(e["index"]))):
            return f"the gate is not read unit by unit ({u} -> {v})"
    f = ir.node(f_node)
    dense = ir.dense_edge(f_node) if category(f["op"]) == "dense" else None
    if dense is None or dense[0] != x:
        return f"'{f_node}' is not a linear map of the gated input '{x}'"
    _, e = dense
    if f["bias"] is not None:
        return f"'{f_node}' has a bias (Prop. 2 is about sigmoid(F x) * x)"
    attrs = f["attrs"]
    if f["op"] == "conv2d" and (attrs.get("stride", 1) not in (1, (1, 1), [1, 1]) or
                                attrs.get("padding", 0) not in (0, (0, 0), [0, 0])):
        return f"'{f_node}' is not a pointwise (1x1, stride 1, unpadded) convolution"
    if e["mask"] is None or bool(e["mask"].any()):
        return f"F ('{f_node}') is not entirely frozen: training would change it"
    F = ir.effective_weight(x, f_node, torch.zeros(e["weight_shape"]))
    problem = prop2_problem(F)
    return None if problem is None else problem[1]
