"""Spatial pooling (modules and functions) and reductions over non-channel axes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers import heads
from asymspec.audit.lowering.handlers.arithmetic import _binary
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import (
    Feat,
    Packed,
    Raw,
    Split,
    Unsupported,
    _arg,
    _opaque_like,
)

# ---------------------------------------------------------------- pooling / reductions
_POOL_MODULES = {nn.MaxPool1d: "maxpool", nn.MaxPool2d: "maxpool", nn.AvgPool1d: "avgpool",
                 nn.AvgPool2d: "avgpool", nn.AdaptiveAvgPool1d: "avgpool",
                 nn.AdaptiveAvgPool2d: "avgpool", nn.AdaptiveMaxPool1d: "maxpool",
                 nn.AdaptiveMaxPool2d: "maxpool"}


def _m_pool(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    if isinstance(out, tuple):
        raise Unsupported("pooling with indices")
    x = L.feat(al[0], ar[0], 1)
    return L.elementwise(qual, _POOL_MODULES[type(m)], x, out)


for _cls in _POOL_MODULES:
    handles(_cls)(_m_pool)


_POOL_FUNCS = {F.max_pool1d: "maxpool", F.max_pool2d: "maxpool", F.avg_pool1d: "avgpool",
               F.avg_pool2d: "avgpool", F.adaptive_avg_pool1d: "avgpool",
               F.adaptive_avg_pool2d: "avgpool", F.adaptive_max_pool1d: "maxpool",
               F.adaptive_max_pool2d: "maxpool", torch.max_pool2d: "maxpool",
               torch.avg_pool1d: "avgpool", torch.max_pool1d: "maxpool"}


@handles(*_POOL_FUNCS)
def _f_pool(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    if isinstance(out, tuple):
        raise Unsupported("pooling with indices")
    x = L.feat(al[0], ar[0], 1)
    return L.elementwise(n.name, _POOL_FUNCS[n.target], x, out)


_REDUCE = {"mean": "global_avg_pool", "sum": "global_avg_pool", "amax": "global_max_pool",
           "amin": "global_max_pool", "max": "global_max_pool", "min": "global_max_pool",
           "logsumexp": "global_avg_pool", "std": "global_avg_pool", "var": "global_avg_pool",
           "norm": "global_avg_pool"}


def _reduce(L: Lowerer, n, al, kl, ar, kr, out, name: str):
    x = al[0]
    if isinstance(x, Packed):  # a packed projection or eager attention scores: never unpinned
        raise Unsupported(f"{name} of a packed projection / attention scores")
    if not isinstance(x, (Feat, Split)):
        return _opaque_like(out, n)
    nd = ar[0].dim()
    dim = _arg(ar[1:], kr, 0, "dim", None) if name != "norm" else kr.get("dim")
    if name == "norm" and len(ar) > 2:
        dim = ar[2]
    if isinstance(x, Split):  # per-head sums (attention logits), means over heads
        if dim is None or isinstance(out, tuple):
            raise Unsupported(f"{name} of split heads over all axes / with indices")
        dims = sorted(d % nd for d in ([dim] if isinstance(dim, int) else list(dim)))
        keep = bool(_arg(ar[1:], kr, 1, "keepdim", False)) if name != "norm" else False
        return heads.reduce(L, n.name, x, dims, keep, name, out)
    if isinstance(out, tuple):  # max(dim) -> (values, indices)
        if name not in ("max", "min"):
            raise Unsupported("reduction with several outputs")
    if dim is None:
        raise Unsupported("reduction over all axes")
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = sorted(d % nd for d in dims)
    keep = bool(_arg(ar[1:], kr, 1, "keepdim", False)) if name != "norm" else \
        bool(kr.get("keepdim", False))
    if x.cdim in dims:
        if name in ("max", "min") and isinstance(out, tuple):
            raise Unsupported("arg-reduction over channels")
        if not keep:
            raise Unsupported("reduction over the channel axis")
        ref = out[0] if isinstance(out, tuple) else out
        nm = L.add_node(n.name, "channel_reduce", [x.node], 1, ref, x.cdim, attrs={"fn": name})
        L.ir.add_map_edge(x.node, nm, np.full(1, -1))
        return Feat(nm, x.cdim)
    new = x.cdim if keep else x.cdim - sum(d < x.cdim for d in dims)
    ref = out[0] if isinstance(out, tuple) else out
    f = L.elementwise(n.name, _REDUCE[name], x, ref, cdim=new)
    if isinstance(out, tuple):
        return (f, Raw("index", n, n.name))
    return f


@handles(torch.mean, torch.sum, torch.amax, torch.amin, torch.max, torch.min,
                  torch.logsumexp, torch.std, torch.var, torch.norm)
def _f_reduce(c: Call):
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    if len(ar) >= 2 and isinstance(ar[1], torch.Tensor):
        return _binary(L, n, "binary", al, ar, out)
    return _reduce(L, n, al, kl, ar, kr, out, n.target.__name__)


@handles(*_REDUCE)
def _meth_reduce(c: Call):
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    if len(ar) >= 2 and isinstance(ar[1], torch.Tensor):
        return _binary(L, n, "binary", al, ar, out)
    return _reduce(L, n, al, kl, ar, kr, out, n.target)
