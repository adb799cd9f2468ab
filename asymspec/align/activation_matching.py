"""Activation matching: correlate recorded activations of A and B, one assignment per group.

Forward hooks (``model.get_submodule(node)``) record, for every free group, the outputs of its
nodes (a layer's linear output, norm, nonlinearity; a residual stream's every sum): each node's
similarity matrix is computed on its own and the group's is their mean, so a node whose units
are all dead (a ReLU on a badly scaled input) dilutes but never misleads.  Samples are rows:
vectors ``(B, C)``, images ``(B*H*W, C)`` (pixels as samples), tokens ``(B*T, C)``.
Statistics are accumulated in float64 over all batches, so memory is ``O(C^2)`` per node
whatever the data size.  ``method="pearson"``: correlation, with
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


def stat_view(out: torch.Tensor, layout: str) -> torch.Tensor:
    """A node output as :meth:`ActivationStats.add` takes it: images (``layout == "image"``)
    as a free ``(B, C, H*W)`` view (pixels are samples, no transposing copy), anything else as
    ``(samples, C)``."""
    if layout == "image" and out.dim() == 4:
        return out.reshape(out.shape[0], out.shape[1], -1)
    return out.reshape(-1, out.shape[-1])


def representative_nodes(ir: IRGraph, spec: PermSpec, group: str) -> list[str]:
    return [n for n in spec.groups[group].nodes if ir.node(n)["op"] != "input"]


class ActivationStats:
    """Streaming similarity of two models' activations at one node, ``C`` units each.

    Keeps the means and centred co-moments (Chan et al.'s pairwise merge): the per-batch
    product runs in float32 on centred values, the merge in float64, so large means never
    cancel the covariance away, and memory is ``O(C^2)`` whatever the data size.  Feed it
    :func:`stat_view` of each batch's outputs with :meth:`add`, then read
    :meth:`similarity`.  Used by activation matching here and by the identifiability
    matching (:mod:`asymspec.ident.matching`)."""

    def __init__(self, n: int) -> None:
        self.count = 0
        f64 = torch.float64
        self.ma = torch.zeros(n, dtype=f64)
        self.mb = torch.zeros(n, dtype=f64)
        self.vaa = torch.zeros(n, dtype=f64)
        self.vbb = torch.zeros(n, dtype=f64)
        self.mab = torch.zeros(n, n, dtype=f64)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """``a``, ``b``: ``(samples, C)``, or ``(B, C, S)`` with ``S`` samples per item (image
        pixels, no transposing copy)."""
        if a.shape[0] == 0:
            return
        a, b = a.float(), b.float()
        if a.dim() == 3:
            n2 = a.shape[0] * a.shape[2]
            # float32 reductions (float64 ones over strided axes are several times slower);
            # centring first keeps them accurate
            ma2 = a.sum(2).sum(0).double() / n2
            mb2 = b.sum(2).sum(0).double() / n2
            ac = a - ma2.float()[None, :, None]
            bc = b - mb2.float()[None, :, None]
            mab2 = torch.bmm(ac, bc.transpose(1, 2)).sum(0).double()
            vaa2 = ac.square().sum(2).sum(0).double()
            vbb2 = bc.square().sum(2).sum(0).double()
        else:
            n2 = a.shape[0]
            ma2 = a.mean(0, dtype=torch.float64)
            mb2 = b.mean(0, dtype=torch.float64)
            ac = a - ma2.float()
            bc = b - mb2.float()
            mab2 = (ac.T @ bc).double()
            vaa2 = (ac * ac).sum(0, dtype=torch.float64)
            vbb2 = (bc * bc).sum(0, dtype=torch.float64)
        n1 = self.count
        n = n1 + n2
        da, db = ma2 - self.ma, mb2 - self.mb
        w = n1 * n2 / n
        self.mab += mab2 + torch.outer(da, db) * w
        self.vaa += vaa2 + da * da * w
        self.vbb += vbb2 + db * db * w
        self.ma += da * (n2 / n)
        self.mb += db * (n2 / n)
        self.count = n

    def similarity(self, method: str) -> np.ndarray:
        """``(C, C)`` similarity of A's units (rows) to B's (columns): ``"pearson"``
        correlation (dead or constant units score 0, never NaN) or ``"cross"``, the raw
        ``E[a b]``."""
        m = max(self.count, 1)
        cov = self.mab / m
        if method == "cross":
            return (cov + torch.outer(self.ma, self.mb)).numpy()
        va, vb = self.vaa / m, self.vbb / m
        live_a = va > 1e-10 * (self.ma * self.ma + va) + 1e-30
        live_b = vb > 1e-10 * (self.mb * self.mb + vb) + 1e-30
        denom = torch.outer(torch.where(live_a, va, 1.0).sqrt(),
                            torch.where(live_b, vb, 1.0).sqrt())
        corr = torch.where(torch.outer(live_a, live_b), cov / denom, torch.zeros_like(cov))
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
                store.setdefault(node, []).append(stat_view(out.detach(), layouts[node]))
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
    stats = {n: ActivationStats(spec.groups[g].size) for n, g in node_group.items()}
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
                        stats[node].add(a.cpu(), b.cpu())
                        seen.add(node)
    finally:
        for h in handles:
            h.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    inv = {g.name: np.arange(g.size) for g in spec.free_groups}
    objective: list[float] = []
    for unit in group_units(spec):
        if not all(any(n in seen for n in rep[g]) for g in unit):
            objective.extend([float("nan")] * len(unit))  # no hookable node: left as is
            continue
        sims = [np.mean([stats[n].similarity(method) for n in rep[g] if n in seen], axis=0)
                for g in unit]
        if spec.groups[unit[0]].kind != "heads":
            new = [lap(sims[0])]
        else:
            new = solve_heads(sims, spec.groups[unit[0]].heads)
        for g, s, p in zip(unit, sims, new):
            inv[g] = p
            objective.append(float(s[np.arange(len(p)), p].mean()))
    perms = {g: inverse(p) for g, p in inv.items()}
    state = permute_state_dict(ir, state_b, spec.node_perms(ir, perms))
    return AlignResult(perms=perms, state=state, objective=objective)
