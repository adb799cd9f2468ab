"""asymspec: compile neural networks without parameter symmetries from declarative specs.

Typical use::

    import asymspec
    model = asymspec.build("specs/resnet20_wasym.yaml")    # a plain torch.nn.Module
    ir = asymspec.compile_ir("specs/resnet20_wasym.yaml")  # the networkx IR
    ir = asymspec.compile_ir(path, draw=False)  # decisions only: counts, no torch, no tensors
    model = asymspec.load("model.pt")                      # a compiled checkpoint, with weights

Public names are imported on first use (PEP 562 ``__getattr__``), so ``import asymspec`` and
``asymspec --help`` do not pay for torch, networkx or igraph until something needs them.
``asymspec.check`` is both the submodule and the function ``check(model)``: the submodule is made
callable (calling it calls :func:`asymspec.check.check`), whichever way it was first imported.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from asymspec.errors import SpecError, UserError

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "CheckReport": ("asymspec.check", "CheckReport"),
    "check": ("asymspec.check", None),  # the callable submodule (see _Package)
    "check_ir": ("asymspec.check", "check_ir"),
    "nn": ("asymspec.nn", None),
    "audit": ("asymspec.audit", None),
    "Spec": ("asymspec.spec", "Spec"),
    "load_spec": ("asymspec.spec", "load_spec"),
    "build": ("asymspec.compiler", "build"),
    "compile_ir": ("asymspec.compiler", "compile_ir"),
    "example_inputs": ("asymspec.compiler", "example_inputs"),
    "load": ("asymspec.checkpoint", "load"),
}

__all__ = ["SpecError", "UserError", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a public name on first access (``asymspec.audit`` is the audit module)."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'asymspec' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    if attr is not None or name != module.rpartition(".")[2]:
        globals()[name] = value
    return value


class _CallableCheckModule(types.ModuleType):
    """``asymspec.check(model)`` calls :func:`asymspec.check.check`; attributes as usual."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.check(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``asymspec`` package: gives the ``check`` submodule its call, when it is bound."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "check" and type(value) is types.ModuleType:
            value.__class__ = _CallableCheckModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
