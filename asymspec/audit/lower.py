"""Lower a traced module into the compiler's IR (:class:`asymspec.ir.graph.IRGraph`).

The traced graph is executed node by node on the example inputs (real values give every shape)
while each node is lowered by a small handler, looked up in three registries: ``MODULES`` (leaf
module classes), ``FUNCTIONS`` (call_function targets) and ``METHODS`` (tensor method names).

Every feature tensor is a :class:`Feat`: an IR node (its units are the tensor's channel axis) and
the axis ``cdim`` that carries them.  Views, transposes, dropout, token selection and other
channel-preserving operations re-use the IR node with a new ``cdim``; channel-changing layout
operations (flatten, concatenation, channel slices, padding) become ``map`` edges exactly as in
:mod:`asymspec.ir.build`.

Everything else is a :class:`Raw` value: graph inputs and the outputs of unsupported operations
(whose units are fixed points, materialised on demand along whichever axis a consumer needs),
integer index tensors (token ids, ``edge_index``) and *static* values (computed from parameters,
buffers and constants only; resolved by :mod:`asymspec.audit.params` when a layer uses them).

Unsupported operations are never skipped: each one is recorded with its fx node name, module
path and target, every feature tensor it reads is pinned (an identity map into a node whose
units carry distinct frozen biases, so each unit is a fixed point) and its outputs are fixed.
No automorphism can then move anything an unsupported operation touches, which keeps every
reported symmetry real; a claim of *asymmetry* may depend on the pins, so the audit's verdict is
``unknown`` whenever anything was unsupported.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from asymspec.audit.params import (
    AffineEvaluator,
    EffectiveWeight,
    NotAffine,
    effective_weight,
    plain_weight,
)
from asymspec.audit.trace import trace
from asymspec.ir.graph import IRGraph
from asymspec.ir.units import float_bits


class Unsupported(Exception):
    """Raised by a handler: the op (or this use of it) is not understood."""


@dataclass
class Feat:
    node: str
    cdim: int  # non-negative axis of the real tensor carrying the node's units


@dataclass
class Split:
    """A feature tensor whose channel axis is split into (heads, head_dim) axes."""

    node: str
    haxis: int
    daxis: int
    heads: int


@dataclass
class Raw:
    kind: str  # input | opaque | index | static
    fxnode: fx.Node | None = None
    name: str = ""


@dataclass
class UnsupportedOp:
    fx_node: str
    module: str
    target: str
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        where = f" in module '{self.module}'" if self.module else ""
        return f"{self.target} (fx node '{self.fx_node}'{where}): {self.reason}"


@dataclass
class Lowered:
    ir: IRGraph
    unsupported: list[UnsupportedOp]
    tensor_axes: dict[str, tuple]
    constant_keys: set[str]
    state_keys: set[str] = field(default_factory=set)


# ----------------------------------------------------------------------------- registries
ModuleHandler = Callable[..., Any]
MODULES: dict[type, ModuleHandler] = {}
FUNCTIONS: dict[Any, ModuleHandler] = {}
METHODS: dict[str, ModuleHandler] = {}


def module_handler(*classes):
    def deco(fn):
        for c in classes:
            MODULES[c] = fn
        return fn
    return deco


def function_handler(*targets):
    def deco(fn):
        for t in targets:
            FUNCTIONS[t] = fn
        return fn
    return deco


def method_handler(*names):
    def deco(fn):
        for n in names:
            METHODS[n] = fn
        return fn
    return deco


def has_hooks(m: nn.Module) -> bool:
    """Forward hooks change what a module computes and fx ignores them: never trust those."""
    return bool(m._forward_pre_hooks or m._forward_hooks)


def handler_for_module(m: nn.Module):
    if has_hooks(m):
        return None
    for cls in type(m).__mro__:
        if cls in MODULES:
            # a subclass that overrides forward is a different op (e.g. torchvision LayerNorm2d)
            if type(m).forward is cls.forward:
                return MODULES[cls]
            return None
    return None


def _pyg_message_passing() -> type | None:
    try:
        from torch_geometric.nn.conv import MessagePassing
    except Exception:  # pragma: no cover
        return None
    return MessagePassing


def is_leaf(m: nn.Module) -> bool:
    if has_hooks(m) or handler_for_module(m) is not None:
        return True
    mp = _pyg_message_passing()
    if mp is not None and isinstance(m, mp):
        return True  # unsupported message passing layers stay opaque
    from torch.nn.utils import parametrize

    return parametrize.is_parametrized(m)


def _layout(ndim: int, cdim: int) -> str:
    if ndim <= 2:
        return "vector"
    return "image" if cdim == 1 else "tokens"


# ----------------------------------------------------------------------------- the lowerer
class Lowerer:
    def __init__(self, root: nn.Module, name: str) -> None:
        self.root = root
        self.ir = IRGraph(name)
        self.unsupported: list[UnsupportedOp] = []
        self.tensor_axes: dict[str, tuple] = {}
        self.constant_keys: set[str] = set()
        self.key_uses: dict[str, list[tuple]] = {}
        self.materialised: dict[tuple, str] = {}
        self.pin_count = 0
        self.params = {k: id(v) for k, v in root.named_parameters(remove_duplicate=False)}
        self.buffers = {k for k, _ in root.named_buffers(remove_duplicate=False)}
        # weight tying by tensor identity: every name of one tensor maps to its first name
        self.canon: dict[str, str] = {}
        first: dict[int, str] = {}
        for k, v in [*root.named_parameters(remove_duplicate=False),
                     *root.named_buffers(remove_duplicate=False)]:
            self.canon[k] = first.setdefault(id(v), k)
        self.tensor_uses: dict[str, list[tuple]] = {}  # canonical key -> distinct axes used
        # key -> (why, fx node, module) of a use that must not permute it
        self.fixed_uses: dict[str, tuple[str, str, str]] = {}
        self.read_params: dict[str, str] = {}  # canonical parameter key -> where it was read
        self.state_keys = set(root.state_dict().keys())
        # current graph context
        self.prefix = ""
        self.node: fx.Node | None = None
        self.forced: dict[str, str] = {}
        self.grouped: dict[str, tuple[str, str, int]] = {}  # weight key -> (out, in, groups)
        self.real: dict = {}
        self.param_nodes: dict[fx.Node, str] = {}
        self.buffer_nodes: dict[fx.Node, str] = {}
        self.sub_root: nn.Module = root

    # ------------------------------------------------------------------ naming & nodes
    def unique(self, base: str) -> str:
        base = base or self.ir.name
        if base not in self.ir.g:
            return base
        k = 2
        while f"{base}#{k}" in self.ir.g:
            k += 1
        return f"{base}#{k}"

    def add_node(self, base: str, op: str, inputs: list[str], size: int, real: torch.Tensor,
                 cdim: int, role: str = "hidden", attrs: dict | None = None, bias: Any = None
                 ) -> str:
        n = self.node
        if n is not None and base == n.name and "asymspec_name" in n.meta:
            base = self.prefix + n.meta["asymspec_name"]  # torch.export: the leaf module's path
        name = self.unique(base)
        shape = tuple(real.shape[1:]) if real.dim() > 0 else ()
        self.ir.add_node(name, op, inputs, size, shape, _layout(real.dim(), cdim), role=role,
                         attrs=attrs, bias=bias, source=(self.where(),))
        return name

    def where(self) -> str:
        n = self.node
        return "" if n is None else f"{self.prefix}{n.name}"

    def identity(self, src: str, dst: str, slot: int = 0) -> None:
        self.ir.add_map_edge(src, dst, np.arange(self.ir.node(src)["size"]), slot)

    def key(self, key: str) -> str:
        """The canonical name of a state_dict key (tied tensors: the first name)."""
        return self.canon.get(key, key)

    def record(self, key: str, axes: tuple, constant: bool = False) -> None:
        """One use of tensor ``key`` along ``axes``.  A tensor used along different axes (weight
        tying, a module called twice) ties the nodes of corresponding axes in the IR, so every
        automorphism permutes the one tensor consistently; ``tensor_axes`` keeps the first use."""
        key = self.key(key)
        uses = self.tensor_uses.setdefault(key, [])
        if axes not in uses:
            for prev in uses:
                self.tie_axes(key, prev, axes)
            uses.append(axes)
        self.tensor_axes.setdefault(key, axes)
        if constant:
            self.constant_keys.add(key)

    def fixed_use(self, key: str, why: str) -> None:
        """``key`` is read somewhere it must not be permuted (an unsupported op, a
        channel-uniform operand): every node along which it is used elsewhere is pinned."""
        key = self.key(key)
        self.fixed_uses.setdefault(key, (why, self.where(), self.module_path()))
        self.tensor_axes.setdefault(key, ())

    def tie_axes(self, key: str, a: tuple, b: tuple) -> None:
        why = f"tensor '{key}' is used along both"
        if len(a) != len(b):
            self.pin_axes(a, f"tensor '{key}' is used with different ranks")
            self.pin_axes(b, f"tensor '{key}' is used with different ranks")
            return
        for x, y in zip(a, b):
            if x == y:
                continue
            xs = x if isinstance(x, tuple) else (x,)
            ys = y if isinstance(y, tuple) else (y,)
            sizes_x = [None if n is None else self.ir.node(n)["size"] for n in xs]
            sizes_y = [None if n is None else self.ir.node(n)["size"] for n in ys]
            if None in xs or None in ys or sizes_x != sizes_y:
                self.pin_axes((x, y), f"tensor '{key}' is used permuted and unpermuted")
                continue
            for n, m in zip(xs, ys):
                if n != m:
                    self.ir.add_tie(n, m, why)

    def pin_axes(self, axes: tuple, why: str) -> None:
        for a in axes:
            for n in (a if isinstance(a, tuple) else (a,)):
                if n is not None:
                    self.pin(n, why)

    def pin(self, node: str, why: str) -> None:
        """Make every unit of ``node`` a fixed point (identity map into frozen distinct biases)."""
        size = self.ir.node(node)["size"]
        if size == 0:
            return
        self.pin_count += 1
        name = self.unique(f"pin:{node}")
        self.ir.add_node(name, "pin", [node], size, (size,), "vector", role="pin",
                         attrs={"reason": why},
                         bias=torch.arange(1, size + 1, dtype=torch.float32))
        self.identity(node, name)

    def module_path(self) -> str:
        n = self.node
        if n is None:
            return self.prefix.rstrip(".")
        if n.op == "call_module":
            return self.prefix + str(n.target)
        stack = n.meta.get("nn_module_stack") or {}
        if stack:
            path = list(stack.values())[-1][0]
            return self.prefix + path
        return self.prefix.rstrip(".")

    # ------------------------------------------------------------------ raw values
    def feat(self, low: Any, real: torch.Tensor, cdim: int | None = None) -> Feat:
        """A Feat for ``low``; raw inputs / opaque values are materialised along ``cdim``."""
        if isinstance(low, Feat):
            if cdim is not None and low.cdim != cdim % real.dim():
                raise Unsupported(f"expects channels on axis {cdim % real.dim()}, the input "
                                  f"carries them on axis {low.cdim}")
            return low
        if not isinstance(low, Raw) or not isinstance(real, torch.Tensor) or real.dim() == 0:
            raise Unsupported("operand is not a feature tensor")
        if cdim is None:
            cdim = 1 if real.dim() >= 2 else 0
        cdim = cdim % real.dim()
        if low.kind == "static":
            return self.static_feat(low, real, cdim)
        key = (id(low.fxnode), low.name, cdim)
        if key in self.materialised:
            return Feat(self.materialised[key], cdim)
        size = int(real.shape[cdim])
        base = low.name if cdim == (1 if real.dim() >= 2 else 0) else f"{low.name}@{cdim}"
        if low.kind == "input":
            name = self.add_node(base, "input", [], size, real, cdim, role="input")
            self.ir.inputs.append(name)
        else:  # opaque: output of an unsupported op, every unit fixed
            name = self.add_node(base, "opaque", [], size, real, cdim, role="pin",
                                 bias=torch.arange(1, size + 1, dtype=torch.float32))
        self.materialised[key] = name
        return Feat(name, cdim)

    def static_feat(self, low: Raw, real: torch.Tensor, cdim: int) -> Feat:
        """A tensor computed from parameters / buffers used as features."""
        ev = self.evaluator()
        n = low.fxnode
        size = int(real.shape[cdim])
        src = n
        while (src not in self.param_nodes and src.op == "call_method"
               and src.target in _BROADCAST_METHODS and isinstance(src.args[0], fx.Node)):
            src = src.args[0]  # class_token.expand(n, -1, -1): the parameter, broadcast
        if src in self.param_nodes:
            key = self.param_nodes[src]
            p = self.real[src]
            ax = cdim - (real.dim() - p.dim())
            if 0 <= ax < p.dim() and p.shape[ax] == size:
                name = self.add_node(key, "param", [], size, real, cdim, bias="trainable")
                self.record(key, tuple(name if i == ax else None for i in range(p.dim())))
                return Feat(name, cdim)
        if not ev.depends_on_param(n):
            vals = real.detach().float().movedim(cdim, 0).reshape(size, -1)
            codes = float_bits(vals)
            _, colour = np.unique(codes, axis=0, return_inverse=True)
            name = self.add_node(f"const:{n.name}", "const", [], size, real, cdim)
            self.ir.node(name)["unit_colour"] = colour.reshape(-1).astype(np.int64)
            return Feat(name, cdim)
        # a parameter reshaped / expanded / combined: keep it fixed
        self.unsupported.append(UnsupportedOp(self.where(), self.module_path(), str(n.target),
                                              "parameter expression used as a feature"))
        name = self.add_node(f"const:{n.name}", "opaque", [], size, real, cdim, role="pin",
                             bias=torch.arange(1, size + 1, dtype=torch.float32))
        return Feat(name, cdim)

    def evaluator(self) -> AffineEvaluator:
        return AffineEvaluator(self.real, self.param_nodes, self.buffer_nodes)

    def weight(self, low: Any, fxarg: Any) -> EffectiveWeight:
        if not isinstance(fxarg, fx.Node) or not isinstance(low, Raw) or low.kind != "static":
            raise Unsupported("weight is not a parameter expression")
        try:
            return effective_weight(self.evaluator(), fxarg)
        except NotAffine as exc:
            raise Unsupported(f"weight: {exc}") from exc

    def bias_of(self, low: Any, fxarg: Any, node: str) -> Any:
        """IR bias for a bias argument; records the tensor's axes."""
        if fxarg is None:
            return None
        if not isinstance(fxarg, fx.Node) or not isinstance(low, Raw) or low.kind != "static":
            raise Unsupported("bias is not a parameter expression")
        eff = self.weight(low, fxarg)
        if eff.transposed or len(eff.shape) != 1:
            raise Unsupported("bias is not a vector")
        for k in eff.buffers:
            self.record(k, (node,), constant=True)
        if eff.key is None:
            return eff.fixed.float()
        self.record(eff.key, (node,))
        if eff.mask is None and eff.offset is None:
            return "trainable"
        if eff.offset is not None:
            raise Unsupported("trainable bias with a fixed offset")
        # partly frozen bias: trainable entries share one colour (NaN), frozen ones by value
        return torch.where(eff.mask, torch.full_like(eff.fixed, float("nan")), eff.fixed)

    # ------------------------------------------------------------------ layers used by handlers
    def dense(self, base: str, op: str, src: Feat, eff: EffectiveWeight, out_size: int,
              real_out: torch.Tensor, cdim: int, bias: Any = None, attrs: dict | None = None,
              weight_axes: Callable[[str, str], tuple] | None = None, bias_key: str | None = None,
              ) -> Feat:
        """A linear / conv node reading ``src`` through ``eff`` (layer layout (out, in, ...))."""
        in_size = self.ir.node(src.node)["size"]
        if eff.shape[0] != out_size or eff.shape[1] != in_size:
            raise Unsupported(f"weight shape {list(eff.shape)} does not match {out_size} outputs "
                              f"and {in_size} inputs")
        name = self.add_node(base, op, [src.node], out_size, real_out, cdim,
                             attrs=dict(attrs or {}, in_features=in_size), bias=None)
        self.ir.add_dense_edge(src.node, name, eff.shape)
        e = self.ir.edge(src.node, name)
        e["mask"], e["fixed"], e["offset"] = eff.mask, eff.fixed, eff.offset
        if eff.mask is not None and not bool(eff.mask.any()):
            e["decided_by"] = ["frozen"]
        axes = (weight_axes(name, src.node) if weight_axes else
                (name, src.node) + (None,) * (len(eff.shape) - 2))
        if eff.transposed:
            axes = (axes[1], axes[0])
        if eff.key:
            self.record(eff.key, axes)
        for k in eff.buffers:
            self.record(k, axes, constant=True)
        if isinstance(bias, str) and bias != "trainable":
            raise AssertionError(bias)
        self.ir.node(name)["bias"] = bias
        if bias == "trainable" and bias_key:
            self.record(bias_key, (name,))
        return Feat(name, cdim)

    def elementwise(self, base: str, op: str, x: Feat, real_out: torch.Tensor,
                    cdim: int | None = None, attrs: dict | None = None, role: str = "hidden",
                    bias: Any = None) -> Feat:
        cdim = x.cdim if cdim is None else cdim
        size = self.ir.node(x.node)["size"]
        if real_out.dim() <= cdim or real_out.shape[cdim] != size:
            raise Unsupported("output does not keep the channel axis")
        name = self.add_node(base, op, [x.node], size, real_out, cdim, role=role, attrs=attrs,
                             bias=bias)
        self.identity(x.node, name)
        return Feat(name, cdim)

    def size(self, f: Feat) -> int:
        return self.ir.node(f.node)["size"]

    # ------------------------------------------------------------------ graph interpretation
    def run_graph(self, root: nn.Module, graph: fx.Graph, prefix: str, inputs_low: list,
                  inputs_real: list) -> tuple[Any, Any]:
        saved = (self.prefix, self.node, self.real, self.param_nodes, self.buffer_nodes,
                 self.sub_root)
        self.prefix = prefix
        self.sub_root = root
        real: dict[fx.Node, Any] = {}
        low: dict[fx.Node, Any] = {}
        self.real = real
        self.param_nodes = {}
        self.buffer_nodes = {}
        live = _live_nodes(graph)
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        out_low = out_real = None
        try:
            for n in graph.nodes:
                if n not in live:
                    continue
                self.node = n
                if n.op == "placeholder":
                    i = placeholders.index(n)
                    if i < len(inputs_real):
                        real[n], low[n] = inputs_real[i], inputs_low[i]
                    else:  # default argument
                        real[n] = n.args[0] if n.args else None
                        low[n] = None
                    continue
                if n.op == "output":
                    out_real = fx.node.map_arg(n.args[0], lambda a: real[a])
                    out_low = fx.node.map_arg(n.args[0], lambda a: low[a])
                    break
                args_r = fx.node.map_arg(n.args, lambda a: real[a])
                kwargs_r = fx.node.map_arg(n.kwargs, lambda a: real[a])
                with torch.no_grad():
                    real[n] = self.execute(root, n, args_r, kwargs_r)
                low[n] = self.lower_node(root, n, low, args_r, kwargs_r, real[n])
        finally:
            (self.prefix, self.node, self.real, self.param_nodes, self.buffer_nodes,
             self.sub_root) = saved
        return out_low, out_real

    def execute(self, root: nn.Module, n: fx.Node, args, kwargs):
        if n.op == "get_attr":
            obj = root
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        if n.op == "call_module":
            return root.get_submodule(str(n.target))(*args, **kwargs)
        raise AssertionError(n.op)

    def lower_node(self, root, n: fx.Node, low: dict, args_r, kwargs_r, out_r):
        if n.op == "get_attr":
            key = self.prefix + str(n.target)
            if isinstance(out_r, nn.Parameter) or key in self.params:
                self.param_nodes[n] = self.key(key)
                self.read_params.setdefault(self.key(key), self.where())
            elif key in self.buffers:
                self.buffer_nodes[n] = key
            return Raw("static", n, n.name)
        args_l = fx.node.map_arg(n.args, lambda a: low[a])
        kwargs_l = fx.node.map_arg(n.kwargs, lambda a: low[a])
        if not _has_tensor(out_r):
            return None
        flat = _flat_values(args_l) + _flat_values(kwargs_l)
        feats = [v for v in flat if isinstance(v, (Feat, Split))]
        raws = [v for v in flat if isinstance(v, Raw)]
        handler, module = self.find_handler(root, n)
        if handler is None and n.op == "call_module":
            why = self.forced.get(self.prefix + str(n.target))
            why = f"could not be traced ({why})" if why else _unsupported_module_reason(module)
            return self.unknown(n, args_l, kwargs_l, out_r, why)
        if n.target is operator.getitem and isinstance(args_l[0], (tuple, list)):
            return args_l[0][args_r[1]]
        if not feats and n.op != "call_module" and handler not in _RAW_HANDLERS:
            handler = None
        if not feats and handler is None:
            if any(r.kind in ("input", "opaque", "index") for r in raws):
                if any(r.kind == "static" and self.params_in(r.fxnode) for r in raws):
                    # an op we do not understand combines the input with parameters: its
                    # parameters' symmetries are unknown, never silently dropped
                    return self.unknown(n, args_l, kwargs_l, out_r,
                                        "no handler for this op (it reads parameters)")
                return _opaque_like(out_r, n)
            if all(r.kind == "static" for r in raws):
                return _static_like(out_r, n)
            return _opaque_like(out_r, n)
        if handler is None:
            return self.unknown(n, args_l, kwargs_l, out_r, "no handler for this op")
        try:
            if module is not None:
                return handler(self, module, self.prefix + str(n.target), args_l, kwargs_l,
                               args_r, kwargs_r, out_r)
            return handler(self, n, args_l, kwargs_l, args_r, kwargs_r, out_r)
        except Unsupported as exc:
            return self.unknown(n, args_l, kwargs_l, out_r, str(exc))

    def find_handler(self, root, n: fx.Node):
        if n.op == "call_module":
            m = root.get_submodule(str(n.target))
            return handler_for_module(m), m
        if n.op == "call_function":
            return FUNCTIONS.get(n.target), None
        if n.op == "call_method":
            return METHODS.get(str(n.target)), None
        return None, None

    def unknown(self, n: fx.Node, args_l, kwargs_l, out_r, reason: str):
        target = _target_name(n, self.sub_root)
        self.unsupported.append(UnsupportedOp(self.prefix + n.name, self.module_path(), target,
                                              reason))
        for v in _flat_values(args_l) + _flat_values(kwargs_l):
            if isinstance(v, (Feat, Split)):
                self.pin(v.node, f"read by unsupported {target} at {self.prefix + n.name}")
        if n.op == "call_module":
            m = self.sub_root.get_submodule(str(n.target))
            for k, _ in m.named_parameters():
                self.fixed_use(f"{self.prefix}{n.target}.{k}", f"read by unsupported {target}")
        for v in _flat_values(args_l) + _flat_values(kwargs_l):
            if isinstance(v, Raw) and v.kind == "static":
                for k in self.params_in(v.fxnode):
                    self.fixed_use(k, f"read by unsupported {target}")
        return _opaque_like(out_r, n)

    def params_in(self, n: Any) -> list[str]:
        """Canonical keys of the parameters a static value is computed from."""
        out: list[str] = []
        stack, seen = [n], set()
        while stack:
            x = stack.pop()
            if not isinstance(x, fx.Node) or x in seen:
                continue
            seen.add(x)
            if x in self.param_nodes:
                out.append(self.param_nodes[x])
            stack.extend(x.all_input_nodes)
        return out

    # ------------------------------------------------------------------ submodules
    def call_submodule(self, module: nn.Module, qual: str, inputs_low: list, inputs_real: list
                       ) -> tuple[Any, Any]:
        """Lower ``module(*inputs)`` (a leaf handler's child such as GINConv.nn)."""
        h = handler_for_module(module)
        with torch.no_grad():
            out_r = module(*inputs_real)
        if h is not None:
            saved = self.node
            try:
                return h(self, module, qual, inputs_low, {}, inputs_real, {}, out_r), out_r
            except Unsupported as exc:
                self.unsupported.append(UnsupportedOp(qual, qual, type(module).__name__,
                                                      str(exc)))
                for v in inputs_low:
                    if isinstance(v, Feat):
                        self.pin(v.node, f"read by unsupported {type(module).__name__}")
                return _opaque_like(out_r, None), out_r
            finally:
                self.node = saved
        graph, root, forced = trace(module, len(inputs_real), is_leaf)
        for q, why in forced.items():
            self.forced[_qual_key(qual, q)] = why
        saved_node = self.node
        try:
            return self.run_graph(root, graph, qual + "." if qual else "", inputs_low,
                                  inputs_real)
        finally:
            self.node = saved_node


_RAW_HANDLERS: set = set()  # function handlers that accept raw inputs (layers with weights)


_BROADCAST_METHODS = {"expand", "expand_as", "broadcast_to", "contiguous", "clone", "to",
                      "float", "type_as"}


def _unsupported_module_reason(m) -> str:
    mp = _pyg_message_passing()
    if mp is not None and isinstance(m, mp):
        return "message passing layer without a handler"
    from torch.nn.utils import parametrize

    if m is not None and parametrize.is_parametrized(m):
        return "parametrized module (torch.nn.utils.parametrize)"
    if m is not None and has_hooks(m):
        return "module with forward hooks (e.g. weight_norm)"
    return "module could not be traced or has no handler"


def _target_name(n: fx.Node, root) -> str:
    if n.op == "call_module":
        try:
            return type(root.get_submodule(str(n.target))).__name__
        except AttributeError:
            return str(n.target)
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    t = n.target
    if isinstance(t, torch._ops.OpOverload):  # an ATen op from torch.export without a rewrite
        return str(t)
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{mod}.{name}" if mod else name


def _live_nodes(graph: fx.Graph) -> set:
    live: set = set()
    stack = [n for n in graph.nodes if n.op == "output"]
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(n.all_input_nodes)
    return live


def _flat_values(x) -> list:
    out: list = []
    if isinstance(x, (list, tuple)):
        for v in x:
            out.extend(_flat_values(v))
    elif isinstance(x, dict):
        for v in x.values():
            out.extend(_flat_values(v))
    elif isinstance(x, slice):
        out.extend(_flat_values([x.start, x.stop, x.step]))
    else:
        out.append(x)
    return out


def _has_tensor(x) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    return False


def _opaque_like(out_r, n):
    if isinstance(out_r, torch.Tensor):
        if out_r.is_floating_point():
            return Raw("opaque", n, n.name if n is not None else "opaque")
        return Raw("index", n, n.name if n is not None else "index")
    if isinstance(out_r, (list, tuple)):
        return type(out_r)(_opaque_like(v, n) for v in out_r) if not hasattr(out_r, "_fields") \
            else tuple(_opaque_like(v, n) for v in out_r)
    return None


def _static_like(out_r, n):
    if isinstance(out_r, torch.Tensor):
        return Raw("static", n, n.name)
    if isinstance(out_r, (list, tuple)):
        return tuple(_static_like(v, n) for v in out_r)
    return None


# ============================================================================ handlers
def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _qual_key(qual: str, leaf: str) -> str:
    return f"{qual}.{leaf}" if qual else leaf


# ---------------------------------------------------------------- linear / conv (modules)
@module_handler(nn.Linear)
def _m_linear(L: Lowerer, m: nn.Linear, qual, al, kl, ar, kr, out):
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
    module_handler(_pyg_linear_cls())(_m_linear)


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


@module_handler(nn.Conv1d, nn.Conv2d)
def _m_conv(L: Lowerer, m, qual, al, kl, ar, kr, out):
    if m.padding_mode != "zeros" and m.padding_mode not in ("reflect", "replicate", "circular"):
        raise Unsupported(f"padding mode {m.padding_mode}")
    eff = plain_weight(_qual_key(qual, "weight"), m.weight)
    bias = "trainable" if m.bias is not None else None
    attrs = {"kernel_size": list(m.kernel_size), "stride": list(m.stride),
             "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
             "dims": len(m.kernel_size)}
    return _conv(L, qual, al[0], ar[0], eff, bias, _qual_key(qual, "bias"), m.groups, out, attrs)


@function_handler(F.linear)
def _f_linear(L: Lowerer, n, al, kl, ar, kr, out):
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


@function_handler(F.conv1d, F.conv2d)
def _f_conv(L: Lowerer, n, al, kl, ar, kr, out):
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


@function_handler(operator.matmul, torch.matmul, torch.mm)
def _f_matmul(L: Lowerer, n, al, kl, ar, kr, out):
    a, b = al[0], al[1]
    a_ok = isinstance(a, Feat) or (isinstance(a, Raw) and a.kind in ("input", "opaque"))
    if a_ok and isinstance(b, Raw) and b.kind == "static" and ar[1].dim() == 2:
        x = L.feat(a, ar[0], -1)
        eff = L.weight(b, n.args[1])  # layout (in, out): the layer uses its transpose
        eff = _transpose_eff(eff)
        return L.dense(_module_of(L, n) or n.name, "linear", x, eff, eff.shape[0], out,
                       out.dim() - 1)
    raise Unsupported("matrix product of features (not a weight)")


def _transpose_eff(eff: EffectiveWeight) -> EffectiveWeight:
    t = (lambda z: None if z is None else z.t())
    return EffectiveWeight(eff.key, (eff.shape[1], eff.shape[0]), t(eff.mask), t(eff.fixed),
                           t(eff.offset), not eff.transposed, eff.buffers)


# ---------------------------------------------------------------- norms
@module_handler(nn.BatchNorm1d, nn.BatchNorm2d)
def _m_bn(L: Lowerer, m, qual, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0], 1)
    f = L.elementwise(qual, "batchnorm", x, out, role="norm", attrs={"affine": m.affine})
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        if getattr(m, leaf, None) is not None:
            L.record(_qual_key(qual, leaf), (f.node,))
    return f


@function_handler(F.batch_norm)
def _f_bn(L: Lowerer, n, al, kl, ar, kr, out):
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


@module_handler(nn.InstanceNorm1d, nn.InstanceNorm2d)
def _m_instance_norm(L: Lowerer, m, qual, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0], 1)
    f = L.elementwise(qual, "instancenorm", x, out, role="norm", attrs={"affine": m.affine})
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        if getattr(m, leaf, None) is not None:
            L.record(_qual_key(qual, leaf), (f.node,))
    return f


@module_handler(nn.LayerNorm)
def _m_ln(L: Lowerer, m: nn.LayerNorm, qual, al, kl, ar, kr, out):
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


@function_handler(F.layer_norm)
def _f_ln(L: Lowerer, n, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0], -1 if isinstance(al[0], Raw) else None)
    shape = _arg(ar, kr, 1, "normalized_shape")
    shape = [shape] if isinstance(shape, int) else list(shape)
    first = ar[0].dim() - len(shape)
    if x.cdim < first:
        raise Unsupported("layer_norm does not normalise over the channel axis")
    f = L.elementwise(_module_of(L, n) or n.name, "layernorm", x, out, role="norm")
    axes = tuple(f.node if first + i == x.cdim else None for i in range(len(shape)))
    for i, nm in ((2, "weight"), (3, "bias")):
        arg = _arg(n.args, n.kwargs, i, nm)
        if arg is not None:
            if not isinstance(arg, fx.Node) or arg.op != "get_attr":
                raise Unsupported("layer_norm affine parameters are not plain tensors")
            key = L.prefix + str(arg.target)
            L.record(key, axes, constant=key not in L.params)
    return f


@module_handler(nn.GroupNorm)
def _m_gn(L: Lowerer, m: nn.GroupNorm, qual, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0], 1)
    f = L.elementwise(qual, "groupnorm", x, out, role="norm",
                      attrs={"groups": m.num_groups, "affine": m.affine})
    if m.affine:
        L.record(_qual_key(qual, "weight"), (f.node,))
        L.record(_qual_key(qual, "bias"), (f.node,))
    return f


@function_handler(F.group_norm)
def _f_gn(L: Lowerer, n, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0], 1)
    groups = int(_arg(ar, kr, 1, "num_groups"))
    f = L.elementwise(_module_of(L, n) or n.name, "groupnorm", x, out, role="norm",
                      attrs={"groups": groups})
    for i, nm in ((2, "weight"), (3, "bias")):
        _record_vector(L, _arg(n.args, n.kwargs, i, nm), f.node)
    return f


# ---------------------------------------------------------------- activations
_ACT_MODULES = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
    nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", nn.SELU: "selu", nn.Mish: "mish",
    nn.Softplus: "softplus", nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax",
    nn.Hardtanh: "hardtanh", nn.CELU: "celu", nn.GLU: None, nn.Softsign: "softsign",
    nn.Tanhshrink: "tanhshrink",
}


def _act_module(L: Lowerer, m, qual, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0])
    fn = _ACT_MODULES.get(type(m)) or type(m).__name__.lower()
    return L.elementwise(qual, "activation", x, out, attrs={"fn": fn})


for _cls, _fn in _ACT_MODULES.items():
    if _fn is not None:
        module_handler(_cls)(_act_module)


@module_handler(nn.PReLU)
def _m_prelu(L: Lowerer, m: nn.PReLU, qual, al, kl, ar, kr, out):
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


@function_handler(*_ACT_FUNCS)
def _f_act(L: Lowerer, n, al, kl, ar, kr, out):
    _tensor_only_first(al, n)
    x = L.feat(al[0], ar[0])
    return L.elementwise(n.name, "activation", x, out, attrs={"fn": _ACT_FUNCS[n.target]})


@method_handler(*_ACT_METHODS)
def _meth_act(L: Lowerer, n, al, kl, ar, kr, out):
    _tensor_only_first(al, n)
    x = L.feat(al[0], ar[0])
    return L.elementwise(n.name, "activation", x, out, attrs={"fn": _ACT_METHODS[n.target]})


# ---------------------------------------------------------------- identity-like
@module_handler(nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
def _m_alias(L: Lowerer, m, qual, al, kl, ar, kr, out):
    return al[0]


@function_handler(F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, torch.clone)
def _f_alias(L: Lowerer, n, al, kl, ar, kr, out):
    return al[0]


@method_handler("contiguous", "clone", "detach", "float", "double", "half", "to", "type_as",
                "requires_grad_", "type", "bfloat16", "cpu", "cuda")
def _meth_alias(L: Lowerer, n, al, kl, ar, kr, out):
    if not isinstance(out, torch.Tensor) or not isinstance(ar[0], torch.Tensor) or \
            out.shape != ar[0].shape:
        raise Unsupported("conversion changes the shape")
    return al[0]


# ---------------------------------------------------------------- layout
def reshape_map(in_shape: tuple, out_shape: tuple, cdim: int):
    """How the channel axis survives a reshape: ('alias', new_cdim), ('merge', new_cdim,
    index, colour) or None (the channel axis is split)."""
    c = in_shape[cdim]
    s_in = math.prod(in_shape[cdim + 1:])
    before = math.prod(in_shape[:cdim])
    for k in range(len(out_shape)):
        if (out_shape[k] == c and math.prod(out_shape[k + 1:]) == s_in
                and math.prod(out_shape[:k]) == before):
            return ("alias", k)
    for k in range(len(out_shape)):
        inner = math.prod(out_shape[k + 1:])
        if inner == 0 or s_in % inner or (inner * out_shape[k]) % (s_in * c):
            continue
        j = np.arange(out_shape[k], dtype=np.int64) * inner
        index = (j // s_in) % c
        colour = (j // (s_in * c)) * s_in + (j % s_in)
        return ("merge", k, index, colour)
    return None


def _reshape(L: Lowerer, base: str, x_low, x_real, out):
    ins, outs = tuple(x_real.shape), tuple(out.shape)
    if isinstance(x_low, Split):  # merging (heads, head_dim) back into channels
        h, d = x_low.haxis, x_low.daxis
        size = L.size(Feat(x_low.node, 0))
        lo, hi = min(h, d), max(h, d)
        if hi == lo + 1:
            for k in range(len(outs)):
                if (outs[k] == size and math.prod(outs[:k]) == math.prod(ins[:lo])
                        and math.prod(outs[k + 1:]) == math.prod(ins[hi + 1:])):
                    if d == h + 1:
                        return Feat(x_low.node, k)
                    # (head_dim, heads) order: a fixed channel shuffle (ShuffleNet)
                    heads = x_low.heads
                    dh = size // heads
                    j = np.arange(size)
                    index = (j % heads) * dh + j // heads
                    name = L.add_node(base, "shuffle", [x_low.node], size, out, k)
                    L.ir.add_map_edge(x_low.node, name, index)
                    return Feat(name, k)
        raise Unsupported("reshape of split channels")
    if not isinstance(x_low, Feat):
        return x_low
    m = reshape_map(ins, outs, x_low.cdim)
    if m is None:
        c = ins[x_low.cdim]
        for k in range(len(outs) - 1):  # channels split into (heads, head_dim)
            if (outs[k] * outs[k + 1] == c and math.prod(outs[:k]) == math.prod(ins[:x_low.cdim])
                    and math.prod(outs[k + 2:]) == math.prod(ins[x_low.cdim + 1:])):
                return Split(x_low.node, k, k + 1, outs[k])
        raise Unsupported("reshape splits the channel axis")
    if m[0] == "alias":
        return Feat(x_low.node, m[1])
    _, k, index, colour = m
    name = L.add_node(base, "flatten", [x_low.node], len(index), out, k)
    L.ir.node(name)["unit_colour"] = colour.astype(np.int64)
    L.ir.add_map_edge(x_low.node, name, index)
    return Feat(name, k)


@module_handler(nn.Flatten, nn.Unflatten)
def _m_flatten(L: Lowerer, m, qual, al, kl, ar, kr, out):
    return _reshape(L, qual, al[0], ar[0], out)


@function_handler(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten)
def _f_reshape(L: Lowerer, n, al, kl, ar, kr, out):
    _tensor_only_first(al, n)
    return _reshape(L, n.name, al[0], ar[0], out)


@method_handler("view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as",
                "reshape_as")
def _meth_reshape(L: Lowerer, n, al, kl, ar, kr, out):
    return _reshape(L, n.name, al[0], ar[0], out)


def _perm_dims(L, n, ar, kr) -> list[int]:
    x = ar[0]
    nd = x.dim()
    name = n.target if n.op == "call_method" else n.target.__name__
    if name == "permute":
        dims = ar[1] if len(ar) == 2 and isinstance(ar[1], (list, tuple)) else \
            (ar[1:] if len(ar) > 1 else kr["dims"])
        return [d % nd for d in dims]
    if name in ("transpose", "swapaxes", "swapdims"):
        a, b = (ar[1], ar[2]) if len(ar) >= 3 else (kr.get("dim0"), kr.get("dim1"))
        p = list(range(nd))
        p[a % nd], p[b % nd] = p[b % nd], p[a % nd]
        return p
    if name == "t":
        return list(range(nd))[::-1]
    if name == "movedim":
        src, dst = ar[1], ar[2]
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        return _movedim_perm(nd, src, dst)
    raise Unsupported(f"unknown permutation {name}")


def _movedim_perm(nd: int, src: list[int], dst: list[int]) -> list[int]:
    probe = torch.empty([2 + i for i in range(nd)])
    moved = torch.movedim(probe, src, dst)
    return [list(probe.shape).index(s) for s in moved.shape]


@function_handler(torch.permute, torch.transpose, torch.swapaxes, torch.movedim, torch.t)
def _f_permute(L: Lowerer, n, al, kl, ar, kr, out):
    if isinstance(al[0], Split):
        p = _perm_dims(L, n, ar, kr)
        x = al[0]
        return Split(x.node, p.index(x.haxis), p.index(x.daxis), x.heads)
    if not isinstance(al[0], Feat):
        return al[0]
    p = _perm_dims(L, n, ar, kr)
    return Feat(al[0].node, p.index(al[0].cdim))


@method_handler("permute", "transpose", "swapaxes", "swapdims", "movedim", "t")
def _meth_permute(L: Lowerer, n, al, kl, ar, kr, out):
    return _f_permute(L, n, al, kl, ar, kr, out)


@method_handler("expand", "expand_as", "broadcast_to", "repeat")
def _meth_expand(L: Lowerer, n, al, kl, ar, kr, out):
    x = al[0]
    if not isinstance(x, Feat):
        return x
    new = x.cdim + out.dim() - ar[0].dim()
    if out.shape[new] == ar[0].shape[x.cdim]:
        return Feat(x.node, new)
    if ar[0].shape[x.cdim] == 1:
        name = L.add_node(n.name, "broadcast", [x.node], out.shape[new], out, new)
        L.ir.add_map_edge(x.node, name, np.zeros(out.shape[new], dtype=np.int64))
        return Feat(name, new)
    raise Unsupported("repeats the channel axis")


def _channel_slice(L: Lowerer, base: str, x: Feat, index: np.ndarray, out, cdim: int) -> Feat:
    size = L.size(x)
    if len(index) == size and np.array_equal(index, np.arange(size)):
        return Feat(x.node, cdim)
    name = L.add_node(base, "slice", [x.node], len(index), out, cdim)
    L.ir.add_map_edge(x.node, name, index)
    return Feat(name, cdim)


@function_handler(operator.getitem)
def _f_getitem(L: Lowerer, n, al, kl, ar, kr, out):
    x, idx = al[0], ar[1]
    if isinstance(x, (tuple, list)):
        return x[idx]
    if not isinstance(x, Feat):
        raise Unsupported("indexing")
    xr = ar[0]
    nd = xr.dim()
    comps = list(idx) if isinstance(idx, tuple) else [idx]
    if any(c is Ellipsis for c in comps):
        i = comps.index(Ellipsis)
        used = sum(1 for c in comps if c is not None and c is not Ellipsis)
        comps = comps[:i] + [slice(None)] * (nd - used) + comps[i + 1:]
    cdim = x.cdim
    basic = all(c is None or isinstance(c, (int, slice)) for c in comps)
    if basic:
        in_pos = out_pos = 0
        new_cdim, chan = None, None
        for c in comps:
            if c is None:
                out_pos += 1
                continue
            if in_pos == cdim:
                if isinstance(c, int):
                    raise Unsupported("selects a single channel")
                new_cdim, chan = out_pos, c
            in_pos += 1
            if isinstance(c, slice):
                out_pos += 1
        if new_cdim is None:
            new_cdim = out_pos + (cdim - in_pos)
        index = np.arange(L.size(x))
        if chan is not None:
            index = index[chan]
        return _channel_slice(L, n.name, x, index, out, new_cdim)
    # advanced indexing: supported when the channel axis and everything after it is untouched
    touched = [i for i, c in enumerate(comps) if c is not None]
    pos = 0
    for c in comps:
        if c is None:
            continue
        width = c.dim() if isinstance(c, torch.Tensor) and c.dtype == torch.bool else 1
        if pos + width - 1 >= cdim and not (isinstance(c, slice) and c == slice(None)):
            raise Unsupported("advanced indexing of the channel axis")
        pos += width
    del touched
    return Feat(x.node, out.dim() - (nd - cdim))


def _split(L: Lowerer, n, x_low, x_real, outs, dim: int):
    if not isinstance(x_low, Feat):
        return _opaque_like(outs, n)
    dim = dim % x_real.dim()
    if dim != x_low.cdim:
        return tuple(Feat(x_low.node, x_low.cdim) for _ in outs)
    res, offset = [], 0
    for i, o in enumerate(outs):
        k = o.shape[dim]
        res.append(_channel_slice(L, f"{n.name}.{i}", x_low, np.arange(offset, offset + k), o,
                                  dim))
        offset += k
    return tuple(res)


@function_handler(torch.chunk, torch.split, torch.unbind)
def _f_split(L: Lowerer, n, al, kl, ar, kr, out):
    name = n.target.__name__
    dim = _arg(ar, kr, 2 if name != "unbind" else 1, "dim", 0)
    if name == "unbind":
        if isinstance(al[0], Feat) and dim % ar[0].dim() == al[0].cdim:
            raise Unsupported("unbinds the channel axis")
        return tuple(Feat(al[0].node, al[0].cdim - (1 if dim % ar[0].dim() < al[0].cdim else 0))
                     for _ in out) if isinstance(al[0], Feat) else _opaque_like(out, n)
    return _split(L, n, al[0], ar[0], out, dim)


@method_handler("chunk", "split")
def _meth_split(L: Lowerer, n, al, kl, ar, kr, out):
    dim = _arg(ar, kr, 2, "dim", 0)
    return _split(L, n, al[0], ar[0], out, dim)


@function_handler(F.pad)
def _f_pad(L: Lowerer, n, al, kl, ar, kr, out):
    x = al[0]
    if not isinstance(x, Feat):
        return _opaque_like(out, n)
    pad = list(_arg(ar, kr, 1, "pad"))
    nd = ar[0].dim()
    pos = nd - 1 - x.cdim  # pad pairs start at the last axis
    if 2 * pos + 1 >= len(pad) or (pad[2 * pos] == 0 and pad[2 * pos + 1] == 0):
        return Feat(x.node, x.cdim)
    lo, hi = pad[2 * pos], pad[2 * pos + 1]
    mode = _arg(ar, kr, 2, "mode", "constant")
    if mode != "constant" or lo < 0 or hi < 0:
        raise Unsupported("non-constant padding of the channel axis")
    size = L.size(x)
    index = np.concatenate([np.full(lo, -1), np.arange(size), np.full(hi, -1)])
    name = L.add_node(n.name, "pad_channels", [x.node], len(index), out, x.cdim,
                      attrs={"pad_lo": lo, "pad_hi": hi})
    L.ir.add_map_edge(x.node, name, index)
    return Feat(name, x.cdim)


# ---------------------------------------------------------------- cat / stack
@function_handler(torch.cat, torch.concat, torch.stack)
def _f_cat(L: Lowerer, n, al, kl, ar, kr, out):
    items_l, items_r = list(al[0]), list(ar[0])
    dim = _arg(ar, kr, 1, "dim", 0)
    stack = n.target is torch.stack
    feats = [v for v in items_l if isinstance(v, Feat)]
    if not feats:
        return _opaque_like(out, n) if any(isinstance(v, Raw) and v.kind != "static"
                                           for v in items_l) else _static_like(out, n)
    nd = items_r[0].dim()
    cdim = feats[0].cdim
    if any(f.cdim != cdim for f in feats):
        raise Unsupported("concatenated tensors carry channels on different axes")
    mats = [L.feat(v, r, cdim) for v, r in zip(items_l, items_r)]
    base = _module_of(L, n) or n.name
    if stack:
        d = dim % (nd + 1)
        new = cdim + (1 if d <= cdim else 0)
        return _tie(L, base, "stack", mats, out, new)
    d = dim % nd
    if d != cdim:
        return _tie(L, base, "cat", mats, out, cdim)
    total = sum(L.size(f) for f in mats)
    name = L.add_node(base, "concat", [f.node for f in mats], total, out, cdim)
    offset = 0
    for i, f in enumerate(mats):
        index = np.full(total, -1)
        index[offset:offset + L.size(f)] = np.arange(L.size(f))
        L.ir.add_map_edge(f.node, name, index, i)
        offset += L.size(f)
    return Feat(name, cdim)


def _tie(L: Lowerer, base: str, op: str, feats: list[Feat], out, cdim: int) -> Feat:
    sizes = {L.size(f) for f in feats}
    if len(sizes) != 1:
        raise Unsupported("operands have different channel counts")
    name = L.add_node(base, op, [f.node for f in feats], sizes.pop(), out, cdim,
                      role="residual" if op == "add" else "hidden")
    for i, f in enumerate(feats):
        if f.node in [g.node for g in feats[:i]]:
            continue  # x + x: one edge
        L.identity(f.node, name, i)
    return Feat(name, cdim)


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
    splits = [v for v in al[:2] if isinstance(v, Split)]
    if splits:  # scaling split heads by a python scalar (q * d ** -0.5): same units
        if len(splits) == 1 and all(isinstance(r, (int, float)) for r in ar[:2]
                                    if not isinstance(r, torch.Tensor)) and \
                sum(isinstance(r, torch.Tensor) for r in ar[:2]) == 1:
            return splits[0]
        raise Unsupported("arithmetic on split attention heads")
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
    for v, r in operands:
        if not isinstance(r, torch.Tensor):
            continue  # python scalar: channel-uniform
        ax = axis - (nd - r.dim())
        if isinstance(v, Feat):
            if v.cdim != ax:
                raise Unsupported("operands carry channels on different axes")
            if r.shape[ax] == size:
                ties.append(v)
            else:  # a single unit broadcast over the channels
                name = L.add_node(f"{n.name}.bcast", "broadcast", [v.node], size, out, axis)
                L.ir.add_map_edge(v.node, name, np.zeros(size, dtype=np.int64))
                ties.append(Feat(name, axis))
            continue
        if ax < 0 or r.dim() == 0 or r.shape[ax] == 1:
            if isinstance(v, Raw) and v.kind == "static":
                _record_static_params(L, v, ())
            continue  # channel-uniform operand (scalar, per-position mask, ...)
        ties.append(L.feat(v, r, ax))
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


@function_handler(*[k for k in _BINARY])
def _f_binary(L: Lowerer, n, al, kl, ar, kr, out):
    if n.target is torch.where:
        raise Unsupported("where() of features")
    if kl.get("alpha") not in (None, 1) and isinstance(kl.get("alpha"), (Feat, Raw)):
        raise Unsupported("tensor alpha")
    return _binary(L, n, _BINARY[n.target], list(al) + [kl.get("other")],
                   list(ar) + [kr.get("other")], out)


@method_handler(*_BINARY_METHODS)
def _meth_binary(L: Lowerer, n, al, kl, ar, kr, out):
    return _binary(L, n, _BINARY_METHODS[n.target], list(al) + [kl.get("other")],
                   list(ar) + [kr.get("other")], out)


# ---------------------------------------------------------------- pooling / reductions
_POOL_MODULES = {nn.MaxPool1d: "maxpool", nn.MaxPool2d: "maxpool", nn.AvgPool1d: "avgpool",
                 nn.AvgPool2d: "avgpool", nn.AdaptiveAvgPool1d: "avgpool",
                 nn.AdaptiveAvgPool2d: "avgpool", nn.AdaptiveMaxPool1d: "maxpool",
                 nn.AdaptiveMaxPool2d: "maxpool"}


def _m_pool(L: Lowerer, m, qual, al, kl, ar, kr, out):
    if isinstance(out, tuple):
        raise Unsupported("pooling with indices")
    x = L.feat(al[0], ar[0], 1)
    return L.elementwise(qual, _POOL_MODULES[type(m)], x, out)


for _cls in _POOL_MODULES:
    module_handler(_cls)(_m_pool)


_POOL_FUNCS = {F.max_pool1d: "maxpool", F.max_pool2d: "maxpool", F.avg_pool1d: "avgpool",
               F.avg_pool2d: "avgpool", F.adaptive_avg_pool1d: "avgpool",
               F.adaptive_avg_pool2d: "avgpool", F.adaptive_max_pool1d: "maxpool",
               F.adaptive_max_pool2d: "maxpool", torch.max_pool2d: "maxpool",
               torch.avg_pool1d: "avgpool", torch.max_pool1d: "maxpool"}


@function_handler(*_POOL_FUNCS)
def _f_pool(L: Lowerer, n, al, kl, ar, kr, out):
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
    if not isinstance(x, Feat):
        return _opaque_like(out, n)
    nd = ar[0].dim()
    dim = _arg(ar[1:], kr, 0, "dim", None) if name != "norm" else kr.get("dim")
    if name == "norm" and len(ar) > 2:
        dim = ar[2]
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


@function_handler(torch.mean, torch.sum, torch.amax, torch.amin, torch.max, torch.min,
                  torch.logsumexp, torch.std, torch.var, torch.norm)
def _f_reduce(L: Lowerer, n, al, kl, ar, kr, out):
    if len(ar) >= 2 and isinstance(ar[1], torch.Tensor):
        return _binary(L, n, "binary", al, ar, out)
    return _reduce(L, n, al, kl, ar, kr, out, n.target.__name__)


@method_handler(*_REDUCE)
def _meth_reduce(L: Lowerer, n, al, kl, ar, kr, out):
    if len(ar) >= 2 and isinstance(ar[1], torch.Tensor):
        return _binary(L, n, "binary", al, ar, out)
    return _reduce(L, n, al, kl, ar, kr, out, n.target)


# ---------------------------------------------------------------- embedding
def _embedding(L: Lowerer, base: str, ids_low, eff: EffectiveWeight, out) -> Feat:
    if isinstance(ids_low, Feat) or (isinstance(ids_low, Raw) and ids_low.kind == "static"):
        raise Unsupported("embedding indices are features")
    vocab, dim = eff.shape
    vname = L.add_node(f"{base}.vocab", "input", [], vocab, torch.zeros(1, vocab), 1,
                       role="input")
    L.ir.inputs.append(vname)
    t = _transpose_eff(eff)  # IR layout (out=dim, in=vocab)
    f = L.dense(base, "embedding", Feat(vname, 1), t, dim, out, out.dim() - 1)
    return f


@module_handler(nn.Embedding)
def _m_embedding(L: Lowerer, m: nn.Embedding, qual, al, kl, ar, kr, out):
    eff = plain_weight(_qual_key(qual, "weight"), m.weight)
    return _embedding(L, qual, al[0], eff, out)


@function_handler(F.embedding)
def _f_embedding(L: Lowerer, n, al, kl, ar, kr, out):
    eff = L.weight(_arg(al, kl, 1, "weight"), _arg(n.args, n.kwargs, 1, "weight"))
    if eff.transposed:
        raise Unsupported("transposed embedding table")
    return _embedding(L, _module_of(L, n) or n.name, al[0], eff, out)


# ---------------------------------------------------------------- attention
def _linear_from(L: Lowerer, base: str, x: Feat, weight: torch.Tensor, key: str | None,
                 bias: Any, real_out: torch.Tensor) -> Feat:
    eff = plain_weight(key, weight) if key else plain_weight(None, weight)
    return L.dense(base, "linear", x, eff, weight.shape[0], real_out, real_out.dim() - 1,
                   bias=bias)


@module_handler(nn.MultiheadAttention)
def _m_mha(L: Lowerer, m: nn.MultiheadAttention, qual, al, kl, ar, kr, out):
    if m.bias_k is not None or m.add_zero_attn:
        raise Unsupported("add_bias_kv / add_zero_attn")
    names = ("query", "key", "value")
    xs_l = [_arg(al, kl, i, nm) for i, nm in enumerate(names)]
    xs_r = [_arg(ar, kr, i, nm) for i, nm in enumerate(names)]
    xs = [L.feat(v, r, -1) for v, r in zip(xs_l, xs_r)]
    e = m.embed_dim
    attn_out = out[0]
    q_real = attn_out  # same (.., T, E) layout as the projections
    k = _qual_key
    b_in = m.in_proj_bias is not None
    if m._qkv_same_embed_dim:
        if len({x.node for x in xs}) != 1:
            raise Unsupported("packed in_proj with different query/key/value inputs")
        nodes = []
        for i, tag in enumerate("qkv"):
            real_i = xs_r[i].new_empty(xs_r[i].shape[:-1] + (e,))
            f = _linear_from(L, _qual_key(qual, tag), xs[i], m.in_proj_weight[i * e:(i + 1) * e],
                             None, "trainable" if b_in else None, real_i)
            nodes.append(f.node)
        packed = tuple(nodes)
        # undo the per-slice records made by dense() (key None): record the packed tensors
        L.record(k(qual, "in_proj_weight"), (packed, xs[0].node))
        if b_in:
            L.record(k(qual, "in_proj_bias"), (packed,))
    else:
        nodes = []
        for i, tag in enumerate("qkv"):
            w = getattr(m, f"{tag}_proj_weight")
            real_i = xs_r[i].new_empty(xs_r[i].shape[:-1] + (e,))
            f = _linear_from(L, _qual_key(qual, tag), xs[i], w, k(qual, f"{tag}_proj_weight"),
                             "trainable" if b_in else None, real_i)
            nodes.append(f.node)
        if b_in:
            raise Unsupported("separate q/k/v projections with a packed bias")
    shapes = {L.ir.node(nd)["shape"] for nd in nodes}
    if len(shapes) != 1:
        raise Unsupported("cross-attention with different query / key lengths")
    att = L.add_node(_qual_key(qual, "attn"), "attention", nodes, e, q_real, q_real.dim() - 1,
                     attrs={"heads": m.num_heads})
    for i, nd in enumerate(nodes):
        L.ir.add_attention_edge(nd, att, i)
    o = L.dense(_qual_key(qual, "out_proj"), "linear", Feat(att, q_real.dim() - 1),
                plain_weight(k(qual, "out_proj.weight"), m.out_proj.weight), e, attn_out,
                attn_out.dim() - 1, bias="trainable" if m.out_proj.bias is not None else None,
                bias_key=k(qual, "out_proj.bias"))
    weights = Raw("opaque", None, _qual_key(qual, "weights")) if out[1] is not None else None
    return (o, weights)


def _apply_act(L: Lowerer, act, qual: str, x: Feat, real: torch.Tensor):
    if isinstance(act, nn.Module):
        low, out = L.call_submodule(act, _qual_key(qual, "activation"), [x], [real])
        return low, out
    fn = {F.relu: "relu", F.gelu: "gelu"}.get(act)
    if fn is None:
        raise Unsupported("activation function of the transformer layer")
    out = act(real)
    return L.elementwise(_qual_key(qual, "activation"), "activation", x, out, attrs={"fn": fn}), out


@module_handler(nn.TransformerEncoderLayer)
def _m_encoder_layer(L: Lowerer, m: nn.TransformerEncoderLayer, qual, al, kl, ar, kr, out):
    src_l, src_r = _arg(al, kl, 0, "src"), _arg(ar, kr, 0, "src")
    mask = [_arg(ar, kr, 1, "src_mask"), _arg(ar, kr, 2, "src_key_padding_mask")]
    x = L.feat(src_l, src_r, -1)

    def sub(mod, name, inputs_l, inputs_r, **kw):
        if kw:
            with torch.no_grad():
                o = mod(*inputs_r, **kw)
            h = handler_for_module(mod)
            return h(L, mod, _qual_key(qual, name), inputs_l, kw, inputs_r, kw, o), o
        return L.call_submodule(mod, _qual_key(qual, name), inputs_l, inputs_r)

    def sa(h_l, h_r):
        (o_l, _), (o_r, _) = sub(m.self_attn, "self_attn", [h_l, h_l, h_l], [h_r, h_r, h_r],
                                 attn_mask=mask[0], key_padding_mask=mask[1],
                                 need_weights=False)
        return o_l, o_r

    def ff(h_l, h_r):
        a_l, a_r = sub(m.linear1, "linear1", [h_l], [h_r])
        a_l, a_r = _apply_act(L, m.activation, qual, a_l, a_r)
        return sub(m.linear2, "linear2", [a_l], [a_r])

    def add(a_l, a_r, b_l, b_r, tag):
        o_r = a_r + b_r
        return _tie(L, _qual_key(qual, tag), "add", [a_l, b_l], o_r, o_r.dim() - 1), o_r

    h_l, h_r = x, src_r
    if m.norm_first:
        n_l, n_r = sub(m.norm1, "norm1", [h_l], [h_r])
        s_l, s_r = sa(n_l, n_r)
        h_l, h_r = add(h_l, h_r, s_l, s_r, "add1")
        n_l, n_r = sub(m.norm2, "norm2", [h_l], [h_r])
        f_l, f_r = ff(n_l, n_r)
        h_l, h_r = add(h_l, h_r, f_l, f_r, "add2")
    else:
        s_l, s_r = sa(h_l, h_r)
        h_l, h_r = add(h_l, h_r, s_l, s_r, "add1")
        h_l, h_r = sub(m.norm1, "norm1", [h_l], [h_r])
        f_l, f_r = ff(h_l, h_r)
        h_l, h_r = add(h_l, h_r, f_l, f_r, "add2")
        h_l, h_r = sub(m.norm2, "norm2", [h_l], [h_r])
    return h_l


@module_handler(nn.TransformerEncoder)
def _m_encoder(L: Lowerer, m: nn.TransformerEncoder, qual, al, kl, ar, kr, out):
    h_l, h_r = _arg(al, kl, 0, "src"), _arg(ar, kr, 0, "src")
    mask, kpm = _arg(ar, kr, 1, "mask"), _arg(ar, kr, 2, "src_key_padding_mask")
    for i, layer in enumerate(m.layers):
        with torch.no_grad():
            o = layer(h_r, src_mask=mask, src_key_padding_mask=kpm)
        h_l = _m_encoder_layer(L, layer, _qual_key(qual, f"layers.{i}"), [h_l, mask, kpm], {},
                               [h_r, mask, kpm], {}, o)
        h_r = o
    if m.norm is not None:
        h_l, h_r = L.call_submodule(m.norm, _qual_key(qual, "norm"), [h_l], [h_r])
    return h_l


@function_handler(F.scaled_dot_product_attention)
def _f_sdpa(L: Lowerer, n, al, kl, ar, kr, out):
    q, k, v = (_arg(al, kl, i, nm) for i, nm in enumerate(("query", "key", "value")))
    if not all(isinstance(t, Split) for t in (q, k, v)):
        raise Unsupported("q, k, v are not (batch, heads, tokens, head_dim) projections")
    nd = out.dim()
    for t in (q, k, v):
        if t.haxis != nd - 3 or t.daxis != nd - 1 or t.heads != q.heads:
            raise Unsupported("unexpected head layout")
    if any(isinstance(x, (Feat, Split)) for x in _flat_values(list(al[3:]) + list(kl.values()))):
        raise Unsupported("attention mask computed from features")
    if _arg(ar, kr, 7, "enable_gqa", False):
        raise Unsupported("grouped-query attention")
    nodes = [q.node, k.node, v.node]
    shapes = {L.ir.node(x)["shape"] for x in nodes}
    if len(shapes) != 1:
        raise Unsupported("cross-attention with different query / key lengths")
    size = L.ir.node(q.node)["size"]
    base = _module_of(L, n) or n.name
    att = L.unique(_qual_key(base, "attn") if base != n.name else n.name)
    src = L.ir.node(q.node)
    L.ir.add_node(att, "attention", nodes, size, src["shape"], src["layout"],
                  attrs={"heads": q.heads}, source=(L.where(),))
    for i, x in enumerate(nodes):
        L.ir.add_attention_edge(x, att, i)
    return Split(att, q.haxis, q.daxis, q.heads)


# ---------------------------------------------------------------- torch-geometric
def _pyg_classes() -> dict:
    try:
        from torch_geometric.nn import GCNConv, GINConv, SAGEConv
    except Exception:  # pragma: no cover
        return {}
    return {"gin": GINConv, "gcn": GCNConv, "sage": SAGEConv}


def _aggr(L: Lowerer, base: str, x: Feat, real: torch.Tensor, kind: str) -> Feat:
    op = {"add": "sum_aggr", "sum": "sum_aggr", "mean": "mean_aggr", "max": "max_aggr"}.get(kind)
    if op is None:
        raise Unsupported(f"aggregation '{kind}'")
    return L.elementwise(base, op, x, real, attrs={"aggr": kind})


def _scatter(x: torch.Tensor, ei: torch.Tensor, reduce: str) -> torch.Tensor:
    from torch_geometric.utils import scatter

    return scatter(x[ei[0]], ei[1], dim=0, dim_size=x.shape[0], reduce=reduce)


def _pyg_x(al, ar):
    if isinstance(ar[0], (tuple, list)):
        raise Unsupported("bipartite (pair) node features")
    if not isinstance(ar[1], torch.Tensor):
        raise Unsupported("sparse adjacency")
    return al[0], ar[0], ar[1]


def _m_gin(L: Lowerer, m, qual, al, kl, ar, kr, out):
    x_l, x_r, ei = _pyg_x(al, ar)
    x = L.feat(x_l, x_r, 1)
    agg_r = _scatter(x_r, ei, "sum")
    a = _aggr(L, _qual_key(qual, "aggr"), x, agg_r, getattr(m, "aggr", "add"))
    h_r = agg_r + (1 + m.eps) * x_r
    h = _tie(L, _qual_key(qual, "add"), "add", [a, x], h_r, 1)
    L.fixed_use(_qual_key(qual, "eps"), "GIN's scalar epsilon")
    low, _ = L.call_submodule(m.nn, _qual_key(qual, "nn"), [h], [h_r])
    return low


def _m_gcn(L: Lowerer, m, qual, al, kl, ar, kr, out):
    x_l, x_r, ei = _pyg_x(al, ar)
    x = L.feat(x_l, x_r, 1)
    lin_r = m.lin(x_r)
    h = _linear_from(L, _qual_key(qual, "lin"), x, m.lin.weight, _qual_key(qual, "lin.weight"),
                     "trainable" if m.lin.bias is not None else None, lin_r)
    if m.lin.bias is not None:
        L.record(_qual_key(qual, "lin.bias"), (h.node,))
    a = _aggr(L, _qual_key(qual, "aggr"), h, out, "add")
    if m.bias is not None:
        L.ir.node(a.node)["bias"] = "trainable"
        L.record(_qual_key(qual, "bias"), (a.node,))
    return a


def _m_sage(L: Lowerer, m, qual, al, kl, ar, kr, out):
    x_l, x_r, ei = _pyg_x(al, ar)
    if m.project:
        raise Unsupported("SAGEConv(project=True)")
    if not isinstance(m.aggr, str):
        raise Unsupported("SAGEConv with an aggregation module")
    x = L.feat(x_l, x_r, 1)
    agg_r = _scatter(x_r, ei, "sum" if m.aggr == "add" else m.aggr)
    a = _aggr(L, _qual_key(qual, "aggr"), x, agg_r, m.aggr)
    ol = m.lin_l(agg_r)
    left = _linear_from(L, _qual_key(qual, "lin_l"), a, m.lin_l.weight,
                        _qual_key(qual, "lin_l.weight"),
                        "trainable" if m.lin_l.bias is not None else None, ol)
    if m.lin_l.bias is not None:
        L.record(_qual_key(qual, "lin_l.bias"), (left.node,))
    h, h_r = left, ol
    if m.root_weight:
        orr = m.lin_r(x_r)
        right = _linear_from(L, _qual_key(qual, "lin_r"), x, m.lin_r.weight,
                             _qual_key(qual, "lin_r.weight"),
                             "trainable" if m.lin_r.bias is not None else None, orr)
        if m.lin_r.bias is not None:
            L.record(_qual_key(qual, "lin_r.bias"), (right.node,))
        h_r = ol + orr
        h = _tie(L, _qual_key(qual, "add"), "add", [left, right], h_r, 1)
    if m.normalize:
        h = L.elementwise(_qual_key(qual, "normalize"), "activation", h, out,
                          attrs={"fn": "normalize"})
    return h


for _k, _fn in (("gin", _m_gin), ("gcn", _m_gcn), ("sage", _m_sage)):
    _c = _pyg_classes().get(_k)
    if _c is not None:
        module_handler(_c)(_fn)


def _pyg_pools() -> dict:
    try:
        from torch_geometric.nn import pool
    except Exception:  # pragma: no cover
        return {}
    return {getattr(pool, n): n.split("_")[1] for n in
            ("global_add_pool", "global_mean_pool", "global_max_pool") if hasattr(pool, n)}


def _f_graph_pool(L: Lowerer, n, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0], 1)
    kind = _pyg_pools()[n.target]
    return L.elementwise(n.name, "global_max_pool" if kind == "max" else "global_avg_pool", x,
                         out, attrs={"kind": f"graph_{kind}"})


for _t in _pyg_pools():
    function_handler(_t)(_f_graph_pool)


_RAW_HANDLERS.update({_f_linear, _f_conv, _f_matmul, _f_embedding, _f_bn, _f_ln, _f_gn})


# ============================================================================ entry point
def lower(module: nn.Module, example_inputs: tuple, name: str | None = None,
          tracer: str = "auto") -> Lowered:
    """Trace ``module`` (in eval mode) and lower it on ``example_inputs``.

    ``tracer``: ``"auto"`` (torch.fx; ``torch.export`` when the root cannot be fx-traced),
    ``"fx"`` (torch.fx only) or ``"export"`` (``torch.export`` only)."""
    from asymspec.audit.trace import TraceFailure, export_trace

    if tracer not in ("auto", "fx", "export"):
        raise ValueError(f"tracer must be 'auto', 'fx' or 'export', not {tracer!r}")
    name = name or type(module).__name__
    L = Lowerer(module, name)
    inputs_real = list(example_inputs)
    inputs_low = []
    for i, t in enumerate(inputs_real):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            inputs_low.append(Raw("input", None, f"input{i}" if len(inputs_real) > 1 else "input"))
        elif isinstance(t, torch.Tensor):
            inputs_low.append(Raw("index", None, f"input{i}"))
        else:
            inputs_low.append(None)
    if has_hooks(module):
        L.unsupported.append(UnsupportedOp("<root>", "", type(module).__name__,
                                           "module with forward hooks (e.g. weight_norm)"))
        return _finish(L, None, inputs_low, inputs_real)
    if tracer != "export" and handler_for_module(module) is not None:  # a handled layer
        out_low, _ = L.call_submodule(module, "", inputs_low, inputs_real)
        return _finish(L, out_low, inputs_low, inputs_real)
    why = ""
    if tracer != "export":
        try:
            graph, root, forced = trace(module, len(inputs_real), is_leaf)
        except TraceFailure as exc:
            why = f"torch.fx: {exc}"
        else:
            L.forced.update(forced)
            out_low, _ = L.run_graph(root, graph, "", inputs_low, inputs_real)
            return _finish(L, out_low, inputs_low, inputs_real)
    if tracer != "fx":
        try:
            graph, root = export_trace(module, tuple(inputs_real), is_leaf)
            out_low, _ = L.run_graph(root, graph, "", inputs_low, inputs_real)
            return _finish(L, out_low, inputs_low, inputs_real)
        except Exception as exc:  # never let the fallback break the audit: all unknown
            msg = str(exc) if isinstance(exc, TraceFailure) else \
                f"torch.export graph: {type(exc).__name__}: {str(exc)[:200]}"
            why = f"{why}; {msg}" if why else msg
            L = Lowerer(module, name)
    L.unsupported.append(UnsupportedOp("<root>", "", type(module).__name__,
                                       f"could not be traced: {why}"))
    return _finish(L, None, inputs_low, inputs_real)


def _finish(L: Lowerer, out_low, inputs_low, inputs_real) -> Lowered:
    for v in _flat_values(out_low):
        if isinstance(v, (Feat, Split)):
            nd = L.ir.node(v.node)
            if nd["role"] not in ("input",):
                nd["role"] = "output"
            if v.node not in L.ir.outputs:
                L.ir.outputs.append(v.node)
    # a parameter read somewhere no handler modelled: its symmetries are unknown
    for key, where in L.read_params.items():
        if key not in L.tensor_uses and key not in L.fixed_uses:
            L.unsupported.append(UnsupportedOp(where, "", key, "parameter read by an operation "
                                               "the lowering does not model"))
            L.fixed_uses[key] = ("read by an unsupported operation", where, "")
    # a tensor some use must not permute: pin every node it is used along elsewhere.  Pins
    # keep reported symmetries real but may hide some (the fixed use might be invariant), so
    # each is listed: the verdict is then unknown / a lower bound, never a false proof
    for key, (why, where, module) in L.fixed_uses.items():
        nodes = [a for axes in L.tensor_uses.get(key, ()) for a in axes if a is not None]
        if not nodes:
            continue
        for axes in L.tensor_uses[key]:
            L.pin_axes(axes, f"tensor '{key}' is also {why}")
        if not why.startswith("read by unsupported"):
            L.unsupported.append(UnsupportedOp(where, module, key, f"parameter also used as a "
                                               f"{why}; that use is treated as fixed"))
    # keys never seen by a handler are not permuted; record them so the table is complete;
    # every name of a tied tensor gets the canonical name's axes
    state = set(L.root.state_dict().keys())
    for k in sorted(state):
        c = L.key(k)
        L.tensor_axes.setdefault(c, ())
        L.tensor_axes[k] = L.tensor_axes[c]
    L.ir.g.graph["tied_keys"] = {k: L.key(k) for k in sorted(state) if L.key(k) != k}
    L.ir.g.graph["tensor_uses"] = {k: list(u) for k, u in L.tensor_uses.items() if len(u) > 1}
    L.ir.g.graph["tensor_axes"] = L.tensor_axes
    L.ir.g.graph["constant_keys"] = sorted(L.constant_keys)
    L.ir.g.graph["grouped_tensors"] = dict(L.grouped)
    return Lowered(L.ir, L.unsupported, L.tensor_axes, L.constant_keys, state)


def _torchvision_stochastic_depth():
    try:
        from torchvision.ops.stochastic_depth import stochastic_depth
    except Exception:  # pragma: no cover
        return None
    return stochastic_depth


def _f_stochastic_depth(L: Lowerer, n, al, kl, ar, kr, out):
    training = _arg(ar, kr, 3, "training", True)
    p = _arg(ar, kr, 1, "p", 0.0)
    if training and p > 0:
        raise Unsupported("stochastic depth in training mode")
    return al[0]  # identity in eval mode


if _torchvision_stochastic_depth() is not None:
    function_handler(_torchvision_stochastic_depth())(_f_stochastic_depth)


# ---------------------------------------------------------------- spatial resampling
@module_handler(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def _m_upsample(L: Lowerer, m, qual, al, kl, ar, kr, out):
    x = L.feat(al[0], ar[0], 1)
    return L.elementwise(qual, "upsample", x, out)


@function_handler(F.interpolate, F.upsample)
def _f_upsample(L: Lowerer, n, al, kl, ar, kr, out):
    _tensor_only_first(al, n)
    x = L.feat(al[0], ar[0], 1)
    return L.elementwise(n.name, "upsample", x, out)


@function_handler(torch.roll, torch.flip)
def _f_roll(L: Lowerer, n, al, kl, ar, kr, out):
    """Shifting / flipping along non-channel axes is channel-wise: the same node."""
    x = al[0]
    if not isinstance(x, Feat):
        return _opaque_like(out, n)
    is_roll = n.target is torch.roll or n.target == "roll"
    dims = _arg(ar, kr, 2 if is_roll else 1, "dims")
    if dims is None:
        raise Unsupported("roll over the flattened tensor")
    dims = [dims] if isinstance(dims, int) else list(dims)
    if any(d % ar[0].dim() == x.cdim for d in dims):
        raise Unsupported("shifts the channel axis")
    return Feat(x.node, x.cdim)


@method_handler("roll", "flip")
def _meth_roll(L: Lowerer, n, al, kl, ar, kr, out):
    return _f_roll(L, n, al, kl, ar, kr, out)


def _torchvision_patch_merging_pad():
    try:
        from torchvision.models.swin_transformer import _patch_merging_pad
    except Exception:  # pragma: no cover
        return None
    return _patch_merging_pad


def _f_patch_merging_pad(L: Lowerer, n, al, kl, ar, kr, out):
    """Swin: pads H, W of a (..., H, W, C) tensor to even sizes; newer torchvision also
    concatenates the four 2x2 sub-grids along channels (output unit j = channel j % C of
    sub-grid j // C: one map edge, the sub-grid as unit colour, like a flatten)."""
    x = al[0]
    c = ar[0].shape[-1]
    if not isinstance(x, Feat) or x.cdim != ar[0].dim() - 1 or out.shape[-1] % c:
        raise Unsupported("patch merging of a non channel-last tensor")
    if out.shape[-1] == c:
        return Feat(x.node, x.cdim)
    j = np.arange(out.shape[-1])
    name = L.add_node(n.name, "patch_merge", [x.node], len(j), out, out.dim() - 1)
    L.ir.node(name)["unit_colour"] = (j // c).astype(np.int64)
    L.ir.add_map_edge(x.node, name, j % c)
    return Feat(name, out.dim() - 1)


if _torchvision_patch_merging_pad() is not None:
    function_handler(_torchvision_patch_merging_pad())(_f_patch_merging_pad)


# ---------------------------------------------------------------- scatter aggregations
def _m_asymspec_aggregate(L: Lowerer, m, qual, al, kl, ar, kr, out):
    """asymspec's own ``Aggregate`` op: neighbourhood aggregation over ``edge_index``."""
    x = L.feat(al[0], ar[0], 1)
    return _aggr(L, qual, x, out, m.aggr)


def _f_scatter(L: Lowerer, n, al, kl, ar, kr, out):
    """torch_geometric.utils.scatter(src, index, dim, dim_size, reduce): channel-wise when
    ``dim`` is not the channel axis."""
    x = al[0]
    if not isinstance(x, Feat):
        return _opaque_like(out, n)
    dim = _arg(ar, kr, 2, "dim", 0) % ar[0].dim()
    if dim == x.cdim or isinstance(_arg(al, kl, 1, "index"), (Feat, Split)):
        raise Unsupported("scatter along the channel axis / by feature values")
    reduce = _arg(ar, kr, 4, "reduce", "sum")
    if reduce not in ("sum", "add", "mean", "max", "min"):
        raise Unsupported(f"scatter reduce '{reduce}'")
    return L.elementwise(n.name, "max_aggr" if reduce in ("max", "min") else
                         ("mean_aggr" if reduce == "mean" else "sum_aggr"), x, out,
                         attrs={"aggr": reduce})


def _register_scatter() -> None:
    try:
        from asymspec.nn.ops import Aggregate

        module_handler(Aggregate)(_m_asymspec_aggregate)
    except Exception:  # pragma: no cover
        pass
    try:
        from torch_geometric.utils import scatter

        function_handler(scatter)(_f_scatter)
    except Exception:  # pragma: no cover
        pass


_register_scatter()
