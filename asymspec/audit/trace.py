"""Tracing a module into a ``torch.fx`` graph the lowering understands.

The tracer stops at modules :mod:`asymspec.audit.lower` has a handler for (``nn.Linear``,
``nn.Conv2d``, norms, activations, ``nn.MultiheadAttention``, torch-geometric convolutions, ...)
and traces through everything else.  A submodule whose ``forward`` cannot be traced (data-dependent
control flow, iteration over a proxy, ...) is kept as an opaque leaf instead of failing the whole
trace; the lowering then reports it as an unsupported op (its units become fixed points), so a
trace failure never turns into a silent verdict.

If even the root module cannot be traced, :func:`trace` raises :class:`TraceFailure` and the audit
reports the whole model as unknown.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch.fx as fx
from torch import nn


class TraceFailure(Exception):
    """The root module could not be traced by torch.fx."""


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
    try:
        graph = tracer.trace(root)
    except Exception as exc:
        raise TraceFailure(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    return graph, root, dict(tracer.forced_leaves)
