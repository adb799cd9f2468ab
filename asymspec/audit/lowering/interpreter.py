"""The lowering itself: :class:`Lowerer` holds the IR being built and the bookkeeping (tensor
axes, ties, pins, unsupported ops); :class:`GraphLowering` walks an fx graph; :func:`lower` is the
entry point (torch.fx first, ``torch.export`` as a fallback).  Op handlers live in
:mod:`asymspec.audit.lowering.handlers`, looked up through
:mod:`asymspec.audit.lowering.registry`."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.registry import (
    FUNCTIONS,
    METHODS,
    RAW,
    _unsupported_module_reason,
    handler_for_module,
    has_hooks,
    is_leaf,
)
from asymspec.audit.lowering.values import (
    Feat,
    Lowered,
    Packed,
    Raw,
    Split,
    Unsupported,
    UnsupportedOp,
    _dead_writes,
    _flat_values,
    _has_tensor,
    _layout,
    _live_nodes,
    _opaque_like,
    _qual_key,
    _static_like,
    _target_name,
)
from asymspec.audit.params import (
    AffineEvaluator,
    EffectiveWeight,
    NotAffine,
    effective_weight,
)
from asymspec.audit.trace import trace
from asymspec.ir.graph import IRGraph
from asymspec.ir.units import float_bits


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
        self.placement = None  # asymspec.audit.meta.MetaPlacement when parameters are on meta

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
        while src not in self.param_nodes and isinstance(src, fx.Node) and src.args \
                and isinstance(src.args[0], fx.Node) and (
                    src.op == "call_method" and src.target in _BROADCAST_METHODS
                    or _is_singleton_view(src, self.real)):
            # class_token.expand(n, -1, -1), gamma.reshape(1, -1, 1, 1): the parameter
            src = src.args[0]
        if src in self.param_nodes:
            key = self.param_nodes[src]
            p = self.real[src]
            ax = cdim - (real.dim() - p.dim())
            if p.dim() == 1 and p.shape[0] == size and real.numel() == size:
                ax = 0  # a vector viewed with singleton axes around it
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
        """Lower ``graph`` (whose attributes live on ``root``), node names prefixed by
        ``prefix``; returns the lowered and the concrete outputs."""
        saved = (self.prefix, self.node, self.real, self.param_nodes, self.buffer_nodes,
                 self.sub_root)
        self.prefix = prefix
        self.sub_root = root
        self.param_nodes = {}
        self.buffer_nodes = {}
        run = GraphLowering(self, root, graph, inputs_low)
        env: dict[fx.Node, Any] = {}
        self.real = env  # concrete values, read by the parameter-expression evaluator
        try:
            with torch.no_grad():
                out_real = run.run(*inputs_real, initial_env=env, enable_io_processing=False)
            return run.out_low, out_real
        finally:
            (self.prefix, self.node, self.real, self.param_nodes, self.buffer_nodes,
             self.sub_root) = saved

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
        feats = [v for v in flat if isinstance(v, (Feat, Split, Packed))]
        raws = [v for v in flat if isinstance(v, Raw)]
        handler, module = self.find_handler(root, n)
        if handler is None and n.op == "call_module":
            why = self.forced.get(self.prefix + str(n.target))
            why = f"could not be traced ({why})" if why else _unsupported_module_reason(module)
            return self.unknown(n, args_l, kwargs_l, out_r, why)
        if n.target is operator.getitem and isinstance(args_l[0], (tuple, list)):
            return args_l[0][args_r[1]]
        if not feats and n.op != "call_module" and handler not in RAW:
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
        qual = self.prefix + str(n.target) if module is not None else ""
        try:
            return handler(Call(self, n, args_l, kwargs_l, args_r, kwargs_r, out_r, module, qual))
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
            for part in (v.parts if isinstance(v, Packed) else [v]):
                if isinstance(part, (Feat, Split)):
                    self.pin(part.node, f"read by unsupported {target} at {self.prefix + n.name}")
        if n.op == "call_module":
            m = self.sub_root.get_submodule(str(n.target))
            for k, _ in m.named_parameters():
                self.fixed_use(f"{self.prefix}{n.target}.{k}", f"read by unsupported {target}")
        for v in _flat_values(args_l) + _flat_values(kwargs_l):
            if isinstance(v, Raw) and v.kind == "static":
                for k in self.params_in(v.fxnode):
                    self.fixed_use(k, f"read by unsupported {target}")
        return _opaque_like(out_r, n)

    @staticmethod
    def ancestors(n: Any) -> Iterator[fx.Node]:
        """``n`` and every fx node it is computed from, each once (depth first)."""
        stack, seen = [n], set()
        while stack:
            x = stack.pop()
            if not isinstance(x, fx.Node) or x in seen:
                continue
            seen.add(x)
            yield x
            stack.extend(x.all_input_nodes)

    def params_in(self, n: Any) -> list[str]:
        """Canonical keys of the parameters a static value is computed from."""
        return [self.param_nodes[x] for x in self.ancestors(n) if x in self.param_nodes]

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
                call = Call(self, self.node, inputs_low, {}, inputs_real, {}, out_r, module, qual)
                return h(call), out_r
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


def _is_singleton_view(n: fx.Node, real: dict) -> bool:
    """``reshape`` / ``view`` / ``unsqueeze`` that only adds or removes size-1 axes."""
    name = n.target if n.op == "call_method" else getattr(n.target, "__name__", "")
    if name not in ("reshape", "view", "unsqueeze", "squeeze", "_unsafe_view"):
        return False
    a, b = real.get(n.args[0]), real.get(n)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    return [d for d in a.shape if d != 1] == [d for d in b.shape if d != 1]


_BROADCAST_METHODS = {"expand", "expand_as", "broadcast_to", "contiguous", "clone", "to",
                      "float", "type_as"}


class GraphLowering(fx.Interpreter):
    """Runs an fx graph on the example inputs (a :class:`torch.fx.Interpreter`) and lowers each
    live node as it goes: the concrete values give every shape and every static value, the
    :class:`Lowerer` turns the node into IR.  Dead nodes (unused results, export's guard
    function) are neither run nor lowered, so they can never be reported as unsupported."""

    def __init__(self, lowerer: Lowerer, root: nn.Module, graph: fx.Graph, inputs_low: list
                 ) -> None:
        super().__init__(root, garbage_collect_values=False, graph=graph)
        self.lowerer = lowerer
        self.low: dict[fx.Node, Any] = {}
        self.dead_writes = _dead_writes(graph)
        self.live = _live_nodes(graph, self.dead_writes)
        self.inputs_low = list(inputs_low)
        self.out_low: Any = None
        self._next_input = 0

    # parameters on the meta device (asymspec.audit.meta): each op runs where its operands are
    def call_function(self, target, args, kwargs):
        if self.lowerer.placement is not None:
            args, kwargs = self.lowerer.placement.args(target, args, kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if self.lowerer.placement is not None:
            args, kwargs = self.lowerer.placement.args(target, args, kwargs)
        return super().call_method(target, args, kwargs)

    def call_module(self, target, args, kwargs):
        if self.lowerer.placement is not None:
            args, kwargs = self.lowerer.placement.module_args(
                self.fetch_attr(target), args, kwargs)
        return super().call_module(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        if n.op == "placeholder":  # always run: placeholders consume the inputs in order
            i, self._next_input = self._next_input, self._next_input + 1
            self.low[n] = self.inputs_low[i] if i < len(self.inputs_low) else None
            return super().run_node(n)
        if n not in self.live:
            return None
        L = self.lowerer
        L.node = n
        real = super().run_node(n)
        if n.op == "output":
            self.out_low = fx.node.map_arg(n.args[0], lambda a: self.low[a])
        elif n in self.dead_writes:  # never modelled: what it writes is read elsewhere
            args_l = fx.node.map_arg(n.args, lambda a: self.low[a])
            kwargs_l = fx.node.map_arg(n.kwargs, lambda a: self.low[a])
            self.low[n] = L.unknown(n, args_l, kwargs_l, real, "in-place write whose result is "
                                    "not used (the written tensor is read later)")
        else:
            args_r, kwargs_r = self.fetch_args_kwargs_from_env(n)
            self.low[n] = L.lower_node(self.module, n, self.low, args_r, kwargs_r, real)
        return real


# ============================================================================ entry point
def lower(module: nn.Module, example_inputs: tuple, name: str | None = None,
          tracer: str = "auto", placement: Any = None) -> Lowered:
    """Trace ``module`` (in eval mode) and lower it on ``example_inputs``.

    ``tracer``: ``"auto"`` (torch.fx; ``torch.export`` when the root cannot be fx-traced),
    ``"fx"`` (torch.fx only) or ``"export"`` (``torch.export`` only).  ``placement``: a
    :class:`asymspec.audit.meta.MetaPlacement` when the parameters are on the meta device."""
    from asymspec.audit.trace import TraceFailure, export_trace

    if tracer not in ("auto", "fx", "export"):
        raise ValueError(f"tracer must be 'auto', 'fx' or 'export', not {tracer!r}")
    name = name or type(module).__name__
    L = Lowerer(module, name)
    L.placement = placement
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
            L.placement = placement
    L.unsupported.append(UnsupportedOp("<root>", "", type(module).__name__,
                                       f"could not be traced: {why}"))
    return _finish(L, None, inputs_low, inputs_real)


def _finish(L: Lowerer, out_low, inputs_low, inputs_real) -> Lowered:
    for v in _flat_values(out_low):
        if isinstance(v, Packed):
            v = v.parts[0]  # pragma: no cover - a packed tensor as model output is unusual
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
    for k, c in L.ir.g.graph["tied_keys"].items():
        if c in L.grouped:
            L.grouped[k] = L.grouped[c]
    L.ir.g.graph["tensor_uses"] = {k: list(u) for k, u in L.tensor_uses.items() if len(u) > 1}
    L.ir.g.graph["tensor_axes"] = L.tensor_axes
    L.ir.g.graph["constant_keys"] = sorted(L.constant_keys)
    L.ir.g.graph["grouped_tensors"] = dict(L.grouped)
    return Lowered(L.ir, L.unsupported, L.tensor_axes, L.constant_keys, state)
