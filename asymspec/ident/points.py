"""Recording points of the identifiability analyses, read from the IR: the input of every
trainable linear / conv layer.

A neuron of a dense layer computes ``w_i · x`` on that layer's input ``x`` (a conv's input
*patch*, ``C·k·k`` values), so the input distribution is what decides which functions the
neuron can realise (Bürgin et al. 2026, "effective function classes").  The points come from
``ir.dense_edges()`` alone — no per-architecture table — so MLPs, ResNets, GNNs and
transformers are all covered.  Layers that share another layer's weight are skipped (their
tensor is the owner's), and so are a pass's own frozen matrices (FiGLU's F: nothing trains).

:func:`record_moments` streams the inputs through float64 first and second moments, so memory
is ``O(d²)`` per layer whatever the data size; conv inputs are unfolded into patches (optionally
subsampled with an explicit generator).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asymspec.ir.graph import IRGraph


@dataclass(frozen=True)
class RecordingPoint:
    """The input of dense layer ``layer``, produced by IR node ``source``."""

    layer: str
    source: str
    op: str  # linear | conv2d
    in_dim: int  # d: entries of one weight row (C·k·k for a conv)
    out_dim: int  # neurons of the layer
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0


def recording_points(ir: IRGraph) -> list[RecordingPoint]:
    """Every dense layer with trainable weights, in topological order."""
    out = []
    for name in ir.topo_order():
        node = ir.node(name)
        if node["op"] not in ("linear", "conv2d") or node["shares"] or node["added_by"]:
            continue
        src, edge = ir.dense_edge(name)
        mask = edge["mask"]
        if mask is not None and not bool(mask.any()):
            continue  # fully frozen
        shape = edge["weight_shape"]
        in_dim = int(torch.Size(shape[1:]).numel())
        a = node["attrs"]
        out.append(RecordingPoint(name, src, node["op"], in_dim, int(shape[0]),
                                  int(a.get("kernel_size", 1)), int(a.get("stride", 1)),
                                  int(a.get("padding", 0))))
    return out


def as_rows(x: torch.Tensor, point: RecordingPoint) -> torch.Tensor:
    """A dense layer's input as ``(samples, d)`` rows: conv patches, or vectors / tokens."""
    if point.op == "conv2d":
        cols = F.unfold(x, point.kernel_size, padding=point.padding, stride=point.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


class Moments:
    """Streaming mean and centred second moment (float64, pairwise merge)."""

    def __init__(self, d: int) -> None:
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64)
        self.m2 = torch.zeros(d, d, dtype=torch.float64)

    def add(self, rows: torch.Tensor) -> None:
        if rows.shape[0] == 0:
            return
        rows = rows.detach().double().cpu()
        n2 = rows.shape[0]
        mean2 = rows.mean(0)
        c = rows - mean2
        n = self.n + n2
        delta = mean2 - self.mean
        self.m2 += c.T @ c + torch.outer(delta, delta) * (self.n * n2 / n)
        self.mean += delta * (n2 / n)
        self.n = n

    @property
    def cov(self) -> torch.Tensor:
        return self.m2 / max(self.n, 1)


def _run(model: nn.Module, batches: Iterable) -> None:
    with torch.no_grad():
        for batch in batches:
            model(*((batch,) if isinstance(batch, torch.Tensor) else batch))


def record_moments(model: nn.Module, points: list[RecordingPoint], batches: Iterable, *,
                   max_rows_per_batch: int | None = None,
                   gen: torch.Generator | None = None) -> dict[str, Moments]:
    """Moments of every point's input rows over ``batches`` (tuples of model inputs).

    The model runs in **eval mode** (BatchNorm uses its running statistics; the reference
    script forgot this) and its mode is restored afterwards.  ``max_rows_per_batch`` keeps a
    random subset of rows per batch (conv patches), drawn from ``gen``.
    """
    stats = {p.layer: Moments(p.in_dim) for p in points}
    handles = []
    for p in points:
        def hook(_m, args, p=p):
            rows = as_rows(args[0], p)
            if max_rows_per_batch is not None and rows.shape[0] > max_rows_per_batch:
                idx = torch.randperm(rows.shape[0], generator=gen)[:max_rows_per_batch]
                rows = rows[idx.to(rows.device)]
            stats[p.layer].add(rows)
        handles.append(model.get_submodule(p.layer).register_forward_pre_hook(hook))
    mode = model.training
    model.eval()
    try:
        _run(model, batches)
    finally:
        for h in handles:
            h.remove()
        model.train(mode)
    return stats


@dataclass
class LayerWeights:
    """A dense layer's rows as the analyses see them (float64, ``(n, d)``):

    ``effective`` the weight the forward pass uses, ``trainable`` the 0/1 indicator ``D`` of
    trainable entries, ``fixed`` the frozen part ``F`` (W-Asym's fixed values, syre's noise;
    zero for standard layers), so ``effective = D ⊙ W + F``.
    """

    effective: torch.Tensor
    trainable: torch.Tensor
    fixed: torch.Tensor

    def to(self, device: torch.device | str) -> LayerWeights:
        return LayerWeights(self.effective.to(device), self.trainable.to(device),
                            self.fixed.to(device))

    @property
    def trainable_fraction(self) -> float:
        return float(self.trainable.mean())


def layer_weights(model: nn.Module, point: RecordingPoint) -> LayerWeights:
    """Read effective weight, trainable mask and fixed part of ``point.layer`` from ``model``."""
    mod = model.get_submodule(point.layer)
    n = point.out_dim
    with torch.no_grad():
        w = mod.effective_weight().detach().double().cpu().reshape(n, -1)
        mask = getattr(mod, "weight_mask", None)
        if mask is None:
            d = torch.ones_like(w)
            fixed = torch.zeros_like(w)
        else:
            d = mask.detach().double().cpu().reshape(n, -1)
            fixed = (1 - d) * mod.weight_fixed.detach().double().cpu().reshape(n, -1)
        offset = getattr(mod, "weight_offset", None)
        if offset is not None:
            fixed = fixed + offset.detach().double().cpu().reshape(n, -1)
    return LayerWeights(w, d, fixed)
