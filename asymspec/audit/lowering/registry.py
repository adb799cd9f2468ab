"""The one registry of audit op handlers and its one decorator, :func:`handles`.

A target is a module class (``nn.Linear``: the module is a leaf of the trace), a tensor method
name (``"view"``) or any other callable (``F.linear``, an ATen overload).  ``raw=True`` marks a
handler that accepts operands that are not yet feature tensors (a layer reading the model input
directly, whose weight is a parameter expression)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

Handler = Callable[[Any], Any]  # Call -> lowered value
MODULES: dict[type, Handler] = {}  # leaf module classes
FUNCTIONS: dict[Any, Handler] = {}  # call_function targets
METHODS: dict[str, Handler] = {}  # tensor method names
RAW: set[Handler] = set()  # handlers that accept raw (non-feature) operands


def handles(*targets: Any, raw: bool = False) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of every target (see module docstring).

    A handler receives one :class:`~asymspec.audit.lowering.context.Call` and returns the
    lowered value of the op's output (:class:`Feat`, :class:`Raw`, ...), or raises
    :class:`Unsupported` to have the op recorded as unsupported."""

    def deco(fn: Handler) -> Handler:
        for t in targets:
            if t is None:
                continue  # an optional dependency's op that is not installed
            if isinstance(t, str):
                METHODS[t] = fn
            elif isinstance(t, type) and issubclass(t, nn.Module):
                MODULES[t] = fn
            else:
                FUNCTIONS[t] = fn
        if raw:
            RAW.add(fn)
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
