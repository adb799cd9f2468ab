"""``asymspec audit``: residual parameter symmetries of *any* PyTorch module.

``audit(module, example_inputs)`` traces the module with torch.fx (:mod:`asymspec.audit.trace`;
``torch.export`` when the root module cannot be fx-traced, e.g. Python control flow on shapes),
lowers the traced graph into the compiler's IR (:mod:`asymspec.audit.lowering`; masked / noisy
effective weights via :mod:`asymspec.audit.params`), runs the same exact verifier as
``asymspec check`` and checks every reported symmetry numerically on the real module
(:mod:`asymspec.audit.numeric`).  The result is a :class:`~asymspec.check.CheckReport` (an
:class:`AuditReport`) with three possible verdicts:

* ``asymmetric`` — every op was understood and no nontrivial automorphism exists (a proof for the
  lowered graph);
* ``symmetric`` — the listed generators are symmetries (each verified numerically); with
  unsupported ops present, the order is a lower bound;
* ``unknown`` — some op was not understood (``unsupported`` lists each with fx node, module path
  and target) and no symmetry was found: units touched by unsupported ops were treated as fixed
  points, so asymmetry is *not* claimed.  ``unknown_layers`` (and ``"unknown": true`` in the
  JSON ``layers`` rows) names the layers whose units were fixed that way.

Permutation spec (``asymspec perm-spec``): :func:`permutation_spec` returns
:meth:`asymspec.ir.permgroups.PermSpec.to_json` of the lowered IR, with ``axes`` keyed by the
module's real ``state_dict`` keys.  Format ``asymspec-permspec/1``::

    {"format": "asymspec-permspec/1",
     "groups": [{"name", "size", "nodes", "kind": "free" | "heads" | "fixed", "heads",
                 "head_partner", "reason"}, ...],
     "derived": [IR nodes whose permutation follows from their inputs (flatten, concat, ...)],
     "axes": {"layer1.0.conv1.weight": ["layer1.0.conv1", "maxpool", null, null], ...},
     "tied": {"lm_head.weight": "wte.weight", ...}}

Each ``axes`` entry lists, per tensor axis, the *group* whose permutation acts on it (``null``:
not permuted); a packed axis (``nn.MultiheadAttention.in_proj_weight`` rows = q, k, v) is a list
of groups, concatenated in order; ``{"derived": node}`` marks an axis permuted by a derived node
(e.g. the flattened features read by VGG's first classifier layer: the last conv group's
permutation repeated at every spatial position), computed by ``PermSpec.node_perms``;
``{"grouped": group, "groups": g}`` marks axis 1 of a grouped convolution's weight: it indexes
the inputs *within* the output channel's group (a group permutation moves whole blocks).  Groups of
kind ``fixed`` (inputs, outputs, units touched by unsupported ops, frozen biases) must not be
permuted and are not referenced from ``axes``.
Weight tying is found by tensor identity (``out.weight = emb.weight``, transformers'
``tie_weights``): ``tied`` maps every further name of a tensor to its first name, each name's
``axes`` are the same, and the IR ties the nodes along which the tensor is used (graph attribute
``ties``), so every group, generator and alignment permutes the one tensor consistently.
BatchNorm ``weight``, ``bias``, ``running_mean`` and ``running_var`` follow their channel's group;
``num_batches_tracked`` and other keys map to ``[]``.
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from asymspec.audit import lowering as _lowering
from asymspec.audit.lowering import Lowered, UnsupportedOp
from asymspec.audit.numeric import AuditError, NumericResult, check_generators
from asymspec.check import CheckReport, check_ir
from asymspec.ir.graph import IRGraph

__all__ = ["AuditError", "AuditReport", "audit", "lower_module", "permutation_spec"]


@dataclass
class AuditReport(CheckReport):
    unsupported: list[UnsupportedOp] = field(default_factory=list)
    numeric: NumericResult | None = None
    ir: Any = None
    unknown_layers: list[str] = field(default_factory=list)  # pinned by unsupported ops
    # parameters on the meta device (asymspec.audit.meta): what was and was not inspected, and
    # the width-reduced twin the numeric check ran on
    meta: dict | None = None

    def to_json(self, max_generators: int | None = None) -> dict[str, Any]:
        out = super().to_json(max_generators)
        unknown = set(self.unknown_layers)
        for row in out["layers"]:
            row["unknown"] = row["layer"] in unknown
        out["unknown_layers"] = list(self.unknown_layers)
        out["unsupported"] = [u.as_dict() for u in self.unsupported]
        out["order_is_lower_bound"] = bool(self.unsupported)
        out["numeric_check"] = self.numeric.as_dict() if self.numeric else None
        if self.meta is not None:
            out["meta"] = self.meta
        return out

    def format_text(self) -> str:
        text = super().format_text()
        lines = text.splitlines()
        if self.verdict == "unknown":
            lines[-1] = ("verdict: UNKNOWN: no symmetry found, but unsupported ops fixed some "
                         "units, so asymmetry is not claimed")
        elif self.unsupported:
            lines[-1] += " (a lower bound: unsupported ops fixed some units)"
        if self.unsupported:
            lines.insert(-1, f"unsupported ops ({len(self.unsupported)}):")
            for u in self.unsupported[:50]:
                lines.insert(-1, f"  {u}")
            if len(self.unsupported) > 50:
                lines.insert(-1, f"  ... (+{len(self.unsupported) - 50})")
        if self.numeric is not None and self.numeric.generators:
            r = self.numeric
            lines.insert(-1, f"numeric check: {r.summary()}")
        if self.meta is not None:
            for line in self.meta.get("lines", []):
                lines.insert(-1, line)
        return "\n".join(lines)


def _as_tuple(example_inputs) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def lower_module(module: nn.Module, example_inputs, name: str | None = None,
                 tracer: str = "auto") -> IRGraph:
    """The IR of ``module`` (lowered in eval mode on ``example_inputs``).

    ``tracer``: ``"auto"`` (torch.fx, falling back to ``torch.export`` when the root module
    cannot be fx-traced), ``"fx"`` or ``"export"`` (forced; mainly for testing)."""
    return _lower(module, _as_tuple(example_inputs), name, tracer).ir


def _lower(module: nn.Module, inputs: tuple, name: str | None, tracer: str = "auto",
           placement: Any = None) -> Lowered:
    was = module.training
    module.eval()  # also for torch.export: batch norm then uses its running statistics
    try:
        return _lowering.lower(module, inputs, name, tracer, placement)
    finally:
        module.train(was)


def audit(module: nn.Module, example_inputs, name: str | None = None, numeric: bool = True,
          expect: str | None = None, tracer: str = "auto", placement: Any = None
          ) -> AuditReport:
    """Audit ``module`` for residual permutation symmetries (see the module docstring).

    ``tracer`` as in :func:`lower_module` (default: torch.fx, torch.export as a fallback).
    ``placement``: parameters on the meta device (:func:`asymspec.audit.meta.audit_meta` sets
    it; the numeric check then cannot run here)."""
    inputs = _as_tuple(example_inputs)
    if placement is not None and numeric:
        raise ValueError("the numeric check needs parameter values: numeric=False on meta")
    t0 = time.perf_counter()
    lowered = _lower(module, inputs, name, tracer, placement)
    t1 = time.perf_counter()
    ir = lowered.ir
    if not any(ir.node(n)["size"] > 0 for n in ir.g):  # nothing could be lowered
        rep = CheckReport(ir.name, "unknown", False, expect, 0.0, 1, {"kind": "none"}, [], [],
                          [], {})
        if not lowered.unsupported:  # an unknown verdict always names its cause
            lowered.unsupported.append(UnsupportedOp(
                "<root>", "", type(module).__name__,
                "no layer of the model could be lowered to units (nothing reads the inputs "
                "through a supported layer)"))
    else:
        rep = check_ir(ir, expect)
    t2 = time.perf_counter()
    layers = [r for r in rep.layers if ir.node(r.layer)["op"] not in ("pin", "group_tag")]
    verdict = rep.verdict
    if lowered.unsupported and rep.order == 1:
        verdict = "unknown"
    ok = verdict == "asymmetric" or (verdict == "symmetric" and expect == "symmetric")
    num = None
    was = module.training
    if numeric:
        module.eval()
        big = sum(p.numel() for p in module.parameters()) > 50_000_000
        try:  # very large models: fewer (each expensive) forward passes
            num = check_generators(module, ir, rep.generators, inputs,
                                   individual=2 if big else 4, batches=4 if big else 8,
                                   random_subsets=2 if big else 4)
        finally:
            module.train(was)
    timings = dict(rep.timings, lower_s=t1 - t0, check_s=t2 - t1,
                   numeric_s=num.seconds if num else 0.0, total_s=time.perf_counter() - t0)
    unknown = sorted({u for p in ir.g if ir.node(p)["op"] == "pin" for u in ir.node(p)["inputs"]}
                     | {p for p in ir.g if ir.node(p)["op"] == "opaque"})
    return AuditReport(rep.name, verdict, ok, expect, rep.log10_order, rep.order,
                       rep.certificate, layers, rep.generators, rep.continuous, timings,
                       unsupported=list(lowered.unsupported), numeric=num, ir=ir,
                       unknown_layers=unknown)


def permutation_spec(module: nn.Module, example_inputs, name: str | None = None,
                     tracer: str = "auto") -> dict[str, Any]:
    """The permutation spec of ``module`` as JSON (format in the module docstring)."""
    from asymspec.ir.permgroups import perm_spec
    from asymspec.ir.permute import tensor_axes

    lowered = _lower(module, _as_tuple(example_inputs), name, tracer)
    ir = lowered.ir
    keys = sorted(lowered.state_keys)
    spec = perm_spec(ir, keys)
    pinned = {n for n in ir.g if ir.node(n)["op"] in ("pin", "opaque")}
    for g in spec.groups.values():
        hit = [n for n in g.nodes if n in pinned]
        if hit and g.kind == "fixed" and g.reason.startswith("frozen biases"):
            why = ir.node(hit[0])["attrs"].get("reason", "output of an unsupported op")
            g.reason = f"fixed by an unsupported op: {why}"
    out = spec.to_json()
    derived = set(spec.derived)
    grouped = ir.g.graph.get("grouped_tensors", {})
    axes: dict[str, list] = {}
    for k in keys:
        ax = tensor_axes(ir, k) or ()
        axes[k] = [[_axis_entry(spec, derived, n) for n in a] if isinstance(a, tuple)
                   else _axis_entry(spec, derived, a) for a in ax]
        if k in grouped:  # grouped conv: axis 1 indexes inputs within the output's group
            dst, src, groups = grouped[k]
            entry = {"grouped": _axis_entry(spec, derived, src), "groups": groups}
            if ax and ax[0] == dst:
                axes[k][1] = entry
            else:  # stored in another shape (GAT's (1, heads, dim) attention vectors)
                axes[k] = [{"flattened": _axis_entry(spec, derived, dst), **entry}]
    out["axes"] = axes
    # weight tying (one tensor under several names): every name but the first, -> the first;
    # the axes of tied names are identical, so permuting each name keeps the tie
    out["tied"] = dict(ir.g.graph.get("tied_keys", {}))
    out["unsupported"] = [u.as_dict() for u in lowered.unsupported]
    return out


def _axis_entry(spec, derived: set, node: str | None):
    if node is None:
        return None
    if node in spec.node_group:
        return spec.node_group[node]
    if node in derived:  # permutation follows from its inputs (PermSpec.node_perms)
        return {"derived": node}
    return None


class _CallableModule(types.ModuleType):
    """``asymspec.audit(module, example_inputs)`` calls :func:`audit` (the package is callable)."""

    def __call__(self, *args, **kwargs):
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
