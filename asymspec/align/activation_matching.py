"""Activation matching: correlate recorded activations of A and B, one assignment per group.

Forward hooks (``model.get_submodule(node)``) record, for every free group, the outputs of its
*representative* nodes: the group's activation (nonlinearity) nodes if it has any, else all its
nodes.  Samples are rows: vectors ``(B, C)``, images ``(B*H*W, C)`` (pixels as samples), tokens
``(B*T, C)``.  Statistics are accumulated in float64 over all batches, so memory is
``O(C^2)`` per group whatever the data size.  ``method="pearson"``: correlation, with
zero-variance (dead / constant) units scoring 0 against everything, never NaN;
``method="cross"``: the raw cross-correlation ``E[a b]``.  Head groups are solved jointly with
their partner (shared head order), exactly as in weight matching.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from asymspec.align.weight_matching import (
    AlignResult,
    check_states,
    group_units,
    inverse,
    lap,
    solve_heads,
)
from asymspec.errors import UserError
from asymspec.ir.graph import IRGraph
from asymspec.ir.permgroups import PermSpec, perm_spec
from asymspec.ir.permute import permute_state_dict

METHODS = ("pearson", "cross")


def as_samples(out: torch.Tensor, layout: str) -> torch.Tensor:
    """``(samples, channels)`` view of a node output."""
    if layout == "image" and out.dim() == 4:
        return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
    return out.reshape(-1, out.shape[-1])


def representative_nodes(ir: IRGraph, spec: PermSpec, group: str) -> list[str]:
    nodes = [n for n in spec.groups[group].nodes if ir.node(n)["op"] != "input"]
    acts = [n for n in nodes if ir.node(n)["op"] == "activation"]
    return acts or nodes


class _Stats:
    def __init__(self, n: int) -> None:
        self.count = 0
        self.sa = torch.zeros(n, dtype=torch.float64)
        self.sb = torch.zeros(n, dtype=torch.float64)
        self.saa = torch.zeros(n, dtype=torch.float64)
        self.sbb = torch.zeros(n, dtype=torch.float64)
        self.sab = torch.zeros(n, n, dtype=torch.float64)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.double(), b.double()
        self.count += a.shape[0]
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.saa += (a * a).sum(0)
        self.sbb += (b * b).sum(0)
        self.sab += a.T @ b

    def similarity(self, method: str) -> np.ndarray:
        m = max(self.count, 1)
        if method == "cross":
            return (self.sab / m).numpy()
        ma, mb = self.sa / m, self.sb / m
        cov = self.sab / m - torch.outer(ma, mb)
        va = (self.saa / m - ma * ma).clamp_min(0)
        vb = (self.sbb / m - mb * mb).clamp_min(0)
        sa, sb = va.sqrt(), vb.sqrt()
        scale = 1e-12 * max(float(self.saa.max() / m), float(self.sbb.max() / m), 1e-30)
        live_a = va > scale
        live_b = vb > scale
        denom = torch.outer(torch.where(live_a, sa, 1.0), torch.where(live_b, sb, 1.0))
        corr = cov / denom
        corr = torch.where(torch.outer(live_a, live_b), corr, torch.zeros_like(corr))
        return corr.clamp(-1, 1).numpy()


def _record(model: nn.Module, nodes: dict[str, str], layouts: dict[str, str],
            store: dict[str, list[torch.Tensor]]) -> list:
    handles = []
    for node in nodes:
        try:
            mod = model.get_submodule(node)
        except AttributeError:
            continue

        def hook(_m, _inp, out, node=node):
            if isinstance(out, torch.Tensor):
                store.setdefault(node, []).append(as_samples(out.detach(), layouts[node]))
        handles.append(mod.register_forward_hook(hook))
    return handles


def activation_matching(ir: IRGraph, model_a: nn.Module, model_b: nn.Module,
                        batches: Iterable[tuple[torch.Tensor, ...]], *,
                        method: str = "pearson") -> AlignResult:
    """Align ``model_b`` to ``model_a`` from their activations on ``batches`` (tuples of model
    inputs).  ``objective`` lists, per group, the mean similarity of the matched pairs."""
    if method not in METHODS:
        raise UserError(f"unknown similarity method {method!r}; use one of {', '.join(METHODS)}")
    state_b = model_b.state_dict()
    check_states(model_a.state_dict(), state_b)
    spec = perm_spec(ir, list(state_b))
    rep = {g.name: representative_nodes(ir, spec, g.name) for g in spec.free_groups}
    node_group = {n: g for g, ns in rep.items() for n in ns}
    layouts = {n: ir.node(n)["layout"] for n in node_group}
    stats = {g.name: _Stats(g.size) for g in spec.free_groups}
    seen: set[str] = set()
    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    rec_a: dict[str, list[torch.Tensor]] = {}
    rec_b: dict[str, list[torch.Tensor]] = {}
    handles = _record(model_a, node_group, layouts, rec_a)
    handles += _record(model_b, node_group, layouts, rec_b)
    try:
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, torch.Tensor):
                    batch = (batch,)
                rec_a.clear()
                rec_b.clear()
                model_a(*batch)
                model_b(*batch)
                for node, outs_a in rec_a.items():
                    for a, b in zip(outs_a, rec_b.get(node, [])):
                        stats[node_group[node]].add(a.cpu(), b.cpu())
                        seen.add(node_group[node])
    finally:
        for h in handles:
            h.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    inv = {g.name: np.arange(g.size) for g in spec.free_groups}
    objective: list[float] = []
    for unit in group_units(spec):
        if not all(g in seen for g in unit):
            objective.extend([float("nan")] * len(unit))  # no hookable node: left as is
            continue
        sims = [stats[g].similarity(method) for g in unit]
        if len(unit) == 1:
            new = [lap(sims[0])]
        else:
            new = solve_heads(sims, spec.groups[unit[0]].heads)
        for g, s, p in zip(unit, sims, new):
            inv[g] = p
            objective.append(float(s[np.arange(len(p)), p].mean()))
    perms = {g: inverse(p) for g, p in inv.items()}
    state = permute_state_dict(ir, state_b, spec.node_perms(ir, perms))
    return AlignResult(perms=perms, state=state, objective=objective)
