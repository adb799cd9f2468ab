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
        f = _shifted_parameter(L, v, r, ax, out, axis)
        ties.append(f if f is not None else L.feat(v, r, ax))
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


def _shifted_parameter(L: Lowerer, v, r: torch.Tensor, ax: int, out, axis: int) -> Feat | None:
    """A per-channel parameter vector under a uniform scale and shift (Gemma's RMSNorm
    ``x * (1 + weight)``): permuting the vector's entries permutes the operand's, so it is the
    parameter's own node (None when the operand is anything else; the caller's rules apply)."""
    if not isinstance(v, Raw) or v.kind != "static" or r.numel() != r.shape[ax]:
        return None
    key = _scalar_affine_param(L, v.fxnode)
    if key is None or L.real[_param_node(L, key)].dim() != 1:
        return None
    name = L.add_node(key, "param", [], r.shape[ax], out, axis, bias="trainable")
    L.record(key, (name,))
    return Feat(name, axis)


_CASTS = {"to", "float", "double", "half", "bfloat16", "type_as", "contiguous", "clone",
          "detach"}
_CAST_OPS = ("aten.to.", "aten._to_copy.", "aten.type_as.", "aten.clone.", "aten.alias.")
_SCALAR_OPS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
               torch.mul, torch.div, torch.rsub}


def _scalar_affine_param(L: Lowerer, n) -> str | None:
    """The parameter key when ``n`` is ``a * p + b`` of one parameter ``p`` with python scalars
    ``a != 0``, ``b`` (through dtype casts and copies), else None."""
    while isinstance(n, fx.Node):
        if n in L.param_nodes:
            return L.param_nodes[n]
        if n.kwargs and not set(n.kwargs) <= {"dtype", "memory_format", "copy", "non_blocking"}:
            return None
        if (n.op == "call_method" and n.target in _CASTS) or \
                str(n.target).startswith(_CAST_OPS):
            n = n.args[0]
            continue
        if n.op == "call_function" and n.target in _SCALAR_OPS and len(n.args) == 2:
            nodes = [a for a in n.args if isinstance(a, fx.Node)]
            scalars = [a for a in n.args if isinstance(a, (int, float)) and
                       not isinstance(a, bool)]
            if len(nodes) != 1 or len(scalars) != 1:
                return None
            if n.target in (operator.mul, torch.mul, operator.truediv, torch.div) and \
                    (scalars[0] == 0 or n.args[1] is nodes[0] and n.target in
                     (operator.truediv, torch.div)):
                return None  # x * 0, or c / p (not affine in p)
            n = nodes[0]
            continue
        return None
    return None


def _param_node(L: Lowerer, key: str):
    return next(k for k, v in L.param_nodes.items() if v == key)


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
