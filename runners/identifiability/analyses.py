"""The analyses of one identifiability unit each: functions of a :class:`Context` (the trained
members on disk, the data, the device) and the analysed variant / pair / member.

Every analysis reads the permutation spec and the recording points from the IR
(:mod:`asymspec.ident`), so it runs unchanged on MLP, ResNet, GNN and transformer specs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from asymspec import ident
from asymspec.align import interpolate, weight_matching
from asymspec.ident.barriers import path_barriers
from asymspec.ident.effective import (
    effective_state,
    parameter_distance,
    plain_ir,
    plain_model,
)
from asymspec.ident.matching import match, objective, similarities
from asymspec.ident.realization import offdiag_summary, ridge_costs, unit_gains
from asymspec.ir.permgroups import perm_spec
from asymspec.ir.permute import permute_state_dict
from asymspec.run.barrier import grid
from asymspec.run.evaluator import evaluate_graph_states, evaluate_states
from asymspec.run.tasks import GraphTask, adapt_input
from asymspec.seeding import stable_seed
from runners.identifiability.data import IdentData


@dataclass
class Context:
    data: dict[str, Any]  # the experiment's settings
    ident: IdentData
    device: str
    load: Callable[[str, int, int], torch.nn.Module]  # (variant, member, epoch) -> model
    budget: int  # bytes for batched evaluation
    lmc_epoch: int = 0  # resolved checkpoint epochs of each analysis
    am_epochs: tuple[int, ...] = ()
    realization_epoch: int = 0
    coherence_epochs: tuple[int, ...] = ()


def _record_inputs(ctx: Context, model: torch.nn.Module) -> list[tuple[torch.Tensor, ...]]:
    rec = ctx.data["recording"]
    return ctx.ident.inputs(rec["examples"], rec["batch_size"], ctx.device,
                            lambda x: adapt_input(model, x))


# ------------------------------------------------------------------------------------- LMC
def _path(ctx: Context, ir_plain, sa: dict, sb: dict, variant: str) -> dict[str, Any]:
    """Loss / accuracy along the straight path on every split, with barriers."""
    lmc = ctx.data["lmc"]
    ts = grid(lmc["points"])
    states = [interpolate(sa, sb, t) for t in ts]
    model = plain_model(ir_plain).to(ctx.device)
    out: dict[str, Any] = {"t": ts}
    splits = [s for s in lmc["splits"] if s in ctx.ident.splits]
    if isinstance(ctx.ident.train, GraphTask):
        t0 = ctx.ident.splits["train"]
        inputs = (t0.x.to(ctx.device), t0.edge_index.to(ctx.device))
        masks = [ctx.ident.splits[s].test_mask.to(ctx.device) for s in splits]
        curves = evaluate_graph_states(model, states, inputs, t0.y.to(ctx.device), masks)
    for k, split in enumerate(splits):
        if isinstance(ctx.ident.train, GraphTask):
            loss, acc = curves[k]
        else:
            batches = ctx.ident.batches(split, lmc["batch_size"], lmc["eval_examples"],
                                        ctx.device)
            loss, acc = evaluate_states(model, states, batches, True, variant,
                                        budget_bytes=ctx.budget)
        out[split] = {"loss": loss, "acc": acc, **path_barriers(ts, loss, acc)}
    return out


def _distance(ir_plain, sa: dict, sb: dict) -> dict[str, float]:
    """Distance of the endpoints' parameters as plain networks (all weights effective and
    trainable, as the reference's converted models), and distance / √(#parameters)."""
    params = dict(plain_model(ir_plain).named_parameters())
    d = parameter_distance(sa, sb, list(params))
    n = sum(p.numel() for p in params.values())
    return {"distance": d, "normalized_distance": d / max(n, 1) ** 0.5}


def lmc(ctx: Context, variant: str, pair: tuple[int, int], aligned: bool,
        seed: int) -> dict[str, Any]:
    """Unaligned (raw effective weights) or aligned LMC of one pair at ``lmc.epoch``."""
    epoch = ctx.lmc_epoch
    ma, mb = ctx.load(variant, pair[0], epoch), ctx.load(variant, pair[1], epoch)
    ir = ma.ir
    ir_p = plain_ir(ir)
    sa, sb = effective_state(ma), effective_state(mb)
    if not aligned:
        return {"epoch": epoch, "pair": list(pair), **_distance(ir_p, sa, sb),
                **_path(ctx, ir_p, sa, sb, variant)}
    out: dict[str, Any] = {"epoch": epoch, "pair": list(pair), "methods": {}}
    pa, pb = plain_model(ir_p, sa).to(ctx.device), plain_model(ir_p, sb).to(ctx.device)
    for method in ctx.data["lmc"]["methods"]:
        if method == "activation_matching":
            sims = similarities(ir_p, pa, pb, _record_inputs(ctx, pa),
                                ctx.data["lmc"]["similarity"])
            perms = match(ir_p, sims)
            spec = perm_spec(ir_p)
            sb_al = permute_state_dict(ir_p, sb, spec.node_perms(ir_p, perms))
            info = {"groups": {g: {"nodes": s.nodes, "objective":
                                   objective(s.sim, 0)["optimal"]} for g, s in sims.items()},
                    "similarity": ctx.data["lmc"]["similarity"]}
        else:
            res = weight_matching(ir_p, sa, sb, max_sweeps=ctx.data["lmc"]["max_sweeps"],
                                  seed=seed % (2 ** 31))
            sb_al = {k: v.detach().cpu() for k, v in res.state.items()}
            info = {"objective_trace": [float(o) for o in res.objective]}
        out["methods"][method] = {**info, **_distance(ir_p, sa, sb_al),
                                  **_path(ctx, ir_p, sa, sb_al, variant)}
    return out


# ------------------------------------------------------------------------------ AM objective
def am_objective(ctx: Context, variant: str, pair: tuple[int, int], seed: int
                 ) -> dict[str, Any]:
    """Per checkpoint epoch and group: optimal / identity / random matched correlation."""
    settings = ctx.data["am_objective"]
    out: dict[str, Any] = {"pair": list(pair), "epochs": {}}
    for epoch in ctx.am_epochs:
        ma, mb = ctx.load(variant, pair[0], epoch), ctx.load(variant, pair[1], epoch)
        sims = similarities(ma.ir, ma, mb, _record_inputs(ctx, ma), "pearson")
        out["epochs"][str(epoch)] = {
            g: {**objective(s.sim, settings["random_permutations"],
                            stable_seed(seed, epoch, g) % (2 ** 63)), "nodes": s.nodes}
            for g, s in sims.items()}
    return out


# ------------------------------------------------------------------------- realization cost
def realization(ctx: Context, variant: str, member: int) -> dict[str, Any]:
    """Mahalanobis (and optionally ridge) realization / swap costs of every dense layer."""
    rs = ctx.data["realization"]
    epoch = ctx.realization_epoch
    model = ctx.load(variant, member, epoch)
    ir = model.ir
    points = ident.recording_points(ir)
    gen = torch.Generator().manual_seed(0)
    stats = ident.record_moments(model, points, _record_inputs(ctx, model),
                                 max_rows_per_batch=ctx.data["recording"]["max_rows_per_batch"],
                                 gen=gen)
    layers: dict[str, Any] = {}
    for p in points:
        basis = ident.pca_basis(stats[p.layer].cov.to(ctx.device), rs["explained_variance"])
        lw = ident.layer_weights(model, p)
        m = ident.realization_costs(basis.U, lw)
        basis.U = basis.U.cpu()
        T = ident.swap_costs(m)
        v = lw.fixed @ basis.U
        vd = torch.cdist(v, v)
        h = min(rs["heatmap_neurons"], p.out_dim)
        entry = {"source": p.source, "op": p.op, "d": basis.d, "k": basis.k,
                 "explained": basis.explained, "nu": ident.coherence(basis.U),
                 "trainable_fraction": lw.trainable_fraction, "neurons": p.out_dim,
                 "m_diag_mean": float(torch.diagonal(m).mean()),
                 "m_offdiag": offdiag_summary(m), "T": offdiag_summary(T),
                 "v_dist": offdiag_summary(vd),
                 "heatmap": [[round(float(x), 6) for x in row] for row in T[:h, :h]]}
        if rs["ridge"]["enabled"]:
            gains, norm = unit_gains(model, ir, p.layer, rs["ridge"]["norm"])
            n = min(rs["ridge"]["neurons"], p.out_dim)
            entry["ridge"] = {"norm": norm, "neurons": n, "betas": {}}
            for beta in rs["ridge"]["betas"]:
                r = ridge_costs(stats[p.layer].cov, lw, gains, beta, range(n))
                entry["ridge"]["betas"][str(beta)] = {"T": offdiag_summary(ident.swap_costs(r)),
                                                      "r_diag_mean":
                                                      float(torch.diagonal(r).mean())}
        layers[p.layer] = entry
    return {"member": member, "epoch": epoch, "layers": layers}


# ------------------------------------------------------------------------------- coherence
def coherence(ctx: Context, variant: str, member: int) -> dict[str, Any]:
    """Coherence ν(U), anisotropy and the bound per layer at every checkpoint epoch."""
    cs = ctx.data["coherence"]
    out: dict[str, Any] = {"member": member, "epochs": {}}
    for epoch in ctx.coherence_epochs:
        model = ctx.load(variant, member, epoch)
        points = ident.recording_points(model.ir)
        stats = ident.record_moments(
            model, points, _record_inputs(ctx, model),
            max_rows_per_batch=ctx.data["recording"]["max_rows_per_batch"],
            gen=torch.Generator().manual_seed(0))
        per_layer = {}
        for p in points:
            basis = ident.pca_basis(stats[p.layer].cov.to(ctx.device),
                                    cs["explained_variance"])
            lw = ident.layer_weights(model, p)
            per_layer[p.layer] = {**ident.coherence_report(basis.U, lw.trainable, cs["deltas"]),
                                  "explained": basis.explained}
        out["epochs"][str(epoch)] = per_layer
    return out
