"""Architecture families: each turns a validated ``model:`` mapping into a layer Program.

Register a new family by adding a module with an ``expand(model: dict) -> Program`` function to
:data:`FAMILIES` (or call :func:`register`).  Families only *describe* architectures; they never
build torch modules or IR directly, so every family gets the passes, verifier and emitter for free.
"""

from __future__ import annotations

from collections.abc import Callable

from asymspec.families import cnn, gnn, layers, mlp, resnet, transformer
from asymspec.ir.program import Program

FAMILIES: dict[str, Callable[[dict], Program]] = {
    "mlp": mlp.expand,
    "resnet": resnet.expand,
    "cnn": cnn.expand,
    "gnn": gnn.expand,
    "transformer": transformer.expand,
    "layers": layers.expand,
}


def register(name: str, expand: Callable[[dict], Program]) -> None:
    FAMILIES[name] = expand


def expand_model(model: dict) -> Program:
    return FAMILIES[model["family"]](model)
