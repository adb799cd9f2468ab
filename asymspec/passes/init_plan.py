"""Which layers the spec's ``init`` rule re-draws, and with which distribution and scale.

A decision, not a draw: for every selected linear / conv layer the planner computes, from the IR
alone, what ``torch.nn.init`` would use — ``("normal", std)`` or ``("uniform", bound)`` from the
weight's fans (the whole ``(out, in, *kernel)`` weight, fixed entries included, as PyTorch
counts them) — and records it in the graph attribute ``init``::

    ir.g.graph["init"] = {"conv1": {"rule": "kaiming_normal", "dist": "normal",
                                    "scale": 0.2722, "fan_in": 27, "fan_out": 144}, ...}

The emitter (:func:`asymspec.nn.init.apply_init`) then draws those layers' trainable entries
from a generator of its own per layer.  Layers not in the plan keep PyTorch's default draw, so
a spec without ``init`` (or with ``init: default``) builds bit-identical weights to before.
Layers a pass inserted (FiGLU's F) and layers sharing another's weight are never selected: F is
a fixed map, and a shared weight is its owner's.  Plain Python (no torch): ``asymspec show``
compiles with ``draw=False`` and must not import torch.
"""

from __future__ import annotations

import math
import warnings

from asymspec.errors import SpecWarning
from asymspec.ir.graph import IRGraph
from asymspec.passes.select import settings_for, unmatched_globs
from asymspec.spec.init_rule import FIELDS, draw_scale, rule_problems

PLAN_KEY = "init"  # graph attribute: {layer: {"rule", "dist", "scale", "fan_in", "fan_out"}}


def weighted_layers(ir: IRGraph) -> list[str]:
    """The layers an ``init`` rule can select: own-weight linear / conv layers of the model."""
    out = []
    for name in ir.topo_order():
        node = ir.node(name)
        if node.get("shares") or node.get("added_by") is not None:
            continue
        if ir.dense_edge(name) is not None:
            out.append(name)
    return out


def plan_init(ir: IRGraph, cfg: dict | None, error) -> IRGraph:
    """Record in ``ir`` (in place; returned for chaining) the draw of every layer ``cfg`` (the
    spec's loaded ``init`` block, or None) selects with a rule other than ``default``.

    A ``layers`` / ``overrides`` glob matching no layer warns (located :class:`SpecWarning`), as
    for asymmetry methods; a per-layer merge of overrides that is inconsistent (``weights:
    normal`` without ``std``) is a located spec error.
    """
    plan: dict[str, dict] = {}
    ir.g.graph[PLAN_KEY] = plan
    if not cfg:
        return ir
    names = weighted_layers(ir)
    for path, glob in unmatched_globs(cfg, names):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        where = error(("init",) + path, f"glob {glob!r} matches no linear or conv layer of the "
                      f"model, so it selects nothing (layers: {shown})")
        warnings.warn(SpecWarning(str(where)), stacklevel=3)
    for name in names:
        s = settings_for(name, cfg, FIELDS)
        if s is None or s.get("weights", "default") == "default":
            continue
        source = {f: ("init",) + s["_source"].get(f, (f,)) for f in FIELDS}
        problems = rule_problems(s, source)
        if problems:
            path, message = problems[0]
            raise error(path, f"layer '{name}': {message}")
        _, e = ir.dense_edge(name)
        shape = tuple(int(k) for k in e["weight_shape"])
        kernel = math.prod(shape[2:])
        fan_in, fan_out = math.prod(shape[1:]), shape[0] * kernel
        dist, scale = draw_scale(s, fan_in, fan_out)
        plan[name] = {"rule": s["weights"], "dist": dist, "scale": scale, "fan_in": fan_in,
                      "fan_out": fan_out}
    return ir
