"""Dense layers: ``nn.Linear`` / PyG ``Linear``, ``nn.Conv1d`` / ``nn.Conv2d`` (grouped and
depthwise), ``F.linear``, ``F.conv1d`` / ``F.conv2d`` and matrix products with a parameter."""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import Feat, Packed, Raw, Split, Unsupported, _arg, _qual_key
from asymspec.audit.params import (
    EffectiveWeight,
    plain_weight,
)
from asymspec.ir.units import float_bits


# ---------------------------------------------------------------- linear / conv (modules)
@handles(nn.Linear)
def _m_linear(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], -1)
    eff = plain_weight(_qual_key(qual, "weight"), m.weight)
    bias = "trainable" if m.bias is not None else None
    return L.dense(qual, "linear", x, eff, m.out_features, out, out.dim() - 1, bias=bias,
                   bias_key=_qual_key(qual, "bias"))


def _pyg_linear_cls():
    try:
        from torch_geometric.nn import Linear as PygLinear
    except Exception:  # pragma: no cover
        return None
    return PygLinear


if _pyg_linear_cls() is not None:
    handles(_pyg_linear_cls())(_m_linear)


def _conv(L: Lowerer, base: str, x_low, x_real, eff: EffectiveWeight, bias, bias_key,
          groups: int, out: torch.Tensor, attrs: dict) -> Feat:
    x = L.feat(x_low, x_real, 1)
    in_size = L.size(x)
    out_size = eff.shape[0]
    nk = len(eff.shape) - 2
    if groups == 1:
        return L.dense(base, "conv2d", x, eff, out_size, out, 1, bias=bias, attrs=attrs,
                       bias_key=bias_key)
    if groups == in_size and eff.shape[1] == 1 and not eff.transposed:
        # depthwise: output channel j reads input channel j // multiplier only
        mult = out_size // in_size
        name = L.add_node(base, "depthwise_conv", [x.node], out_size, out, 1,
                          attrs=dict(attrs, groups=groups), bias=bias)
        L.ir.add_map_edge(x.node, name, np.arange(out_size) // mult)
        if eff.mask is not None or eff.offset is not None:
            parts = []
            if eff.mask is not None:
                frozen = (~eff.mask).reshape(out_size, -1)
                parts += [frozen.numpy().astype(np.int64),
                          float_bits(eff.fixed).reshape(out_size, -1) * frozen.numpy()]
            if eff.offset is not None:
                parts.append(float_bits(eff.offset).reshape(out_size, -1))
            _, colour = np.unique(np.concatenate(parts, axis=1), axis=0, return_inverse=True)
            L.ir.node(name)["unit_colour"] = colour.reshape(-1).astype(np.int64)
        axes = (name,) + (None,) * (nk + 1)
        if eff.key:
            L.record(eff.key, axes)
        for k in eff.buffers:
            L.record(k, axes, constant=True)
        if bias == "trainable" and bias_key:
            L.record(bias_key, (name,))
        return Feat(name, 1)
    if eff.mask is not None or eff.offset is not None or eff.transposed:
        raise Unsupported(f"masked grouped convolution (groups={groups})")
    # grouped: a complete trainable block plus group tags.  A source node with one unit per
    # group feeds a tag node beside the input and one beside the output (tag unit i reads
    # group i // group_width and its own channel), so an automorphism must permute input and
    # output channels in whole groups, with the same group permutation on both sides, and is
    # free within groups: exactly the grouped convolution's symmetries.
    cin, cout = in_size // groups, out_size // groups
    dense = EffectiveWeight(eff.key, (out_size, in_size), None, None, None, False, eff.buffers)
    f = L.dense(base, "conv2d", x, dense, out_size, out, 1, bias=bias,
                attrs=dict(attrs, groups=groups), bias_key=bias_key,
                weight_axes=lambda n, s: (n,) + (None,) * (nk + 1))
    probe = torch.zeros(1, groups)
    grp = L.add_node(_qual_key(f.node, "groups"), "group_tag", [], groups, probe, 1)
    for tag, src, width in (("in_groups", x.node, cin), ("out_groups", f.node, cout)):
        size = L.size(Feat(src, 1))
        t = L.add_node(_qual_key(f.node, tag), "group_tag", [src, grp], size,
                       torch.zeros(1, size), 1)
        L.identity(src, t, 0)
        L.ir.add_map_edge(grp, t, np.arange(size) // width, 1)
    if eff.key:
        L.grouped[L.key(eff.key)] = (f.node, x.node, groups)
    return f


@handles(nn.Conv1d, nn.Conv2d)
def _m_conv(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    if m.padding_mode != "zeros" and m.padding_mode not in ("reflect", "replicate", "circular"):
        raise Unsupported(f"padding mode {m.padding_mode}")
    eff = plain_weight(_qual_key(qual, "weight"), m.weight)
    bias = "trainable" if m.bias is not None else None
    attrs = {"kernel_size": list(m.kernel_size), "stride": list(m.stride),
             "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
             "dims": len(m.kernel_size)}
    return _conv(L, qual, al[0], ar[0], eff, bias, _qual_key(qual, "bias"), m.groups, out, attrs)


@handles(F.linear, raw=True)
def _f_linear(c: Call):
    L, n, al, kl, ar, out = c.lowerer, c.node, c.args, c.kwargs, c.real_args, c.out
    x = L.feat(al[0], ar[0], -1)
    w_node = _arg(n.args, n.kwargs, 1, "weight")
    eff = L.weight(_arg(al, kl, 1, "weight"), w_node)
    b_node = _arg(n.args, n.kwargs, 2, "bias")
    name_hint = _module_of(L, n) or n.name
    f = L.dense(name_hint, "linear", x, eff, eff.shape[0], out, out.dim() - 1)
    L.ir.node(f.node)["bias"] = L.bias_of(_arg(al, kl, 2, "bias"), b_node, f.node)
    return f


def _module_of(L: Lowerer, n: fx.Node) -> str:
    stack = n.meta.get("nn_module_stack") or {}
    if stack:
        return L.prefix + list(stack.values())[-1][0]
    return ""


@handles(F.conv1d, F.conv2d, raw=True)
def _f_conv(c: Call):
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    w_node = _arg(n.args, n.kwargs, 1, "weight")
    eff = L.weight(_arg(al, kl, 1, "weight"), w_node)
    if eff.transposed:
        raise Unsupported("transposed convolution weight")
    groups = _arg(ar, kr, 6, "groups", 1)
    name_hint = _module_of(L, n) or n.name
    f = _conv(L, name_hint, al[0], ar[0], eff, None, None, int(groups), out,
              {"dims": len(eff.shape) - 2})
    L.ir.node(f.node)["bias"] = L.bias_of(_arg(al, kl, 2, "bias"),
                                          _arg(n.args, n.kwargs, 2, "bias"), f.node)
    return f


@handles(operator.matmul, torch.matmul, torch.mm, raw=True)
def _f_matmul(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    a, b = al[0], al[1]
    if isinstance(a, (Split, Packed)) or isinstance(b, (Split, Packed)):
        from asymspec.audit.lowering.handlers.attention import scores_matmul

        return scores_matmul(c)  # eager attention: q k^T, then weights @ v
    a_ok = isinstance(a, Feat) or (isinstance(a, Raw) and a.kind in ("input", "opaque"))
    if a_ok and isinstance(b, Raw) and b.kind == "static" and ar[1].dim() == 2:
        x = L.feat(a, ar[0], -1)
        eff = L.weight(b, n.args[1])  # layout (in, out): the layer uses its transpose
        eff = _transpose_eff(eff)
        return L.dense(_module_of(L, n) or n.name, "linear", x, eff, eff.shape[0], out,
                       out.dim() - 1)
    raise Unsupported("matrix product of features (not a weight)")


@handles(torch.addmm, torch.ops.aten.addmm.default, raw=True)
def _f_addmm(c: Call):
    """``addmm(bias, x, W) = bias + x @ W`` with ``W`` of shape (in, out): transformers'
    ``Conv1D`` (GPT-2) -- a linear layer whose weight is stored transposed."""
    L, n, al, kl, ar, out = c.lowerer, c.node, c.args, c.kwargs, c.real_args, c.out
    if any(kl.get(k, 1) != 1 for k in ("beta", "alpha")) or len(al) > 3:
        raise Unsupported("addmm with beta / alpha")
    if not isinstance(al[2], Raw) or al[2].kind != "static" or ar[2].dim() != 2:
        raise Unsupported("matrix product of features (not a weight)")
    x = L.feat(al[1], ar[1], -1)
    eff = _transpose_eff(L.weight(al[2], n.args[2]))
    f = L.dense(_module_of(L, n) or n.name, "linear", x, eff, eff.shape[0], out, out.dim() - 1)
    if ar[0].dim() != 1:
        raise Unsupported("addmm with a non-vector bias")
    L.ir.node(f.node)["bias"] = L.bias_of(al[0], n.args[0], f.node)
    return f


def _transpose_eff(eff: EffectiveWeight) -> EffectiveWeight:
    t = (lambda z: None if z is None else z.t())
    return EffectiveWeight(eff.key, (eff.shape[1], eff.shape[0]), t(eff.mask), t(eff.fixed),
                           t(eff.offset), not eff.transposed, eff.buffers)
