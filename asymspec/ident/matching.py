"""Activation matching at the recording points, and the activation-matching objective.

For every free permutation group (:func:`asymspec.ir.permgroups.perm_spec`), the similarity of
A's and B's units is measured where the next dense layers read them — the group's nodes that
are a recording point's source (an MLP's post-activation, a ResNet's stream and block ReLUs, a
GNN's aggregated sum), i.e. the reference's ``post_activation`` point, found from the IR.
Images contribute one sample per pixel, tokens one per token.

``similarity="pearson"`` (default) is Pearson's ρ, constant units scoring 0, and the
assignment **maximises** it.  ``"uncorrelatedness"`` is the reference's latest script
(``1 − |ρ|``, NaN → 1, maximised: the least-correlated pairing); it exists only to reproduce
that script's numbers and must not be used for alignment.

:func:`objective` gives, per group, the mean matched similarity for the optimal permutation,
the identity, and ``n_random`` seeded uniform permutations (mean ± std, ddof = 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from asymspec.align.activation_matching import ActivationStats, stat_view
from asymspec.align.weight_matching import group_units, inverse, lap, solve_heads
from asymspec.errors import UserError
from asymspec.ident.points import recording_points
from asymspec.ir.graph import IRGraph
from asymspec.ir.permgroups import PermSpec, perm_spec

SIMILARITIES = ("pearson", "uncorrelatedness")


@dataclass
class GroupSimilarity:
    group: str
    nodes: list[str]  # the recorded nodes (their similarities are averaged)
    sim: np.ndarray  # (n, n): rows A's units, columns B's units


def matching_nodes(ir: IRGraph, spec: PermSpec) -> dict[str, list[str]]:
    """Free group -> its nodes that feed a dense layer (recording-point sources)."""
    sources = {p.source for p in recording_points(ir)}
    out: dict[str, list[str]] = {}
    for g in spec.free_groups:
        nodes = [n for n in g.nodes if n in sources]
        if nodes:
            out[g.name] = nodes
    return out


def _hook_outputs(model: nn.Module, nodes: list[str], layouts: dict[str, str],
                  store: dict[str, torch.Tensor]) -> list:
    handles = []
    for n in nodes:
        def hook(_m, _inp, out, n=n):
            store[n] = stat_view(out.detach(), layouts[n]).cpu()
        handles.append(model.get_submodule(n).register_forward_hook(hook))
    return handles


def similarities(ir: IRGraph, model_a: nn.Module, model_b: nn.Module, batches: Iterable,
                 similarity: str = "pearson") -> dict[str, GroupSimilarity]:
    """Per free group, the unit-similarity matrix of A vs B at the recording points (both
    models in eval mode; modes restored)."""
    if similarity not in SIMILARITIES:
        raise UserError(f"unknown similarity {similarity!r}; use one of "
                        f"{', '.join(SIMILARITIES)}")
    spec = perm_spec(ir)
    groups = matching_nodes(ir, spec)
    nodes = [n for ns in groups.values() for n in ns]
    layouts = {n: ir.node(n)["layout"] for n in nodes}
    stats = {n: ActivationStats(ir.node(n)["size"]) for n in nodes}
    rec_a: dict[str, torch.Tensor] = {}
    rec_b: dict[str, torch.Tensor] = {}
    handles = _hook_outputs(model_a, nodes, layouts, rec_a)
    handles += _hook_outputs(model_b, nodes, layouts, rec_b)
    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
                model_a(*batch)
                model_b(*batch)
                for n in nodes:
                    stats[n].add(rec_a[n], rec_b[n])
    finally:
        for h in handles:
            h.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    out = {}
    for g, ns in groups.items():
        sim = np.mean([stats[n].similarity("pearson") for n in ns], axis=0)
        if similarity == "uncorrelatedness":
            sim = 1.0 - np.abs(sim)  # constant units: ρ = 0 -> 1, as the reference's NaN -> 1
        out[g] = GroupSimilarity(g, ns, sim)
    return out


def match(ir: IRGraph, sims: dict[str, GroupSimilarity]) -> dict[str, np.ndarray]:
    """Group permutations of B (``perm[u]`` = new position of B's unit ``u``) maximising the
    summed similarity; groups without a recording point keep the identity."""
    spec = perm_spec(ir)
    perms = spec.identity()
    for unit in group_units(spec):
        if not all(g in sims for g in unit):
            continue
        mats = [sims[g].sim for g in unit]
        gathers = [lap(mats[0])] if len(unit) == 1 else \
            solve_heads(mats, spec.groups[unit[0]].heads)
        for g, gather in zip(unit, gathers):
            perms[g] = inverse(gather)
    return perms


def objective(sim: np.ndarray, n_random: int = 100, seed: int = 0) -> dict[str, float]:
    """Mean matched similarity: optimal assignment, identity, and ``n_random`` seeded random
    permutations (mean, std with ddof = 1)."""
    n = sim.shape[0]
    col = lap(sim)
    rng = torch.Generator().manual_seed(int(seed))
    rand = [float(sim[np.arange(n), torch.randperm(n, generator=rng).numpy()].mean())
            for _ in range(n_random)]
    return {"optimal": float(sim[np.arange(n), col].mean()),
            "identity": float(np.diag(sim).mean()),
            "random_mean": float(np.mean(rand)) if rand else float("nan"),
            "random_std": float(np.std(rand, ddof=1)) if len(rand) > 1 else float("nan"),
            "size": n}
