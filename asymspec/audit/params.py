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

``A`` and ``B`` are kept as small tensors that *broadcast* to the weight's shape (a plain
parameter is ``1 * W + 0``, two scalars) and are expanded only where a mask or fixed values make
them vary per entry: resolving the weights of an 8-billion-parameter model costs nothing per
entry, and a parameter on the meta device (no values, :mod:`asymspec.audit.meta`) is resolved
from its shape alone.
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
    a: torch.Tensor  # broadcasts to ``shape``
    b: torch.Tensor  # broadcasts to ``shape``
    transposed: bool = False
    buffers: list[str] = field(default_factory=list)
    shape: tuple[int, ...] = ()  # of the expression (broadcast with its constants)
    pshape: tuple[int, ...] = ()  # of T(parameter)


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
            w = self.real[n]  # only its shape is read: it may be on the meta device
            return Affine(self.param_key[n], torch.ones(()), torch.zeros(()), False, [],
                          tuple(w.shape), tuple(w.shape))
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
        return len(x.shape)
    return x.dim() if isinstance(x, torch.Tensor) else 0


def _shape(x) -> tuple[int, ...]:
    if isinstance(x, Affine):
        return x.shape
    return tuple(x.shape) if isinstance(x, torch.Tensor) else ()


def _coef_t(c: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Transpose a coefficient broadcasting to 2-D ``shape`` (a scalar stays a scalar)."""
    if c.dim() == 0:
        return c
    return _t(c.expand(shape))


def _transpose(x):
    if isinstance(x, Affine):
        if len(x.shape) != 2:
            raise NotAffine("transpose of a weight with more than 2 dimensions")
        if len(x.pshape) != 2:
            raise NotAffine("transpose of a broadcast parameter")
        return Affine(x.key, _coef_t(x.a, x.shape), _coef_t(x.b, x.shape), not x.transposed,
                      x.buffers, (x.shape[1], x.shape[0]), (x.pshape[1], x.pshape[0]))
    return _t(x)


def _scale(x, c):
    if isinstance(x, Affine):
        c = c.float() if isinstance(c, torch.Tensor) else c
        shape = torch.broadcast_shapes(x.shape, _shape(c))
        return Affine(x.key, x.a * c, x.b * c, x.transposed, x.buffers, tuple(shape), x.pshape)
    return x * c


def _combine(fn, x, y):
    """fn applied to two operands, at least one affine (fn must be affine-compatible)."""
    shape = tuple(torch.broadcast_shapes(_shape(x), _shape(y)))
    if isinstance(x, Affine) and isinstance(y, Affine):
        if x.key != y.key or x.transposed != y.transposed:
            raise NotAffine("expression mixes two parameters")
        return Affine(x.key, fn(x.a, y.a), fn(x.b, y.b), x.transposed, x.buffers, shape,
                      x.pshape)
    if isinstance(x, Affine):
        c = torch.as_tensor(y, dtype=x.b.dtype)
        return Affine(x.key, fn(x.a, torch.zeros_like(c)), fn(x.b, c), x.transposed, x.buffers,
                      shape, x.pshape)
    if isinstance(y, Affine):
        c = torch.as_tensor(x, dtype=y.b.dtype)
        return Affine(y.key, fn(torch.zeros_like(c), y.a), fn(c, y.b), y.transposed, y.buffers,
                      shape, y.pshape)
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
    if v.shape != v.pshape:  # one parameter entry would stand for several weight entries
        raise NotAffine(f"the parameter (shape {list(v.pshape)}) is broadcast to a weight of "
                        f"shape {list(v.shape)}")
    if v.a.numel() == 1 and v.b.numel() == 1:  # uniform coefficients: no per-entry work
        a0, b0 = float(v.a.reshape(())), float(v.b.reshape(()))
        if a0 != 0 and b0 == 0:
            return EffectiveWeight(v.key, v.shape, None, None, None, v.transposed, buffers)
    a = v.a.detach().float().expand(v.shape)
    b = v.b.detach().float().expand(v.shape)
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
