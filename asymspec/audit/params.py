"""Effective weights built from one parameter and constant buffers.

Masked and noisy layers (W-Asym, syre, other people's hand-rolled variants) compute the weight a
layer uses from a trainable parameter ``W`` and constant buffers: ``where(mask, W, fixed)``,
``W * M + (1 - M) * F``, ``W + noise``, ``masked_fill(W, ~M, 0)``, ``(W * M).t()``, ...  This module
evaluates such an fx expression symbolically as

    effective = A * T(W) + B        (A, B constant tensors; T the identity or a 2-D transpose)

and turns it into the IR's dense-edge description: trainable entries where ``A != 0``, frozen
entries (``A == 0``) with value ``B``, and a fixed offset ``B`` on trainable entries.  Frozen
values are coloured by value in the unit graph, so a W-Asym model from elsewhere audits as
asymmetric.  A per-entry scale that differs between trainable entries (``A`` not constant where
nonzero) cannot be expressed and is reported as unsupported, never ignored.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx


class NotAffine(Exception):
    """The expression is not affine in a single parameter (reason in the message)."""


@dataclass
class Affine:
    key: str  # the parameter's state_dict key
    a: torch.Tensor
    b: torch.Tensor
    transposed: bool = False
    buffers: list[str] = field(default_factory=list)


@dataclass
class EffectiveWeight:
    """What a layer's weight argument is, in the parameter's own layout (transpose undone)."""

    key: str | None  # trainable parameter (None: the weight is entirely constant)
    shape: tuple[int, ...]
    mask: torch.Tensor | None  # bool, True = trainable; None = all trainable
    fixed: torch.Tensor | None  # values of frozen entries
    offset: torch.Tensor | None  # added to trainable entries
    transposed: bool = False  # the layer uses T(param)
    buffers: list[str] = field(default_factory=list)  # constant buffers it reads

    @property
    def keys(self) -> list[str]:
        return ([self.key] if self.key else []) + list(self.buffers)


_ALIAS_METHODS = {"detach", "contiguous", "clone", "float", "to", "type_as", "requires_grad_"}


def _t(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise NotAffine("transpose of a weight with more than 2 dimensions")
    return x.t()


class AffineEvaluator:
    """Symbolic evaluation over fx nodes; ``real[node]`` holds concrete values."""

    def __init__(self, real: dict, param_key: dict[fx.Node, str], buffer_key: dict[fx.Node, str]
                 ) -> None:
        self.real = real
        self.param_key = param_key
        self.buffer_key = buffer_key
        self.cache: dict[fx.Node, object] = {}

    def depends_on_param(self, n) -> bool:
        if not isinstance(n, fx.Node):
            return False
        if n in self.param_key:
            return True
        return any(self.depends_on_param(a) for a in n.all_input_nodes)

    def buffers_of(self, n, acc: list[str]) -> list[str]:
        if isinstance(n, fx.Node):
            if n in self.buffer_key and self.buffer_key[n] not in acc:
                acc.append(self.buffer_key[n])
            for a in n.all_input_nodes:
                self.buffers_of(a, acc)
        return acc

    def eval(self, n):
        """Affine | torch.Tensor (constant) | python scalar."""
        if not isinstance(n, fx.Node):
            return n
        if n in self.cache:
            return self.cache[n]
        out = self._eval(n)
        self.cache[n] = out
        return out

    def _eval(self, n: fx.Node):
        if n in self.param_key:
            w = self.real[n]
            return Affine(self.param_key[n], torch.ones_like(w), torch.zeros_like(w))
        if not self.depends_on_param(n):
            v = self.real[n]
            return v.detach() if isinstance(v, torch.Tensor) else v
        args = [self.eval(a) if isinstance(a, fx.Node) else a for a in n.args]
        t = n.target
        name = t if n.op == "call_method" else getattr(t, "__name__", str(t))
        if n.op == "call_method" and t in _ALIAS_METHODS or name in ("detach", "clone"):
            return args[0]
        if name in ("t",) or (name in ("transpose", "swapaxes") and len(args) == 3
                               and {args[1] % 2, args[2] % 2} == {0, 1}
                               and _ndim(args[0]) == 2):
            return _transpose(args[0])
        if name == "permute" and _ndim(args[0]) == 2:
            dims = args[1] if isinstance(args[1], (tuple, list)) else args[1:]
            return _transpose(args[0]) if list(dims) in ([1, 0], [-1, -2], [1, -2],
                                                         [-1, 0]) else args[0]
        if name == "where" and len(args) == 3:
            cond, x, y = args
            if isinstance(cond, Affine):
                raise NotAffine("where() condition depends on a parameter")
            return _combine(lambda p, q: torch.where(cond.bool(), p, q), x, y)
        if name == "masked_fill" and len(args) == 3:
            x, m, v = args
            if isinstance(m, Affine) or isinstance(v, Affine):
                raise NotAffine("masked_fill mask/value depends on a parameter")
            return _combine(lambda p, q: torch.where(m.bool(), q, p), x, v)
        if t in (operator.add, operator.iadd, torch.add) or name == "add":
            return _combine(torch.add, args[0], args[1])
        if t in (operator.sub, operator.isub, torch.sub) or name == "sub":
            return _combine(torch.sub, args[0], args[1])
        if name == "rsub":
            return _combine(torch.sub, args[1], args[0])
        if t in (operator.neg, torch.neg) or name == "neg":
            return _scale(args[0], -1.0)
        if t in (operator.mul, operator.imul, torch.mul) or name == "mul":
            x, y = args[0], args[1]
            if isinstance(x, Affine) and isinstance(y, Affine):
                raise NotAffine("product of two parameter expressions")
            return _scale(x, y) if isinstance(x, Affine) else _scale(y, x)
        if t in (operator.truediv, torch.div) or name == "div":
            x, y = args[0], args[1]
            if isinstance(y, Affine):
                raise NotAffine("division by a parameter")
            return _scale(x, 1.0 / y if not isinstance(y, torch.Tensor) else y.reciprocal())
        raise NotAffine(f"unsupported operation '{name}' on a parameter")


def _ndim(x) -> int:
    if isinstance(x, Affine):
        return x.a.dim()
    return x.dim() if isinstance(x, torch.Tensor) else 0


def _transpose(x):
    if isinstance(x, Affine):
        return Affine(x.key, _t(x.a), _t(x.b), not x.transposed, x.buffers)
    return _t(x)


def _scale(x, c):
    if isinstance(x, Affine):
        c = c.float() if isinstance(c, torch.Tensor) else c
        return Affine(x.key, x.a * c, x.b * c, x.transposed, x.buffers)
    return x * c


def _combine(fn, x, y):
    """fn applied to two operands, at least one affine (fn must be affine-compatible)."""
    if isinstance(x, Affine) and isinstance(y, Affine):
        if x.key != y.key or x.transposed != y.transposed:
            raise NotAffine("expression mixes two parameters")
        return Affine(x.key, fn(x.a, y.a), fn(x.b, y.b), x.transposed, x.buffers)
    if isinstance(x, Affine):
        c = torch.as_tensor(y, dtype=x.b.dtype)
        return Affine(x.key, fn(x.a, torch.zeros_like(c)), fn(x.b, c), x.transposed, x.buffers)
    if isinstance(y, Affine):
        c = torch.as_tensor(x, dtype=y.b.dtype)
        return Affine(y.key, fn(torch.zeros_like(c), y.a), fn(c, y.b), y.transposed, y.buffers)
    return fn(torch.as_tensor(x), torch.as_tensor(y))


def effective_weight(ev: AffineEvaluator, n) -> EffectiveWeight:
    """Resolve the weight argument ``n`` of a layer; raises NotAffine when it cannot."""
    v = ev.eval(n)
    buffers = ev.buffers_of(n, [])
    if isinstance(v, torch.Tensor):  # entirely constant weight
        w = v.detach().float()
        return EffectiveWeight(None, tuple(w.shape), torch.zeros(w.shape, dtype=torch.bool),
                               w.clone(), None, False, buffers)
    if not isinstance(v, Affine):
        raise NotAffine("weight is not a tensor")
    a, b = v.a.detach().float(), v.b.detach().float()
    mask = a != 0
    if mask.any():
        scales = a[mask]
        if not torch.all(scales == scales[0]):
            raise NotAffine("trainable entries are scaled by different constants")
    all_trainable = bool(mask.all())
    fixed = None if all_trainable else torch.where(mask, torch.zeros_like(b), b)
    off = torch.where(mask, b, torch.zeros_like(b))
    offset = off if bool((off != 0).any()) else None
    return EffectiveWeight(v.key, tuple(a.shape), None if all_trainable else mask, fixed, offset,
                           v.transposed, buffers)


def plain_weight(key: str, w: torch.Tensor) -> EffectiveWeight:
    return EffectiveWeight(key, tuple(w.shape), None, None, None, False, [])
