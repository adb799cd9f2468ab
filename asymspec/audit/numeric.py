"""Numerical check of reported symmetries on the real module.

Every generator the verifier reports is applied to the module's parameters *and* its per-unit
state buffers (BatchNorm running statistics) through the IR's tensor axes; the module's outputs on
the example inputs must not change.  Constant buffers that define the architecture (masks, fixed
values, noise offsets) are deliberately *not* permuted: a generator that does not respect them is
not a symmetry of the parameters, and this check must catch it.

A model has up to tens of thousands of generators (one per transposition of each symmetric
group), so the check runs a bounded number of forward passes: the first ``individual`` generators
alone, then all generators in ``batches`` contiguous groups, each composed into one permutation.
Symmetries form a group, so a composite of symmetries is a symmetry and a composite in which
exactly one factor is not a symmetry is not one; a failing composite is bisected down to a failing
generator, which is reported by raising :class:`AuditError` (a bug in asymspec, never ignored).
Default-initialised running statistics (mean 0, variance 1) and constant-initialised parameters
(zero classifier heads, unit LayerNorm weights) are replaced by random values for the check (the
module itself is never modified), so permuting them is actually tested.  Each forward pass runs
on the example inputs and on a second, jittered draw of their floating-point parts (a wrong
generator can hide on two samples whose ReLUs are all off).

Weight tying: a tensor with several names is passed to ``functional_call`` once (it ties the
other names) and permuted once; a generator whose uses of that tensor ask for different
permutations (``tensor_uses`` in the IR) is rejected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from asymspec.ir.graph import IRGraph
from asymspec.ir.permute import permute_state_dict, tensor_axes


class AuditError(Exception):
    """A reported symmetry failed the numerical check: a bug in the audit, never a user error."""


@dataclass
class NumericResult:
    generators: int
    forward_passes: int
    individually_checked: int
    max_rel_error: float
    seconds: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _flat_tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _flat_tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _flat_tensors(v)]
    return []


def compose(gens: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Apply ``gens[0]`` first, then ``gens[1]``, ...: unit u goes to g_k[...g_1[u]]."""
    out: dict[str, np.ndarray] = {}
    for g in gens:
        for node, q in g.items():
            p = out.get(node)
            out[node] = q.copy() if p is None else q[p]
    return out


def _axis_nodes(axes) -> set[str]:
    out: set[str] = set()
    for a in axes or ():
        if isinstance(a, tuple):
            out.update(a)
        elif a is not None:
            out.add(a)
    return out


class _Unappliable(Exception):
    """A generator could not be applied to the parameters (wrong sizes, ...)."""


def _axis_index(ir: IRGraph, axis, gen: dict[str, np.ndarray]) -> np.ndarray | None:
    """The permutation ``gen`` induces on one tensor axis (None: the axis is not permuted)."""
    nodes = axis if isinstance(axis, tuple) else (axis,)
    if axis is None or not any(n in gen for n in nodes):
        return None
    parts, offset = [], 0
    for n in nodes:
        size = ir.node(n)["size"]
        parts.append(np.asarray(gen.get(n, np.arange(size))) + offset)
        offset += size
    return np.concatenate(parts)


def _conflicts(ir: IRGraph, uses: list[tuple], gen: dict[str, np.ndarray]) -> bool:
    """Whether the uses of one tied tensor ask for different permutations of some axis."""
    if not any(n in gen for axes in uses for n in _axis_nodes(axes)):
        return False
    per_use = [[_axis_index(ir, a, gen) for a in axes] for axes in uses]
    first = per_use[0]
    for other in per_use[1:]:
        if len(other) != len(first):
            return True
        for p, q in zip(first, other):
            if p is None and q is None:
                continue
            size = len(p if p is not None else q)
            pp = p if p is not None else np.arange(size)
            qq = q if q is not None else np.arange(size)
            if not np.array_equal(pp, qq):
                return True
    return False


def check_generators(module: nn.Module, ir: IRGraph, generators: list[dict[str, np.ndarray]],
                     inputs: tuple, individual: int = 4, batches: int = 8,
                     rtol: float = 1e-4, seed: int = 0) -> NumericResult:
    """Raise :class:`AuditError` unless every generator leaves the outputs unchanged."""
    t0 = time.perf_counter()
    constant = set(ir.g.graph.get("constant_keys", ()))
    # a tied tensor (several names, one object) is passed and permuted once, under its first
    # name; functional_call's tie_weights makes every other name see the same value
    seen: set[int] = set()
    state = {}
    for k, v in module.state_dict(keep_vars=True).items():
        if id(v) not in seen:
            seen.add(id(v))
            state[k] = v.detach()
    uses = ir.g.graph.get("tensor_uses", {})
    base = dict(state)
    g = torch.Generator().manual_seed(seed)
    params = {k for k, _ in module.named_parameters()}
    for k, v in state.items():
        if k in params and v.is_floating_point() and v.numel() > 1 and \
                bool((v == v.flatten()[0]).all()):
            # constant-initialised parameters (zero heads, unit norm weights) would make the
            # check blind to their permutation; symmetries hold for all values: perturb them
            noise = torch.randn(v.shape, generator=g).to(v)
            base[k] = v + 0.1 * noise * (1 + v.abs())
        elif k.endswith("running_mean") and v.is_floating_point() and not bool(v.any()):
            base[k] = (torch.rand(v.shape, generator=g) - 0.5).to(v)
        elif k.endswith("running_var") and v.is_floating_point() and bool((v == 1).all()):
            base[k] = (torch.rand(v.shape, generator=g) + 0.5).to(v)
    grouped = ir.g.graph.get("grouped_tensors", {})
    touched: dict[str, set[str]] = {}
    for k in base:
        if k in constant:
            continue
        nodes = _axis_nodes(tensor_axes(ir, k))
        if k in grouped:
            nodes = set(grouped[k][:2])
        for n in nodes:
            touched.setdefault(n, set()).add(k)
    passes = 0
    worst = 0.0

    # a second draw of the float inputs: on the user's example alone a wrong generator can hide
    # (e.g. ReLU units dead on a batch of two); dropped if the model is undefined there
    jittered = tuple(x + torch.randn(x.shape, generator=g).to(x) * (x.std() if x.numel() > 1
                                                                      else 1.0)
                     if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                     for x in inputs)
    input_sets = [inputs]
    if any(a is not b for a, b in zip(jittered, inputs)):
        with torch.no_grad():
            out = _flat_tensors(functional_call(module, base, jittered))
        if all(bool(torch.isfinite(o).all()) for o in out if o.is_floating_point()):
            input_sets.append(jittered)

    def run(sd) -> list[torch.Tensor]:
        nonlocal passes
        passes += 1
        with torch.no_grad():
            return [t for xs in input_sets for t in _flat_tensors(functional_call(module, sd, xs))]

    ref: list[torch.Tensor] = []
    scale = 1.0

    def holds(gen: dict[str, np.ndarray]) -> bool:
        try:
            return _holds(gen)
        except AuditError:
            raise
        except Exception as exc:  # a permutation that cannot even be applied is no symmetry
            raise _Unappliable(f"{type(exc).__name__}: {exc}") from exc

    def _holds(gen: dict[str, np.ndarray]) -> bool:
        nonlocal worst
        for key in uses:
            if key in base and _conflicts(ir, uses[key], gen):
                return False
        keys = set().union(*[touched.get(n, set()) for n in gen]) if gen else set()
        moved = dict(base)
        moved.update(permute_state_dict(ir, {k: base[k] for k in keys}, gen))
        out = run(moved)
        err = max([0.0] + [float((o - r).abs().max()) for o, r in zip(out, ref) if o.numel()])
        worst = max(worst, err / scale)
        return len(out) == len(ref) and err <= rtol * scale

    def fail(gen_index: int, why: str = "") -> None:
        gen = generators[gen_index]
        moved = ", ".join(f"{n} ({int((p != np.arange(p.size)).sum())} units)"
                          for n, p in list(gen.items())[:6])
        tied = [k for k in uses if k in base and _conflicts(ir, uses[k], gen)]
        what = (f"asks for conflicting permutations of the tied tensor '{tied[0]}'" if tied
                else f"cannot be applied to the module ({why})" if why
                else "changes the module's outputs")
        raise AuditError(
            f"reported symmetry #{gen_index} (moves {moved}) {what}: "
            "this is a bug in asymspec's audit; please report it with the model")

    def check_one(i: int) -> bool:
        try:
            return holds(generators[i])
        except _Unappliable as exc:
            fail(i, str(exc))
        return False

    def composite_holds(lo: int, hi: int) -> bool:
        try:
            return holds(compose(generators[lo:hi]))
        except _Unappliable:
            return False  # bisect down to the generator that cannot be applied

    def bisect(lo: int, hi: int) -> None:
        if hi - lo == 1:
            if not check_one(lo):
                fail(lo)
            return
        mid = (lo + hi) // 2
        if not composite_holds(lo, mid):
            bisect(lo, mid)
        bisect(mid, hi)

    try:
        ref = run(base)
    except Exception as exc:
        raise AuditError(f"the module cannot be run with its own parameters through "
                         f"torch.func.functional_call: {type(exc).__name__}: {exc}") from exc
    scale = max([1.0] + [float(r.abs().max()) for r in ref if r.numel()])
    n = len(generators)
    first = min(individual, n)
    for i in range(first):
        if not check_one(i):
            fail(i)
    rest = n - first
    if rest:
        k = min(batches, rest)
        bounds = np.linspace(first, n, k + 1).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi > lo and not composite_holds(int(lo), int(hi)):
                bisect(int(lo), int(hi))
    return NumericResult(n, passes, first, worst, time.perf_counter() - t0)
