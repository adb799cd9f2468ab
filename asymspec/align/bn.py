"""Statistics repair after interpolation: BatchNorm reset and REPAIR (Jordan et al. 2023).

:func:`reset_bn_stats` recomputes every BatchNorm's running statistics as the plain average over
the given batches (``momentum=None``), as after interpolating two networks.

:func:`repair` rescales / shifts the channels of the interpolated network so each corrected
layer's per-channel mean and standard deviation become ``(1 - alpha)`` times A's plus ``alpha``
times B's.  Corrected layers (IR nodes, not module types): normalisation layers with affine
parameters (BatchNorm, LayerNorm, GroupNorm(1, C)) — the correction folds exactly into their
``weight`` / ``bias`` — and hidden linear / conv layers with a trainable bias and no frozen
weight entries that feed no normalisation.  Statistics use pixels / tokens as samples; layers are
corrected in topological order, each measured after the earlier corrections (one pass over
``batches`` per corrected layer, plus one for each endpoint).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from asymspec.align.activation_matching import as_samples
from asymspec.errors import UserError
from asymspec.ir.ops import category


def _as_tuple(batch) -> tuple:
    return (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)


def reset_bn_stats(model: nn.Module, batches: Iterable) -> None:
    """Recompute the running statistics of every BatchNorm of ``model`` on ``batches`` (tuples
    of inputs): cumulative averages of the batch statistics (``momentum=None``).  The model's
    training flag and the momenta are restored afterwards."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return
    saved = [(m, m.momentum) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for batch in batches:
                model(*_as_tuple(batch))
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was_training)


def _targets(model: nn.Module) -> list[str]:
    ir = getattr(model, "ir", None)
    if ir is None:
        raise UserError("repair needs a model emitted from the IR (asymspec.nn.emit / build)")
    out = []
    for name in ir.topo_order():
        node = ir.node(name)
        if node["role"] in ("input", "output") or node["size"] == 0:
            continue
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        w = getattr(mod, "weight", None)
        b = getattr(mod, "bias", None)
        if category(node["op"]) == "norm":
            if isinstance(w, nn.Parameter) and isinstance(b, nn.Parameter):
                out.append(name)
        elif category(node["op"]) == "dense" and isinstance(b, nn.Parameter) \
                and isinstance(w, nn.Parameter):
            _, e = ir.dense_edge(name)
            plain = e["mask"] is None and e["fixed"] is None and e["offset"] is None
            feeds_norm = any(category(ir.node(c)["op"]) == "norm" for c in ir.consumers(name))
            if plain and not feeds_norm:
                out.append(name)
    return out


def _channel_stats(model: nn.Module, names: list[str], batches: list[tuple]
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    ir = model.ir
    acc: dict[str, list] = {n: [0, 0.0, 0.0] for n in names}

    def make_hook(name: str):
        def hook(_m, _inp, out):
            x = as_samples(out.detach(), ir.node(name)["layout"]).double()
            acc[name][0] += x.shape[0]
            acc[name][1] = acc[name][1] + x.sum(0)
            acc[name][2] = acc[name][2] + (x * x).sum(0)
        return hook

    handles = [model.get_submodule(n).register_forward_hook(make_hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(*batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for n, (c, s, ss) in acc.items():
        mean = s / max(c, 1)
        var = (ss / max(c, 1) - mean * mean).clamp_min(0)
        out[n] = (mean, var.sqrt())
    return out


def repair(model_interp: nn.Module, model_a: nn.Module, model_b: nn.Module, batches: Iterable,
           alpha: float) -> None:
    """REPAIR ``model_interp`` (the interpolation at ``alpha`` of A and B) in place."""
    batches = [_as_tuple(b) for b in batches]
    names = _targets(model_interp)
    if not names:
        return
    stats_a = _channel_stats(model_a, names, batches)
    stats_b = _channel_stats(model_b, names, batches)
    for name in names:
        mean_i, std_i = _channel_stats(model_interp, [name], batches)[name]
        mean_t = (1 - alpha) * stats_a[name][0] + alpha * stats_b[name][0]
        std_t = (1 - alpha) * stats_a[name][1] + alpha * stats_b[name][1]
        dead = std_i <= 1e-12 * max(float(std_i.max()), 1e-30)
        scale = torch.where(dead, torch.ones_like(std_i), std_t / std_i.clamp_min(1e-30))
        shift = mean_t - scale * mean_i
        mod = model_interp.get_submodule(name)
        with torch.no_grad():
            w, b = mod.weight, mod.bias
            view = (-1,) + (1,) * (w.dim() - 1)
            w.mul_(scale.to(w.dtype).view(view))
            b.mul_(scale.to(b.dtype)).add_(shift.to(b.dtype))
