"""Normalisation layers: batch, instance, layer, RMS and group norm (modules and functional
forms).  An RMSNorm written out by hand (Llama's ``w * x.to(float32) * rsqrt(x.pow(2).mean(-1,
keepdim=True) + eps)``) is lowered op by op instead: a channel reduction and products."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers.linear import _module_of
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import Raw, Unsupported, _arg, _qual_key


# ---------------------------------------------------------------- norms
@handles(nn.BatchNorm1d, nn.BatchNorm2d)
def _m_bn(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1)
    f = L.elementwise(qual, "batchnorm", x, out, role="norm", attrs={"affine": m.affine})
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        if getattr(m, leaf, None) is not None:
            L.record(_qual_key(qual, leaf), (f.node,))
    return f


@handles(F.batch_norm, raw=True)
def _f_bn(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1)
    f = L.elementwise(_module_of(L, n) or n.name, "batchnorm", x, out, role="norm")
    for i, nm in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        _record_vector(L, _arg(n.args, n.kwargs, i, nm), f.node, state=i < 3)
    return f


def _record_vector(L: Lowerer, fxarg, node: str, state: bool = False) -> None:
    if fxarg is None:
        return
    if not isinstance(fxarg, fx.Node) or fxarg.op != "get_attr":
        raise Unsupported("norm statistics / affine parameters are not plain tensors")
    key = L.prefix + str(fxarg.target)
    L.record(key, (node,), constant=not state and key not in L.params)


@handles(nn.InstanceNorm1d, nn.InstanceNorm2d)
def _m_instance_norm(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1)
    f = L.elementwise(qual, "instancenorm", x, out, role="norm", attrs={"affine": m.affine})
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        if getattr(m, leaf, None) is not None:
            L.record(_qual_key(qual, leaf), (f.node,))
    return f


@handles(nn.LayerNorm)
def _m_ln(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], -1 if isinstance(al[0], Raw) else None)
    ndim = ar[0].dim()
    first = ndim - len(m.normalized_shape)
    if x.cdim < first:
        raise Unsupported("LayerNorm does not normalise over the channel axis")
    f = L.elementwise(qual, "layernorm", x, out, role="norm",
                      attrs={"affine": m.elementwise_affine})
    axes = tuple(f.node if first + i == x.cdim else None for i in range(len(m.normalized_shape)))
    for leaf in ("weight", "bias"):
        if getattr(m, leaf, None) is not None:
            L.record(_qual_key(qual, leaf), axes)
    return f


@handles(F.layer_norm, raw=True)
def _f_ln(c: Call):
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    x = L.feat(al[0], ar[0], -1 if isinstance(al[0], Raw) else None)
    shape = _arg(ar, kr, 1, "normalized_shape")
    shape = [shape] if isinstance(shape, int) else list(shape)
    first = ar[0].dim() - len(shape)
    if x.cdim < first:
        raise Unsupported("layer_norm does not normalise over the channel axis")
    f = L.elementwise(_module_of(L, n) or n.name, "layernorm", x, out, role="norm")
    axes = tuple(f.node if first + i == x.cdim else None for i in range(len(shape)))
    for i, nm in ((2, "weight"), (3, "bias")):
        _record_affine(L, _arg(n.args, n.kwargs, i, nm), axes, "layer_norm affine parameters")
    return f


def _record_affine(L: Lowerer, arg, axes: tuple, what: str) -> None:
    """Record a functional norm's affine tensor (a ``get_attr`` node) along the norm's axes."""
    if arg is None:
        return
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        raise Unsupported(f"{what} are not plain tensors")
    key = L.prefix + str(arg.target)
    L.record(key, axes, constant=key not in L.params)


def _rms_targets() -> list:
    """``F.rms_norm`` / ``aten.rms_norm`` where this torch has them."""
    aten = getattr(getattr(torch.ops.aten, "rms_norm", None), "default", None)
    return [getattr(F, "rms_norm", None), aten]


@handles(getattr(nn, "RMSNorm", None))
def _m_rms(c: Call):
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last axes: permutation-equivariant in
    the channels (the mean is symmetric), its weight permuted with them."""
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    shape = [m.normalized_shape] if isinstance(m.normalized_shape, int) else \
        list(m.normalized_shape)
    f, axes = _rms(L, qual, al[0], ar[0], out, shape)
    if m.weight is not None:
        L.record(_qual_key(qual, "weight"), axes)
    return f


def _rms(L: Lowerer, base: str, x_low, x_real, out, shape: list):
    x = L.feat(x_low, x_real, -1 if isinstance(x_low, Raw) else None)
    first = x_real.dim() - len(shape)
    if x.cdim < first:
        raise Unsupported("rms_norm does not normalise over the channel axis")
    f = L.elementwise(base, "layernorm", x, out, role="norm", attrs={"rms": True})
    return f, tuple(f.node if first + i == x.cdim else None for i in range(len(shape)))


@handles(*_rms_targets(), raw=True)
def _f_rms(c: Call):
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    shape = _arg(ar, kr, 1, "normalized_shape")
    shape = [shape] if isinstance(shape, int) else list(shape)
    f, axes = _rms(L, _module_of(L, n) or n.name, al[0], ar[0], out, shape)
    _record_affine(L, _arg(n.args, n.kwargs, 2, "weight"), axes, "rms_norm weights")
    return f


@handles(nn.GroupNorm)
def _m_gn(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1)
    f = L.elementwise(qual, "groupnorm", x, out, role="norm",
                      attrs={"groups": m.num_groups, "affine": m.affine})
    if m.affine:
        L.record(_qual_key(qual, "weight"), (f.node,))
        L.record(_qual_key(qual, "bias"), (f.node,))
    return f


@handles(F.group_norm, raw=True)
def _f_gn(c: Call):
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    x = L.feat(al[0], ar[0], 1)
    groups = int(_arg(ar, kr, 1, "num_groups"))
    f = L.elementwise(_module_of(L, n) or n.name, "groupnorm", x, out, role="norm",
                      attrs={"groups": groups})
    for i, nm in ((2, "weight"), (3, "bias")):
        _record_vector(L, _arg(n.args, n.kwargs, i, nm), f.node)
    return f
