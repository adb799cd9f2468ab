"""Binary elementwise arithmetic: residual sums, products, scaling by constants or parameters."""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers import attention, heads, rope
from asymspec.audit.lowering.handlers.shape import _tie
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import (
    Feat,
    Packed,
    Raw,
    Split,
    Unsupported,
    _opaque_like,
    _target_name,
)

# ---------------------------------------------------------------- binary elementwise
_BINARY = {
    operator.add: "add", operator.iadd: "add", torch.add: "add", operator.sub: "add",
    operator.isub: "add", torch.sub: "add", operator.mul: "mul", operator.imul: "mul",
    torch.mul: "mul", operator.truediv: "mul", operator.itruediv: "mul", torch.div: "mul",
    torch.maximum: "binary", torch.minimum: "binary", torch.pow: "binary",
    operator.pow: "binary", torch.where: None, torch.rsub: "add",
}
_BINARY_METHODS = {"add": "add", "add_": "add", "sub": "add", "sub_": "add", "mul": "mul",
                   "mul_": "mul", "div": "mul", "div_": "mul"}


def _binary(L: Lowerer, n, op: str, al, ar, out):
    if op is None:
        raise Unsupported("where() of features")
    if any(isinstance(v, attention.Scores) for v in al[:2]):  # eager attention logits
        return attention.scores_binary(L, op, list(al[:2]), list(ar[:2]), out)
    if any(isinstance(v, (Split, Packed)) for v in al[:2]):
        # per-head products (graph attention: a . x' logits, alpha_h * x'_j messages)
        done = heads.binary(L, n, op, list(al[:2]), list(ar[:2]), out)
        if done is not None:
            return done
        # inside attention heads: scaling, RoPE's cos / sin tables, sums of rotated halves
        if any(isinstance(v, Feat) for v in al[:2]):
            raise Unsupported("split attention heads combined with unsplit features")
        return rope.binary(L, n, op, list(al[:2]), list(ar[:2]), out)
    operands = [(v, r) for v, r in zip(al[:2], ar[:2])]
    feats = [(v, r) for v, r in operands if isinstance(v, Feat)]
    if not feats:
        return _opaque_like(out, n)
    if not isinstance(out, torch.Tensor):
        raise Unsupported("binary op without tensor output")
    nd = out.dim()
    f0, r0 = feats[0]
    axis = f0.cdim + nd - r0.dim()
    size = out.shape[axis]
    ties: list[Feat] = []
    single: list[Feat] = []
    for v, r in operands:
        if not isinstance(r, torch.Tensor):
            continue  # python scalar: channel-uniform
        ax = axis - (nd - r.dim())
        if isinstance(v, Feat):
            if v.cdim != ax:
                raise Unsupported("operands carry channels on different axes")
            if r.shape[ax] == size:
                ties.append(v)
            else:  # a single unit broadcast over the channels (RMSNorm's rsqrt(mean(x^2)))
                single.append(v)
            continue
        if ax < 0 or r.dim() == 0 or r.shape[ax] == 1:
            if isinstance(v, Raw) and v.kind == "static":
                _record_static_params(L, v, ())
            continue  # channel-uniform operand (scalar, per-position mask, ...)
        ties.append(L.feat(v, r, ax))
    # A one-unit feature broadcast over the channels is a channel-uniform operand: its unit is
    # a fixed point of every automorphism and the edges of a broadcast node (every channel
    # reads that unit) constrain nothing, so it needs no node -- one would only make the
    # permutation spec treat the stream as derived (and fix it).  Only a product of one-unit
    # features alone keeps the broadcast node.
    if not ties:
        for v in single:
            name = L.add_node(f"{n.name}.bcast", "broadcast", [v.node], size, out, axis)
            L.ir.add_map_edge(v.node, name, np.zeros(size, dtype=np.int64))
            ties.append(Feat(name, axis))
    base = n.name
    if len(ties) == 1:
        return L.elementwise(base, op if op != "add" else "affine", ties[0], out, cdim=axis,
                             attrs={"fn": _target_name(n, None)})
    return _tie(L, base, op, ties, out, axis)


def _record_static_params(L: Lowerer, v: Raw, axes: tuple) -> None:
    """Parameters in a channel-uniform operand are not permuted."""
    stack = [v.fxnode]
    seen = set()
    while stack:
        x = stack.pop()
        if x in seen or not isinstance(x, fx.Node):
            continue
        seen.add(x)
        if x in L.param_nodes:
            L.fixed_use(L.param_nodes[x], "channel-uniform operand")
        stack.extend(x.all_input_nodes)


@handles(*[k for k in _BINARY])
def _f_binary(c: Call):
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    if n.target is torch.where:
        raise Unsupported("where() of features")
    if kl.get("alpha") not in (None, 1) and isinstance(kl.get("alpha"), (Feat, Raw)):
        raise Unsupported("tensor alpha")
    return _binary(L, n, _BINARY[n.target], list(al) + [kl.get("other")],
                   list(ar) + [kr.get("other")], out)


@handles(*_BINARY_METHODS)
def _meth_binary(c: Call):
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    return _binary(L, n, _BINARY_METHODS[n.target], list(al) + [kl.get("other")],
                   list(ar) + [kr.get("other")], out)
