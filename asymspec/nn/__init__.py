"""Torch modules emitted from the IR."""

from asymspec.nn.compile import compile_enabled, compiled, maybe_compile
from asymspec.nn.masked import AsymConv2d, AsymLinear
from asymspec.nn.model import IRModule, emit

__all__ = ["AsymConv2d", "AsymLinear", "IRModule", "compile_enabled", "compiled", "emit",
           "maybe_compile"]
