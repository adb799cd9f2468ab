"""The pipeline: spec -> layer program -> IR -> asymmetry passes -> torch module."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asymspec.families import expand_model
from asymspec.ir.build import build_ir
from asymspec.ir.graph import IRGraph
from asymspec.passes import run_passes
from asymspec.passes.init_plan import plan_init
from asymspec.spec import Spec, load_spec, load_spec_text
from asymspec.spec.limits import ir_size_problem

if TYPE_CHECKING:
    from torch import nn

SpecLike = str | Path | dict | Spec


def is_spec_text(spec: object) -> bool:
    """Whether a ``str`` is YAML text rather than a path: it has a line break, or it is a
    one-line flow mapping (``{name: ..., model: ...}``).  A path never contains either."""
    return isinstance(spec, str) and ("\n" in spec or spec.lstrip().startswith("{"))


def as_spec(spec: SpecLike, overrides: Sequence[str] | None = None) -> Spec:
    """A :class:`Spec` from a path, YAML text (e.g. ``checkpoint["spec"]``), a dict or a Spec."""
    if isinstance(spec, Spec):
        return spec if not overrides else spec.with_overrides(list(overrides))
    if is_spec_text(spec):
        return load_spec_text(spec, "<spec text>", list(overrides) if overrides else None)
    return load_spec(spec, overrides=list(overrides) if overrides else None)


def compile_ir(spec: SpecLike, overrides: Sequence[str] | None = None,
               draw: bool = True) -> IRGraph:
    """The IR of ``spec`` after all asymmetry passes (the single source of truth).

    ``spec`` is a path, YAML text, a dict or a :class:`Spec`.  A model over
    :data:`~asymspec.spec.limits.MAX_PARAMS` entries is rejected (located :class:`SpecError`)
    before the passes allocate masks or fixed values.

    ``draw=False`` makes every pass decision but draws no random tensor (masks, fixed values,
    noise, fixed biases are :class:`~asymspec.ir.deferred.Deferred` placeholders) and imports
    no torch: enough for parameter counts (``asymspec show``), not for emitting or checking.
    Conditions on drawn values (FiGLU's F without zero or repeated entries) are then not
    checked.
    """
    s = as_spec(spec, overrides)
    program = expand_model(s.data["model"])
    ir = build_ir(program, s.data["name"], s.error)
    too_big = ir_size_problem(ir)
    if too_big is not None:
        message, layer, _ = too_big
        raise s.error(ir.node(layer).get("source") or ("model",), message)
    ir = run_passes(ir, s.data.get("asymmetry"), s.error, draw=draw)
    plan_init(ir, s.data.get("init"), s.error)  # which layers `init` re-draws (no torch)
    ir.g.graph["spec"] = s
    return ir


def build(spec: SpecLike, overrides: Sequence[str] | None = None,
          init_seed: int | None = None) -> nn.Module:
    """Compile ``spec`` (a path, YAML text, a dict or a Spec) into a plain ``torch.nn.Module``.

    ``init_seed`` overrides the spec's ``seed`` (the initialisation seed); the asymmetry seed
    (masks, F, noise) stays the spec's, so models of one spec differ only in trainable init.
    """
    from asymspec.nn.model import emit  # the emitter is only needed to build modules

    ir = compile_ir(spec, overrides)
    s: Spec = ir.g.graph["spec"]
    return emit(ir, s.data.get("seed", 0) if init_seed is None else init_seed)


def example_inputs(
    ir: IRGraph, batch: int = 4, seed: int = 0, num_edges: int = 0
) -> tuple[Any, ...]:
    """Deterministic random inputs for ``ir`` (a random graph for edge_index inputs)."""
    import torch

    from asymspec.seeding import generator

    g = generator(seed, "example_inputs", ir.name)
    out = []
    for name in ir.inputs:
        node = ir.node(name)
        if node["layout"] == "edges":
            e = num_edges or 3 * batch
            out.append(torch.randint(0, batch, (2, e), generator=g))
        else:
            out.append(torch.randn((batch,) + tuple(node["shape"]), generator=g))
    return tuple(out)
