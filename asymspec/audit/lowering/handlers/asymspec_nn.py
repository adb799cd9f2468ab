"""asymspec's own masked / frozen / noisy layers (``asymspec.nn.masked``), lowered from their
buffers rather than traced: their forward has eager fast paths (in-place frozen entries, a
batched matmul for FiGLU's frozen 1x1 convolution) that fx cannot trace, while what they compute
is fixed by the module's contract: ``F.linear`` / ``F.conv2d`` with
``where(weight_mask, weight, weight_fixed) + weight_offset`` and a trainable or frozen bias."""

from __future__ import annotations

import torch

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers.linear import _conv
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import Unsupported, _qual_key
from asymspec.audit.params import EffectiveWeight


def _classes() -> tuple:
    try:  # by name, lazily: asymspec.nn may be refactored without touching the audit
        from asymspec.nn import masked
    except Exception:  # pragma: no cover
        return (None, None)
    return getattr(masked, "AsymLinear", None), getattr(masked, "AsymConv2d", None)


def _effective(c: Call) -> tuple[EffectiveWeight, object, str]:
    """The layer's effective weight (parameter key, mask, frozen values, offset), its IR bias
    and the bias key; every constant buffer is listed so it is never permuted."""
    m, qual = c.module, c.qual
    key = _qual_key(qual, "weight")
    mask = getattr(m, "weight_mask", None)
    offset = getattr(m, "weight_offset", None)
    buffers = [_qual_key(qual, b) for b in ("weight_mask", "weight_fixed", "weight_offset")
               if getattr(m, b, None) is not None]
    w = m.weight.detach().float()
    if getattr(m, "frozen", False) or not isinstance(m.weight, torch.nn.Parameter):
        eff = EffectiveWeight(None, tuple(w.shape), torch.zeros(w.shape, dtype=torch.bool),
                              w.clone(), None if offset is None else offset.detach().float(),
                              False, buffers + [key])
    else:
        fixed = None
        if mask is not None:
            fixed = torch.where(mask, torch.zeros_like(w), m.weight_fixed.detach().float())
        eff = EffectiveWeight(key, tuple(w.shape), None if mask is None else mask.clone(), fixed,
                              None if offset is None else offset.detach().float(), False,
                              buffers)
    bias_key = _qual_key(qual, "bias")
    b = m.bias
    if b is None:
        bias = None
    elif isinstance(b, torch.nn.Parameter):
        bias = "trainable"
    else:  # frozen per-unit biases
        bias = b.detach().float().clone()
    return eff, bias, bias_key if isinstance(b, torch.nn.Parameter) else ""


def _record_frozen_bias(c: Call, node: str) -> None:
    b = c.module.bias
    if b is not None and not isinstance(b, torch.nn.Parameter):
        c.lowerer.record(_qual_key(c.qual, "bias"), (node,), constant=True)


@handles(_classes()[0])
def _m_asym_linear(c: Call):
    L, al, ar, out = c.lowerer, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], -1)
    eff, bias, bias_key = _effective(c)
    f = L.dense(c.qual, "linear", x, eff, eff.shape[0], out, out.dim() - 1, bias=None)
    L.ir.node(f.node)["bias"] = bias
    if bias_key:
        L.record(bias_key, (f.node,))
    _record_frozen_bias(c, f.node)
    return f


@handles(_classes()[1])
def _m_asym_conv(c: Call):
    L, m, al, ar, out = c.lowerer, c.module, c.args, c.real_args, c.out
    eff, bias, bias_key = _effective(c)
    if isinstance(bias, torch.Tensor):
        raise Unsupported("convolution with frozen biases")  # not emitted by asymspec
    attrs = {"kernel_size": [m.kernel_size] * 2, "stride": [m.stride] * 2,
             "padding": [m.padding] * 2, "dims": 2}
    return _conv(L, c.qual, al[0], ar[0], eff, bias, bias_key or None, 1, out, attrs)
