"""asymspec: compile neural networks without parameter symmetries from declarative specs.

Typical use::

    import asymspec
    model = asymspec.build("specs/resnet20_wasym.yaml")    # a plain torch.nn.Module
    ir = asymspec.compile_ir("specs/resnet20_wasym.yaml")  # the networkx IR
"""

from asymspec import nn
from asymspec.check import CheckReport, check, check_ir
from asymspec.compiler import build, compile_ir, example_inputs
from asymspec.errors import SpecError, UserError
from asymspec.spec import Spec, load_spec

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "check",
    "check_ir",
    "nn",
    "Spec",
    "SpecError",
    "UserError",
    "build",
    "compile_ir",
    "example_inputs",
    "load_spec",
]


def __getattr__(name: str):
    """``asymspec.audit(module, example_inputs)`` without importing torch.fx machinery eagerly."""
    if name == "audit":
        import importlib

        return importlib.import_module("asymspec.audit")
    raise AttributeError(f"module 'asymspec' has no attribute {name!r}")
