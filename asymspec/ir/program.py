"""A layer program: the flat, named-layer description every architecture is lowered to first.

Architecture families (:mod:`asymspec.families`) and the generic ``layers:`` spec form both
produce a :class:`Program`; :func:`asymspec.ir.build.build_ir` turns it into the IR with shape
inference.  Each declaration remembers the spec field it came from so errors can point there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class InputDecl:
    name: str
    shape: tuple[int, ...]
    kind: str = "tensor"  # "tensor" | "edge_index"
    source: tuple = ()


@dataclass
class LayerDecl:
    name: str
    op: str
    inputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    source: tuple = ()
    role: str | None = None


@dataclass
class Program:
    inputs: list[InputDecl]
    layers: list[LayerDecl]
    outputs: list[str]
    source: tuple = ("model",)

    def add(
        self,
        name: str,
        op: str,
        inputs: str | list[str],
        source: tuple = (),
        role: str | None = None,
        **params: Any,
    ) -> str:
        """Append a layer and return its name (so family code reads like a forward pass)."""
        ins = [inputs] if isinstance(inputs, str) else list(inputs)
        self.layers.append(LayerDecl(name, op, ins, params, source or self.source, role))
        return name
