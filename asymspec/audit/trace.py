"""Tracing a module into a ``torch.fx`` graph the lowering understands.

The tracer stops at modules :mod:`asymspec.audit.lowering` has a handler for (``nn.Linear``,
``nn.Conv2d``, norms, activations, ``nn.MultiheadAttention``, torch-geometric convolutions, ...)
and traces through everything else.  A submodule whose ``forward`` cannot be traced (data-dependent
control flow, iteration over a proxy, ...) is kept as an opaque leaf instead of failing the whole
trace; the lowering then reports it as an unsupported op (its units become fixed points), so a
trace failure never turns into a silent verdict.

If even the root module cannot be traced (Python control flow on tensor shapes, ``len(x)``, ...),
:func:`trace` raises :class:`TraceFailure` and the lowering falls back to :func:`export_trace`:
``torch.export.export(module, inputs, strict=False).module()``, an fx graph of ATen overloads
whose parameters / buffers are ``get_attr`` nodes with their original qualified names (shape
branches are specialised to the example inputs, which is what the audit runs on).
:func:`normalise_aten` rewrites the ATen overloads with an exact torch-level equivalent
(``aten.linear.default`` -> ``F.linear``, ``aten.batch_norm.default`` -> ``F.batch_norm`` with its
arguments reordered, ``aten.slice.Tensor`` -> indexing, ...) so the lowering's existing handlers
produce the same IR; every other ATen op keeps its overload as target, has no handler and is
reported as unsupported.  If export fails too, the audit reports the whole model as unknown.
"""

from __future__ import annotations

import inspect
import operator
import time
from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn


class TraceFailure(Exception):
    """The root module could not be traced by torch.fx."""


# seconds spent tracing (torch.fx and torch.export, summed over calls): the benchmark and the
# meta audit report tracing apart from lowering; reset by whoever reads it
STATS: dict[str, float] = {"trace_s": 0.0}


def _pyg_autowrap() -> tuple[Callable, ...]:
    try:
        from torch_geometric.nn import pool
    except Exception:  # pragma: no cover - torch-geometric is a dependency
        return ()
    out = []
    try:
        from torch_geometric.utils import scatter

        out.append(scatter)
    except Exception:  # pragma: no cover
        pass
    for name in ("global_add_pool", "global_mean_pool", "global_max_pool"):
        fn = getattr(pool, name, None)
        if fn is not None:
            out.append(fn)
    return tuple(out)


class AuditTracer(fx.Tracer):
    """``is_leaf(module)`` decides leaves; untraceable submodules become leaves (recorded)."""

    def __init__(self, is_leaf: Callable[[nn.Module], bool]) -> None:
        super().__init__(autowrap_functions=_pyg_autowrap())
        self._is_leaf = is_leaf
        self.forced_leaves: dict[str, str] = {}  # qualname -> why tracing into it failed

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.forced_leaves or self._is_leaf(m)

    def call_module(self, m, forward, args, kwargs):
        qual = self.path_of_module(m)
        if self.is_leaf_module(m, qual):
            return super().call_module(m, forward, args, kwargs)
        stack = dict(self.module_stack)
        calls = dict(self.num_calls)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:  # untraceable submodule: keep it opaque
            self.module_stack.clear()
            self.module_stack.update(stack)
            self.num_calls.clear()
            self.num_calls.update(calls)
            self.forced_leaves[qual] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            return super().call_module(m, forward, args, kwargs)


def _fixed_arity(module: nn.Module, n: int) -> nn.Module:
    """A shallow copy of a ``forward(*args)`` module whose forward takes ``n`` named inputs
    (fx needs them); parameters and submodules are shared, names are unchanged."""
    import copy

    names = ", ".join(f"x{i}" for i in range(n))
    ns: dict = {"_orig": type(module).forward}
    exec(f"def forward(self, {names}):\n    return _orig(self, {names})\n", ns)  # noqa: S102
    cls = type(type(module).__name__, (type(module),), {"forward": ns["forward"]})
    clone = copy.copy(module)
    clone.__class__ = cls
    return clone


def needs_wrapper(module: nn.Module) -> bool:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())


def trace(module: nn.Module, n_inputs: int, is_leaf: Callable[[nn.Module], bool]
          ) -> tuple[fx.Graph, nn.Module, dict[str, str]]:
    """Trace ``module``; returns (graph, the root it refers to, forced leaves and why)."""
    import copy

    # fx stores tensors computed at trace time (``self.mask.bool()``) as attributes of the
    # root: trace a shallow copy so the user's module is never modified
    root = _fixed_arity(module, n_inputs) if needs_wrapper(module) else copy.copy(module)
    tracer = AuditTracer(is_leaf)
    t0 = time.perf_counter()
    try:
        graph = tracer.trace(root)
    except Exception as exc:
        raise TraceFailure(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    finally:
        STATS["trace_s"] += time.perf_counter() - t0
    return graph, root, dict(tracer.forced_leaves)


# ----------------------------------------------------------------------------- torch.export
def export_trace(module: nn.Module, example_inputs: tuple,
                 is_leaf: Callable[[nn.Module], bool] | None = None
                 ) -> tuple[fx.Graph, nn.Module]:
    """``torch.export`` (non-strict) ``module`` on ``example_inputs``; returns (graph, root) with
    ATen ops normalised by :func:`normalise_aten`.  Raises :class:`TraceFailure`."""
    t0 = time.perf_counter()
    try:
        gm = torch.export.export(module, tuple(example_inputs), strict=False).module()
    except Exception as exc:
        raise TraceFailure(f"torch.export: {type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
                           ) from exc
    finally:
        STATS["trace_s"] += time.perf_counter() - t0
    try:
        normalise_aten(gm.graph, module, is_leaf)
    except Exception as exc:  # pragma: no cover - a rewrite bug must not break the audit
        raise TraceFailure(f"normalising the exported graph: {type(exc).__name__}: {exc}"
                           ) from exc
    return gm.graph, gm


def _fn(target, order=None, kw=(), drop=()):
    """Rewrite to ``target`` with positional arguments taken in ``order`` (indices into the ATen
    arguments, missing trailing ones dropped) and ATen kwargs named in ``kw`` kept.  An argument
    neither in ``order`` nor in ``drop`` (irrelevant in eval: cudnn flags, gradient options,
    dtypes) keeps the ATen op (unsupported)."""

    def rewrite(n: fx.Node) -> None:
        if any(k not in kw and k not in _HARMLESS_KWARGS for k in n.kwargs):
            return  # an argument passed by keyword we would drop: leave it unsupported
        args = list(n.args)
        if order is not None:
            if any(i not in order and i not in drop for i in range(len(args))):
                return  # a trailing argument the torch-level function does not take
            args = [args[i] for i in order if i < len(args)]
        n.args = tuple(args)
        n.kwargs = {k: v for k, v in n.kwargs.items() if k in kw}
        n.target = target
    return rewrite


_HARMLESS_KWARGS = {"dtype", "memory_format", "layout", "device", "pin_memory"}


def _method(name: str):
    def rewrite(n: fx.Node) -> None:
        n.op, n.target = "call_method", name
    return rewrite


def _ndim(n) -> int | None:
    val = n.meta.get("val") if isinstance(n, fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def _slice(n: fx.Node) -> None:  # aten.slice.Tensor(x, dim=0, start=None, end=None, step=1)
    x, dim, start, end, step = list(n.args) + [0, None, None, 1][len(n.args) - 1:]
    nd = _ndim(x)
    if n.kwargs or not isinstance(dim, int) or nd is None:
        return
    n.args = (x, (slice(None),) * (dim % nd) + (slice(start, end, step),))
    n.target = operator.getitem


def _select(n: fx.Node) -> None:  # aten.select.int(x, dim, index)
    x, dim, index = n.args
    nd = _ndim(x)
    if n.kwargs or not isinstance(dim, int) or nd is None:
        return
    n.args = (x, (slice(None),) * (dim % nd) + (index,))
    n.target = operator.getitem


def _constant_pad(n: fx.Node) -> None:  # aten.constant_pad_nd(x, pad, value=0)
    x, pad = n.args[:2]
    value = n.args[2] if len(n.args) > 2 else n.kwargs.get("value", 0)
    n.args, n.kwargs, n.target = (x, pad, "constant", value), {}, F.pad


def _bn_no_training(n: fx.Node) -> None:
    """``_native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)`` returns
    (out, save_mean, save_invstd); when only ``out`` is used it is ``F.batch_norm`` in eval."""
    users = list(n.users)
    if not all(u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0
               for u in users):
        return
    x, w, b, mean, var, momentum, eps = n.args
    n.args, n.kwargs, n.target = (x, mean, var, w, b, False, momentum, eps), {}, F.batch_norm
    for u in users:
        u.replace_all_uses_with(n)


def _inplace(rw):
    """An in-place ATen op (``x.add_(y)``) is its out-of-place form when nothing reads the
    mutated tensor afterwards (other than through the op's result); otherwise it is left alone
    (unsupported)."""

    def rewrite(n: fx.Node) -> None:
        x = n.args[0] if n.args else None
        if not isinstance(x, fx.Node) or x.op in ("placeholder", "get_attr"):
            return
        order = {m: i for i, m in enumerate(n.graph.nodes)}
        if any(order[u] > order[n] for u in x.users if u is not n):
            return
        rw(n)
    return rewrite


def _aten_rewrites() -> dict:
    a = torch.ops.aten
    r: dict = {}

    def add(name: str, overloads: tuple, rw) -> None:
        for nm, fn in ((name, rw), (name + "_", _inplace(rw))):  # relu_, add_.Tensor, ...
            pkt = getattr(a, nm, None)
            for o in overloads:
                op = getattr(pkt, o, None) if pkt is not None else None
                if op is not None and op not in r:
                    r[op] = fn

    add("linear", ("default",), _fn(F.linear))
    add("conv1d", ("default", "padding"), _fn(F.conv1d))
    add("conv2d", ("default", "padding"), _fn(F.conv2d))
    # aten.batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn) vs
    # F.batch_norm(x, mean, var, w, b, training, momentum, eps)
    add("batch_norm", ("default",), _fn(F.batch_norm, (0, 3, 4, 1, 2, 5, 6, 7), drop=(8,)))
    add("_native_batch_norm_legit_no_training", ("default",), _bn_no_training)
    add("layer_norm", ("default",), _fn(F.layer_norm, (0, 1, 2, 3, 4), drop=(5,)))
    add("group_norm", ("default",), _fn(F.group_norm, (0, 1, 2, 3, 4), drop=(5,)))
    for name, fn in (("relu", torch.relu), ("relu_", torch.relu), ("sigmoid", torch.sigmoid),
                     ("tanh", torch.tanh), ("silu", F.silu), ("hardswish", F.hardswish),
                     ("hardsigmoid", F.hardsigmoid), ("exp", torch.exp), ("log", torch.log),
                     ("abs", torch.abs), ("sqrt", torch.sqrt), ("rsqrt", torch.rsqrt),
                     ("neg", torch.neg), ("erf", torch.erf), ("sin", torch.sin),
                     ("cos", torch.cos), ("square", torch.square), ("mish", F.mish)):
        add(name, ("default",), _fn(fn, (0,)))
    add("gelu", ("default",), _fn(F.gelu, (0,), kw=("approximate",)))
    add("pow", ("Tensor_Scalar",), _fn(torch.pow, (0, 1)))
    add("leaky_relu", ("default",), _fn(F.leaky_relu, (0, 1)))
    add("hardtanh", ("default",), _fn(F.hardtanh, (0, 1, 2)))
    add("clamp", ("default",), _fn(torch.clamp, (0, 1, 2)))
    add("softmax", ("int",), _fn(torch.softmax, (0, 1), drop=(2,)))
    add("_softmax", ("default",), _fn(torch.softmax, (0, 1), drop=(2,)))
    add("log_softmax", ("int",), _fn(torch.log_softmax, (0, 1), drop=(2,)))
    add("_log_softmax", ("default",), _fn(torch.log_softmax, (0, 1), drop=(2,)))
    add("dropout", ("default",), _fn(F.dropout, (0, 1, 2)))
    for name in ("clone", "alias", "detach", "lift_fresh_copy"):
        add(name, ("default",), _fn(torch.clone, (0,)))
    add("contiguous", ("default",), _method("contiguous"))
    add("add", ("Tensor", "Scalar"), _fn(torch.add, (0, 1), kw=("alpha",)))
    add("sub", ("Tensor", "Scalar"), _fn(torch.sub, (0, 1), kw=("alpha",)))
    add("rsub", ("Scalar", "Tensor"), _fn(torch.rsub, (0, 1), kw=("alpha",)))
    add("mul", ("Tensor", "Scalar"), _fn(torch.mul, (0, 1)))
    add("div", ("Tensor", "Scalar"), _fn(torch.div, (0, 1)))
    add("where", ("self",), _fn(torch.where, (0, 1, 2)))
    add("mean", ("dim",), _fn(torch.mean, (0, 1, 2)))
    add("sum", ("dim_IntList",), _fn(torch.sum, (0, 1, 2)))
    add("amax", ("default",), _fn(torch.amax, (0, 1, 2)))
    add("amin", ("default",), _fn(torch.amin, (0, 1, 2)))
    add("view", ("default",), _fn(torch.reshape, (0, 1)))
    add("_unsafe_view", ("default",), _fn(torch.reshape, (0, 1)))
    add("reshape", ("default",), _fn(torch.reshape, (0, 1)))
    add("flatten", ("using_ints",), _fn(torch.flatten, (0, 1, 2)))
    add("squeeze", ("dim", "dims"), _fn(torch.squeeze, (0, 1)))
    add("unsqueeze", ("default",), _fn(torch.unsqueeze, (0, 1)))
    add("unflatten", ("int",), _fn(torch.unflatten, (0, 1, 2)))
    add("permute", ("default",), _fn(torch.permute, (0, 1)))
    add("transpose", ("int",), _fn(torch.transpose, (0, 1, 2)))
    add("t", ("default",), _fn(torch.t, (0,)))
    add("expand", ("default",), _method("expand"))
    add("cat", ("default",), _fn(torch.cat, (0, 1)))
    add("stack", ("default",), _fn(torch.stack, (0, 1)))
    add("split", ("Tensor",), _fn(torch.split, (0, 1, 2)))
    add("split_with_sizes", ("default",), _fn(torch.split, (0, 1, 2)))
    add("chunk", ("default",), _fn(torch.chunk, (0, 1, 2)))
    add("slice", ("Tensor",), _slice)
    add("select", ("int",), _select)
    add("constant_pad_nd", ("default",), _constant_pad)
    add("matmul", ("default",), _fn(torch.matmul, (0, 1)))
    add("mm", ("default",), _fn(torch.mm, (0, 1)))
    add("max_pool1d", ("default",), _fn(F.max_pool1d, (0, 1, 2, 3, 4, 5)))
    add("max_pool2d", ("default",), _fn(F.max_pool2d, (0, 1, 2, 3, 4, 5)))
    add("avg_pool1d", ("default",), _fn(F.avg_pool1d, (0, 1, 2, 3, 4, 5)))
    add("avg_pool2d", ("default",), _fn(F.avg_pool2d, (0, 1, 2, 3, 4, 5, 6)))
    add("adaptive_avg_pool1d", ("default",), _fn(F.adaptive_avg_pool1d, (0, 1)))
    add("adaptive_avg_pool2d", ("default",), _fn(F.adaptive_avg_pool2d, (0, 1)))
    # aten.embedding(weight, ids, padding_idx, ...) -> F.embedding(ids, weight)
    add("embedding", ("default",), _fn(F.embedding, (1, 0), drop=(2, 3, 4)))
    add("scaled_dot_product_attention", ("default",),
        _fn(F.scaled_dot_product_attention, (0, 1, 2, 3, 4, 5), kw=("scale", "enable_gqa")))
    return r


_REWRITES: dict | None = None


def normalise_aten(graph: fx.Graph, module: nn.Module | None = None,
                   is_leaf: Callable[[nn.Module], bool] | None = None) -> None:
    """Replace ATen overload targets by torch-level callables with the same semantics (in place);
    ops without a rewrite keep their overload (the lowering reports them as unsupported).

    With ``module`` and ``is_leaf``: a node computed inside a submodule torch.fx would have kept
    as a leaf (``nn.ReLU``, ``nn.MaxPool2d``, ...) gets ``meta["asymspec_name"]``, that module's
    path, so the IR names its node as the fx path does."""
    global _REWRITES
    if _REWRITES is None:
        _REWRITES = _aten_rewrites()
    for n in list(graph.nodes):
        if n.op == "call_function" and n.target in _REWRITES:
            _REWRITES[n.target](n)
    if module is None or is_leaf is None:
        return
    for n in graph.nodes:
        stack = n.meta.get("nn_module_stack") or {}
        if n.op != "call_function" or not stack:
            continue
        path = str(list(stack.values())[-1][0]).split("@")[0]
        try:
            sub = module.get_submodule(path) if path else None
        except AttributeError:
            continue
        if sub is not None and is_leaf(sub):
            n.meta["asymspec_name"] = path
