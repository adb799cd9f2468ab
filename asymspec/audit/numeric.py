"""Numerical check of reported symmetries on the real module.

Every generator the verifier reports is applied to the module's parameters *and* its per-unit
state buffers (BatchNorm running statistics) through the IR's tensor axes; the module's outputs on
the example inputs must not change.  Constant buffers that define the architecture (masks, fixed
values, noise offsets) are deliberately *not* permuted: a generator that does not respect them is
not a symmetry of the parameters, and this check must catch it.

A model has up to tens of thousands of generators (one per transposition of each symmetric
group), so the check runs O(log n) forward passes, not n: the first ``individual`` generators
alone, then the other m generators in composites, each composed (in index order) into one
permutation and checked in one forward pass (:func:`composite_plan`):

* ``batches`` contiguous groups, covering every generator;
* the bit-split subsets ``S_b = {j : bit b of j is 1}`` and their complements, j = 0..m-1 the
  position among the m, for b < ceil(log2 m) (2 ceil(log2 m) composites, 26 for m = 4,290);
* ``random_subsets`` seeded random subsets (each element in with probability 1/2, explicit
  numpy Generator) and their complements.

Why this suffices.  Let H be the group of true symmetries and call a generator *bad* if it is not
in H.  A composite ``h1 b h2`` with exactly one bad factor b (h1, h2 in H) is not in H (else
b = h1^-1 (h1 b h2) h2^-1 would be), but a composite with two or more bad factors can be: a
lowering bug that splits one coupled symmetry (a tied embedding/head, one swap acting on two
layers) into two generators g1, g2, each wrong alone, gives a product g1 g2 in H, and contiguous
batching alone passed such a pair whenever it landed in one batch.  Guarantee: if at least one and
at most three of the generators are bad, some checked composite contains exactly one of them,
fails, and is bisected down to a bad generator that is named (one alone: its contiguous batch; two
or three: for a bit where their positions differ, S_b or its complement holds exactly one of
them).  Four or more bad generators can mask each other in every bit-split subset (positions
0, 3, 5, 6 meet every S_b and complement in 0 or 2); then the check still fails unless every
composite that holds them has its bad factors multiply into H (a coincidence for unrelated bugs),
and each random subset and its complement exposes k >= 3 bad generators with probability
2k / 2^k over the seed.  All of this is relative to the test itself: "fails" means the outputs on
the input draws move by more than ``rtol`` (relative); a non-symmetry invisible on those
inputs is invisible here too.  A failing composite whose bisection finds no failing generator
(which group theory rules out, so numerics are at fault) is reported as a failure as well.

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
    """What the check did (not more): how many generators, how, in how many forward passes."""

    generators: int
    forward_passes: int
    individually_checked: int
    max_rel_error: float
    seconds: float
    composites: int = 0  # distinct composites checked (each one forward pass, before bisection)
    contiguous_batches: int = 0
    bit_split_subsets: int = 0  # S_b and complements: separate every pair (and triple)
    random_subsets: int = 0  # seeded random subsets and complements
    separates_pairs: bool = False  # every two composite-checked generators are separated

    def summary(self) -> str:
        """One line for the CLI: what was checked, never "verified" beyond that."""
        n, k = self.generators, self.individually_checked
        head = f"{n:,} generators checked on the module: "
        if n == k:
            what = "each individually"
        else:
            kinds = [f"{self.contiguous_batches} contiguous batches"]
            if self.bit_split_subsets:
                kinds.append(f"{self.bit_split_subsets} bit-split subsets")
            if self.random_subsets:
                kinds.append(f"{self.random_subsets} seeded random subsets")
            what = (f"{k:,} individually, the other {n - k:,} in {self.composites} composites "
                    f"({' + '.join(kinds)}"
                    + ("; every pair separated)" if self.separates_pairs and n - k > 1 else ")"))
        return (f"{head}{what}; {self.forward_passes} forward passes, max rel. error "
                f"{self.max_rel_error:.1e}")

    def as_dict(self) -> dict:
        return dict(self.__dict__, summary=self.summary())


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


def composite_plan(first: int, n: int, batches: int = 8, separating: bool = True,
                   random_subsets: int = 4, seed: int = 0) -> list[tuple[str, list[int]]]:
    """The composites that check generators ``first..n-1``: ``(kind, sorted indices)``.

    Kinds: ``"batch"`` (contiguous, covering all), ``"bit"`` (position bit b set, and its
    complement, for b < ceil(log2 m); omitted unless ``separating``), ``"random"`` (seeded half
    subsets and their complements).  Duplicates and empty sets are dropped (first kind wins), so
    small m costs no more than m composites' worth.  Deterministic in ``seed``."""
    m = n - first
    plan: list[tuple[str, list[int]]] = []
    seen: set[tuple[int, ...]] = set()

    def add(kind: str, members: np.ndarray) -> None:
        key = tuple(int(i) for i in members)
        if key and key not in seen:
            seen.add(key)
            plan.append((kind, list(key)))

    if m <= 0:
        return plan
    pos = np.arange(m)
    bounds = np.linspace(0, m, min(batches, m) + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        add("batch", first + pos[lo:hi])
    if separating:
        for b in range((m - 1).bit_length()):
            bit = (pos >> b) & 1 == 1
            add("bit", first + pos[bit])
            add("bit", first + pos[~bit])
    rng = np.random.default_rng([seed, 0x5EB])
    for _ in range(random_subsets):
        inside = rng.random(m) < 0.5
        add("random", first + pos[inside])
        add("random", first + pos[~inside])
    return plan


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
                     rtol: float = 1e-4, seed: int = 0, separating: bool = True,
                     random_subsets: int = 4) -> NumericResult:
    """Raise :class:`AuditError` if a generator is found to change the outputs.

    Checks the first ``individual`` generators alone and the rest in the composites of
    :func:`composite_plan` (``separating=False`` and ``random_subsets=0`` give the old,
    contiguous-batches-only check, which two bad generators can pass by masking each other); the
    guarantee is in the module docstring."""
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

    def composite_holds(members: list[int]) -> bool:
        try:
            return holds(compose([generators[i] for i in members]))
        except _Unappliable:
            return False  # bisect down to the generator that cannot be applied

    def bisect(members: list[int]) -> None:
        """Raise for a failing generator among ``members``, whose composite fails."""
        if len(members) == 1:
            if not check_one(members[0]):
                fail(members[0])
            return
        mid = len(members) // 2
        if not composite_holds(members[:mid]):
            bisect(members[:mid])
        # the left half holds (or bisected to nothing): the right half must fail
        bisect(members[mid:])

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
    plan = composite_plan(first, n, batches, separating, random_subsets, seed)
    for kind, members in plan:
        if not composite_holds(members):
            bisect(members)
            raise AuditError(
                f"the composite of reported symmetries #{members[0]}..#{members[-1]} "
                f"({len(members)} generators, {kind} subset) changes the module's outputs, but "
                "bisection found no single failing generator (numerical error accumulating "
                "over the composite?): this is a bug in asymspec's audit; please report it "
                "with the model")
    counts = {k: sum(1 for kind, _ in plan if kind == k) for k in ("batch", "bit", "random")}
    return NumericResult(n, passes, first, worst, time.perf_counter() - t0,
                         composites=len(plan), contiguous_batches=counts["batch"],
                         bit_split_subsets=counts["bit"], random_subsets=counts["random"],
                         separates_pairs=separating or n - first <= 1)
