"""Elementwise activations (modules, functions and tensor methods) and ``nn.PReLU``."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers import rope
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import Feat, Raw, Split, Unsupported, _flat_values, _qual_key

# ---------------------------------------------------------------- activations
_ACT_MODULES = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
    nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", nn.SELU: "selu", nn.Mish: "mish",
    nn.Softplus: "softplus", nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax",
    nn.Hardtanh: "hardtanh", nn.CELU: "celu", nn.GLU: None, nn.Softsign: "softsign",
    nn.Tanhshrink: "tanhshrink",
}


def _act_module(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0])
    fn = _ACT_MODULES.get(type(m)) or type(m).__name__.lower()
    return L.elementwise(qual, "activation", x, out, attrs={"fn": fn})


for _cls, _fn in _ACT_MODULES.items():
    if _fn is not None:
        handles(_cls)(_act_module)


@handles(nn.PReLU)
def _m_prelu(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1 if ar[0].dim() >= 2 else 0)
    f = L.elementwise(qual, "activation", x, out, attrs={"fn": "prelu"})
    L.record(_qual_key(qual, "weight"), (f.node,) if m.num_parameters > 1 else (None,))
    return f


_ACT_FUNCS = {
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.gelu: "gelu", F.silu: "silu",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
    F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", F.leaky_relu: "leaky_relu",
    F.elu: "elu", F.selu: "selu", F.mish: "mish", F.softplus: "softplus", F.hardtanh: "hardtanh",
    F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax",
    torch.exp: "exp", torch.log: "log", torch.abs: "abs", torch.sqrt: "sqrt",
    torch.rsqrt: "rsqrt", operator.neg: "neg", torch.neg: "neg", torch.square: "square",
    F.normalize: "normalize", torch.clamp: "clamp", torch.clip: "clamp",
    F.relu_: "relu", torch.relu_: "relu", torch.erf: "erf", torch.sin: "sin", torch.cos: "cos",
}
_ACT_METHODS = {
    "relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh",
    "softmax": "softmax", "log_softmax": "log_softmax", "exp": "exp", "log": "log",
    "abs": "abs", "sqrt": "sqrt", "rsqrt": "rsqrt", "neg": "neg", "square": "square",
    "clamp": "clamp", "clamp_min": "clamp", "clamp_max": "clamp", "clip": "clamp", "erf": "erf",
    "pow": "pow", "sin": "sin", "cos": "cos",
}


def _tensor_only_first(al, n) -> None:
    for v in _flat_values(list(al[1:])):
        if isinstance(v, (Feat, Raw)):
            raise Unsupported("elementwise function with several tensor operands")


def _attention():
    from asymspec.audit.lowering.handlers import attention  # attention imports this module

    return attention


def _is_scores(x) -> bool:
    return isinstance(x, _attention().Scores)


def _split_reduction_ok(c: Call, fn: str) -> None:
    """softmax / normalize of split heads along the heads axis mixes the heads' dimensions
    unit by unit: not equivariant under per-head dimension permutations."""
    if fn not in ("softmax", "log_softmax", "normalize"):
        return
    x = c.args[0]
    nd = c.real_args[0].dim()
    pos, default = (2, 1) if fn == "normalize" else (1, None)  # normalize(x, p, dim)
    dim = c.real_args[pos] if len(c.real_args) > pos else c.real_kwargs.get("dim", default)
    if not isinstance(dim, int) or dim % nd == x.haxis:
        raise Unsupported(f"{fn} of split heads across the heads axis")


@handles(*_ACT_FUNCS)
def _f_act(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    _tensor_only_first(al, n)
    if _is_scores(al[0]):  # eager attention: softmax of the logits
        return _attention().scores_unary(c, _ACT_FUNCS[n.target])
    if isinstance(al[0], Split):  # inside attention heads (RoPE's -x2)
        _split_reduction_ok(c, _ACT_FUNCS[n.target])
        return rope.elementwise(L, n.name, al[0], out, _ACT_FUNCS[n.target])
    x = L.feat(al[0], ar[0])
    return L.elementwise(n.name, "activation", x, out, attrs={"fn": _ACT_FUNCS[n.target]})


@handles(*_ACT_METHODS)
def _meth_act(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    _tensor_only_first(al, n)
    if _is_scores(al[0]):
        return _attention().scores_unary(c, _ACT_METHODS[n.target])
    if isinstance(al[0], Split):
        _split_reduction_ok(c, _ACT_METHODS[n.target])
        return rope.elementwise(L, n.name, al[0], out, _ACT_METHODS[n.target])
    x = L.feat(al[0], ar[0])
    return L.elementwise(n.name, "activation", x, out, attrs={"fn": _ACT_METHODS[n.target]})
