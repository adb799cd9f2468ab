"""``asymspec check``: exact symmetry report for a compiled spec (or any IR).

The permutation part is a certificate: a trivial group comes with the discrete equitable
partition that proves it; a nontrivial group comes with generators, each a permutation of named
units that tests apply to real parameters.  Continuous symmetries come from
:mod:`asymspec.continuous` with their proof status.

JSON report fields (stable): ``name``, ``verdict`` (``asymmetric`` | ``symmetric``), ``ok``
(verdict acceptable under the spec's ``expect``), ``expect``, ``log10_order``, ``order``
(decimal string), ``certificate`` (dict), ``layers`` (list of ``{layer, op, units, orbits,
largest_orbit}``), ``generators`` (list of ``{layer: permutation}`` — unit ``u`` goes to
``perm[u]``, only layers that move), ``continuous`` (list of rule results), ``timings``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asymspec.continuous import ContinuousSymmetry, continuous_symmetries
from asymspec.ir.deferred import require_drawn
from asymspec.ir.graph import IRGraph
from asymspec.ir.unitgraph import UnitGraph
from asymspec.ir.units import expand
from asymspec.verify import find_automorphisms
from asymspec.verify.bigint import int_to_decimal

_WEIGHTED = ("linear", "conv2d", "layernorm", "batchnorm", "groupnorm")


@dataclass
class LayerReport:
    layer: str
    op: str
    units: int
    orbits: int
    largest_orbit: int
    tied_to: str = ""  # first layer whose units this layer's units must follow (same vertex set)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CheckReport:
    name: str
    verdict: str
    ok: bool
    expect: str | None
    log10_order: float
    order: int
    certificate: dict[str, Any]
    layers: list[LayerReport]
    generators: list[dict[str, np.ndarray]]
    continuous: list[ContinuousSymmetry]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_trivial(self) -> bool:
        return self.order == 1

    def to_json(self, max_generators: int | None = None) -> dict[str, Any]:
        sys.set_int_max_str_digits(0)
        gens = self.generators if max_generators is None else self.generators[:max_generators]
        return {
            "name": self.name,
            "verdict": self.verdict,
            "ok": self.ok,
            "expect": self.expect,
            "log10_order": self.log10_order,
            "order": int_to_decimal(self.order),  # millions of digits for full-size LLMs
            "certificate": _jsonable(self.certificate),
            "layers": [r.as_dict() for r in self.layers],
            "num_generators": len(self.generators),
            "generators": [{k: v.tolist() for k, v in g.items()} for g in gens],
            "continuous": [c.as_dict() for c in self.continuous],
            "timings": self.timings,
        }

    def format_text(self) -> str:
        lines = [f"{self.name}: permutation symmetries"]
        moved = [r for r in self.layers if r.orbits < r.units]
        if moved:
            sets: dict[str, list[LayerReport]] = {}
            for r in moved:
                sets.setdefault(r.tied_to or r.layer, []).append(r)
            head = "layers (units tied together)"
            w = min(60, max([len(head)] + [len(_tied_label(v)) for v in sets.values()]))
            lines.append(f"  {head.ljust(w)}  units  orbits  largest")
            for members in sets.values():
                r = members[0]
                lines.append(f"  {_tied_label(members).ljust(w)}  {r.units:>5}  {r.orbits:>6}  "
                             f"{r.largest_orbit:>7}")
            fixed = sum(r.orbits == r.units for r in self.layers)
            lines.append(f"  ({fixed} other layers: every unit fixed)")
        else:
            lines.append(f"  none: {self._certificate_text()}")
        cont = [c for c in self.continuous if c.status == "present"]
        broken = [c for c in self.continuous if c.status != "present"]
        lines.append("continuous symmetries (by rule):")
        if cont:
            kinds: dict[str, list[str]] = {}
            for c in cont:
                kinds.setdefault(c.kind, []).append(c.layer)
            for k, ls in kinds.items():
                lines.append(f"  {k} (proven) at {len(ls)} layer(s): {_short(ls)}")
        if broken:
            kinds = {}
            for c in broken:
                kinds.setdefault(f"{c.kind}: {c.status} ({c.certainty})", []).append(c.layer)
            for k, ls in kinds.items():
                lines.append(f"  {k} at {len(ls)} layer(s): {_short(ls)}")
        if not self.continuous:
            lines.append("  none found by the rules")
        verdict = ("ASYMMETRIC: no nontrivial neural-DAG automorphism" if self.is_trivial else
                   f"SYMMETRIC: log10 |Aut| = {self.log10_order:.2f}, "
                   f"{len(self.generators)} generators")
        note = f"  (spec expects {self.expect})" if self.expect else ""
        lines.append(f"verdict: {verdict}{note}")
        return "\n".join(lines)

    def _certificate_text(self) -> str:
        c = self.certificate
        if c.get("kind") == "discrete-refinement":
            return (f"proven by colour refinement (discrete partition of {c.get('cells')} "
                    f"cells after {c.get('rounds')} rounds)")
        return f"proven by exhaustive search ({c.get('kind')})"


def _tied_label(members: list[LayerReport]) -> str:
    weighted = [m.layer for m in members if m.op in _WEIGHTED] or [members[0].layer]
    extra = len(members) - 1
    return weighted[0] + (f" (+{extra} tied)" if extra else "")


def _short(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f", ... (+{len(names) - k})" if len(names) > k else "")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, int) and abs(x) > 2**63:
        return str(x)
    return x


class _VertexSets:
    """Vertex ranges of the unit graph and the IR nodes sharing each (identity-tied nodes)."""

    def __init__(self, ug: UnitGraph) -> None:
        ranges: dict[int, list[str]] = {}
        for name in ug.node_names:
            ranges.setdefault(ug.node_offsets[name], []).append(name)
        self.starts = np.array(sorted(ranges), dtype=np.int64)
        self.names = [ranges[int(o)] for o in self.starts]
        self.sizes = np.array([ug.node_sizes[n[0]] for n in self.names], dtype=np.int64)


def node_permutations(sets: _VertexSets, moved: np.ndarray, images: np.ndarray
                      ) -> dict[str, np.ndarray]:
    """Split a sparse vertex permutation into per-IR-node unit permutations (moved nodes only).

    Nodes that share vertices in the unit graph (identity-tied, see ``ir.units``) all get the
    permutation of their shared vertex set; auxiliary vertices are ignored."""
    out: dict[str, np.ndarray] = {}
    if moved.shape[0] == 0:
        return out
    k = np.searchsorted(sets.starts, moved, side="right") - 1
    valid = (k >= 0) & (moved < sets.starts[np.maximum(k, 0)] + sets.sizes[np.maximum(k, 0)])
    for r in np.unique(k[valid]):
        o, size = int(sets.starts[r]), int(sets.sizes[r])
        inside = valid & (k == r)
        dst = images[inside] - o
        if dst.min() < 0 or dst.max() >= size:
            raise AssertionError(f"generator maps units of {sets.names[r][0]} outside the node")
        local = np.arange(size, dtype=np.int64)
        local[moved[inside] - o] = dst
        for name in sets.names[r]:
            out[name] = local
    return out


def check_ir(ir: IRGraph, expect: str | None = None) -> CheckReport:
    """Verify ``ir``: exact permutation group + continuous-symmetry rules.

    ``ir`` must hold drawn tensors: fixed values are edge colours for the verifier, so an IR
    compiled with ``draw=False`` (counts only) is refused with ``ValueError``."""
    require_drawn(ir, "check_ir")
    t0 = time.perf_counter()
    ug = expand(ir)
    t1 = time.perf_counter()
    res = find_automorphisms(ug)
    t2 = time.perf_counter()
    sets = _VertexSets(ug)
    gens = [node_permutations(sets, m, i) for m, i in res.sparse_generators]
    gens = [g for g in gens if g]
    layers = []
    first_at: dict[int, str] = {}
    for name in ug.node_names:
        node = ir.node(name)
        o, s = ug.node_offsets[name], ug.node_sizes[name]
        ids = res.orbit_id[o:o + s]
        _, counts = np.unique(ids, return_counts=True)
        tied = first_at.setdefault(o, name)
        layers.append(LayerReport(name, node["op"], s, int(counts.size), int(counts.max()),
                                  tied if tied != name else ""))
    spec = ir.g.graph.get("spec")
    if expect is None and spec is not None:
        expect = spec.data.get("expect")
    trivial = res.order == 1
    verdict = "asymmetric" if trivial else "symmetric"
    ok = trivial or expect == "symmetric"
    timings = {"expand_s": t1 - t0, "search_s": t2 - t1}
    timings.update({k: v for k, v in res.certificate.get("timings", {}).items()})
    return CheckReport(ir.name, verdict, ok, expect, float(res.log10_order), int(res.order),
                       dict(res.certificate), layers, gens, continuous_symmetries(ir), timings)


def check(spec_or_module, overrides=None) -> CheckReport:
    """Check a spec (path, dict, Spec) or an emitted asymspec module."""
    ir = getattr(spec_or_module, "ir", None)
    if ir is None:
        from asymspec.compiler import compile_ir

        ir = compile_ir(spec_or_module, overrides)
    return check_ir(ir)
