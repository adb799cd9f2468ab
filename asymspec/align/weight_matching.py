"""Weight matching (Git Re-Basin, Ainsworth et al. 2023) driven only by the IR's PermSpec.

Coordinate descent: for one permutation group ``g`` at a time, every tensor with an axis
permuted by ``g`` contributes ``<A, B with all its other axes permuted by the current
permutations>`` contracted over everything but that axis; the summed ``(n, n)`` matrix is
solved with ``linear_sum_assignment(maximize=True)``.  Groups are visited in a random order per
sweep; the descent stops after a sweep without improvement.  Attention ``heads`` groups and their
partner share one head order: a head-level assignment (cost = best within-head matching score,
both partner groups summed) followed by within-head assignments.  Fixed groups never move.

There is no per-architecture code: MLPs, ResNets (streams, inner channels, shortcut convs),
GNNs, transformers and audited modules all come through :func:`perm_spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from asymspec.errors import UserError
from asymspec.ir.graph import IRGraph
from asymspec.ir.permgroups import PermSpec, head_classes, perm_spec
from asymspec.ir.permute import permute_state_dict, tensor_axes

# state-dict leaves that are statistics or frozen constants: permuted, but not matched on
SKIP_LEAVES = ("running_mean", "running_var", "num_batches_tracked", "weight_mask",
               "weight_fixed", "weight_offset")


CACHE_BYTES = 1 << 30  # cost contributions kept between group updates (float32)


@dataclass
class AlignResult:
    perms: dict[str, np.ndarray]  # group name -> perm (unit u of B goes to position perm[u])
    state: dict[str, torch.Tensor]  # B's state_dict permuted to align with A
    objective: list[float] = field(default_factory=list)  # per sweep / per group similarity
    exact_groups: int | None = None  # filled by tests/benchmarks when a planted perm is known


# ----------------------------------------------------------------------------- assignment helpers
def lap(cost: np.ndarray) -> np.ndarray:
    """Column matched to each row, maximising the total (the gather index for B)."""
    _, col = linear_sum_assignment(np.asarray(cost, dtype=np.float64), maximize=True)
    return col


def solve_heads(costs: list[np.ndarray], heads: int) -> list[np.ndarray]:
    """Head-structured assignment for partner groups sharing one head order.

    ``costs[k]`` is the ``(n_k, n_k)`` similarity of group ``k`` (A units x B units).  Returns one
    gather index per group: aligned unit ``a*dh + i`` of B is B's unit ``inv[a*dh + i]``.
    """
    score = np.zeros((heads, heads))
    within: list[list[list[np.ndarray]]] = []
    for c in costs:
        dh = c.shape[0] // heads
        blocks = c.reshape(heads, dh, heads, dh)
        w = [[np.empty(0, np.int64)] * heads for _ in range(heads)]
        for a in range(heads):
            for b in range(heads):
                blk = blocks[a, :, b, :]
                col = lap(blk)
                w[a][b] = col
                score[a, b] += blk[np.arange(dh), col].sum()
        within.append(w)
    head_of = lap(score)
    out = []
    for c, w in zip(costs, within):
        dh = c.shape[0] // heads
        inv = np.concatenate([head_of[a] * dh + w[a][head_of[a]] for a in range(heads)])
        out.append(inv.astype(np.int64))
    return out


def group_units(spec: PermSpec) -> list[tuple[str, ...]]:
    """Coordinates of the descent: a free group, or a class of head-partner groups sharing one
    head / block order (attention q-k and v groups, the two sides of grouped convolutions)."""
    return head_classes(spec)


def matched_leaf(key: str) -> bool:
    return key.rpartition(".")[2] not in SKIP_LEAVES


def check_states(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor]) -> None:
    if set(state_a) != set(state_b):
        diff = sorted(set(state_a) ^ set(state_b))
        raise UserError(f"the two state_dicts have different keys: {', '.join(diff[:5])}"
                        + (" ..." if len(diff) > 5 else ""))
    for k in state_a:
        if tuple(state_a[k].shape) != tuple(state_b[k].shape):
            raise UserError(f"shape mismatch for '{k}': {tuple(state_a[k].shape)} vs "
                            f"{tuple(state_b[k].shape)}")


def inverse(perm: np.ndarray) -> np.ndarray:
    return np.argsort(np.asarray(perm)).astype(np.int64)


def exact_groups(found: Mapping[str, np.ndarray], planted: Mapping[str, np.ndarray]) -> int:
    """How many groups were recovered exactly (``found`` undoes ``planted``: the compositions
    agree as maps from B's units back to A's)."""
    return sum(int(np.array_equal(np.asarray(found[g])[np.asarray(planted[g])],
                                  np.arange(len(planted[g])))) for g in planted)


# ----------------------------------------------------------------------------- the problem
def _derived_index(ir: IRGraph, spec: PermSpec, node: str) -> list[tuple[str, np.ndarray]]:
    """For a derived node (flatten, concat), per source group ``g`` an index ``J`` (n_g, m):
    ``J[i, c]`` = the derived unit reading unit ``i`` of the source with extra key ``c``.
    Moving source unit ``i`` moves exactly the units ``J[i]``, keeping their key."""
    nd = ir.node(node)
    colour = nd["unit_colour"] if nd["unit_colour"] is not None else np.zeros(nd["size"], np.int64)
    out = []
    for src, e in ir.in_edges(node):
        if e["kind"] != "map" or src not in spec.node_group:
            continue
        idx = e["index"]
        j = np.nonzero(idx >= 0)[0]
        n_src = ir.node(src)["size"]
        counts = np.bincount(idx[j], minlength=n_src)
        if n_src == 0 or counts.min() != counts.max() or counts[0] == 0:
            continue
        order = np.lexsort((colour[j], idx[j]))
        big_j = j[order].reshape(n_src, counts[0])
        if not (colour[big_j] == colour[big_j[:1]]).all():
            continue
        out.append((spec.node_group[src], big_j))
    return out


class MatchingProblem:
    """Tensors of A and B (float32, torch) indexed by the groups permuting their axes."""

    def __init__(self, ir: IRGraph, state_a: Mapping[str, torch.Tensor],
                 state_b: Mapping[str, torch.Tensor]) -> None:
        check_states(state_a, state_b)
        self.ir = ir
        self.spec = perm_spec(ir, list(state_a))
        self.units = group_units(self.spec)
        self.sizes = {g.name: g.size for g in self.spec.free_groups}
        derived = set(self.spec.derived)
        self.keys: list[str] = []
        self.a: list[torch.Tensor] = []
        self.b: list[torch.Tensor] = []
        self.labels: list[list[tuple[str, str] | None]] = []  # per dim: ("g"|"d", name) / None
        # group -> entries (tensor index, dim, A with `dim` moved first (rows J-gathered),
        # [(axis of that tensor, label) to permute], B flattened to (n, -1)).  A's other axes
        # are permuted (by the forward permutations) instead of B's: the same inner product,
        # and index_select on a contiguous tensor leaves it contiguous, so no reshape copies.
        self.entries: dict[str, list[tuple]] = {g: [] for g in self.sizes}
        self.derived_used: set[str] = set()
        for key, va in state_a.items():
            if not (va.is_floating_point() and matched_leaf(key)):
                continue
            axes = tensor_axes(ir, key)
            if not axes:
                continue
            labels: list[tuple[str, str] | None] = []
            for node in axes[: va.dim()]:
                if node is not None and node in self.spec.node_group:
                    labels.append(("g", self.spec.node_group[node]))
                elif node is not None and node in derived:
                    labels.append(("d", node))
                else:
                    labels.append(None)
            if all(lab is None for lab in labels):
                continue
            ti = len(self.keys)
            a = va.detach().to("cpu", torch.float32)
            b = state_b[key].detach().to("cpu", torch.float32)
            self.keys.append(key)
            self.a.append(a)
            self.b.append(b)
            self.labels.append(labels)
            for dim, lab in enumerate(labels):
                if lab is None:
                    continue
                others = [(pos, lab2) for pos, lab2 in enumerate(
                    [x for d2, x in enumerate(labels) if d2 != dim], start=1)
                    if lab2 is not None]
                am = a.movedim(dim, 0).contiguous()
                bm = b.movedim(dim, 0)
                if lab[0] == "g":
                    n = a.shape[dim]
                    self.entries[lab[1]].append(
                        (ti, dim, am, others, bm.reshape(n, -1).contiguous()))
                    continue
                self.derived_used.add(lab[1])
                for g, big_j in _derived_index(ir, self.spec, lab[1]):
                    jt = torch.as_tensor(big_j.reshape(-1))
                    n = big_j.shape[0]
                    self.entries[g].append((ti, dim, am.index_select(0, jt), others,
                                            bm.index_select(0, jt).reshape(n, -1)))
        self.derived_sources = {
            d: {self.spec.node_group[s] for s in ir.node(d)["inputs"] if s in self.spec.node_group}
            for d in self.derived_used}
        self._cache: dict[tuple[str, int], tuple[tuple[bytes, ...], torch.Tensor]] = {}
        self._cache_bytes = 0

    # gather indices --------------------------------------------------------------------------
    def identity(self) -> dict[str, np.ndarray]:
        return {g: np.arange(n) for g, n in self.sizes.items()}

    def gathers(self, inv: Mapping[str, np.ndarray]) -> dict[tuple[str, str], torch.Tensor]:
        """Gather indices for A's axes: A[perm] against B equals A against B[inv]."""
        perms = {g: inverse(p) for g, p in inv.items()}
        out = {("g", g): torch.as_tensor(p) for g, p in perms.items()}
        if self.derived_used:
            node_perms = self.spec.node_perms(self.ir, perms)
            for d in self.derived_used:
                if d in node_perms:
                    out[("d", d)] = torch.as_tensor(np.asarray(node_perms[d], dtype=np.int64))
        return out

    def _resolved(self, others, done: set[str]) -> bool:
        for _, lab in others:
            if lab[0] == "g" and lab[1] not in done:
                return False
            if lab[0] == "d" and not self.derived_sources[lab[1]] <= done:
                return False
        return True

    def cost(self, g: str, gathers: Mapping, done: set[str] | None = None) -> np.ndarray:
        """Similarity of A's and B's units of ``g`` (rows: A, columns: B); with ``done``, only
        tensors whose other axes all belong to groups in ``done`` (or fixed ones) count."""
        n = self.sizes[g]
        c = torch.zeros(n, n, dtype=torch.float64)
        for i, (_, _, am, others, bm) in enumerate(self.entries[g]):
            if done is not None and not self._resolved(others, done):
                continue
            # a contribution only changes with the permutations of its other axes: cache it
            # (late sweeps, where few groups still move, then cost almost nothing)
            state = tuple(gathers[lab].numpy().tobytes() if lab in gathers else b""
                          for _, lab in others)
            hit = self._cache.get((g, i))
            if hit is not None and hit[0] == state:
                c += hit[1]
                continue
            for pos, lab in others:
                idx = gathers.get(lab)
                if idx is not None:
                    am = am.index_select(pos, idx)
            part = am.reshape(n, -1) @ bm.T
            c += part
            if hit is not None or self._cache_bytes + part.numel() * 4 <= CACHE_BYTES:
                self._cache_bytes += 0 if hit is not None else part.numel() * 4
                self._cache[(g, i)] = (state, part)
        return c.numpy()

    def objective(self, inv: Mapping[str, np.ndarray]) -> float:
        """``sum <A, pi(B)>`` over the matched tensors."""
        gathers = self.gathers(inv)
        total = 0.0
        for a, b, labels in zip(self.a, self.b, self.labels):
            for dim, lab in enumerate(labels):
                idx = gathers.get(lab) if lab is not None else None
                if idx is not None:
                    a = a.index_select(dim, idx)
            total += float(torch.dot(a.reshape(-1), b.reshape(-1)))
        return total


def _topological_start(prob: MatchingProblem) -> dict[str, np.ndarray]:
    """Initial permutations from one pass in topological order, each group matched only on the
    tensors whose other axes are already decided (input / output axes count as decided).  On a
    permuted copy this recovers the permutation directly; the descent then refines it."""
    inv = prob.identity()
    done: set[str] = set()
    for unit in prob.units:
        gathers = prob.gathers(inv)
        costs = [prob.cost(g, gathers, done) for g in unit]
        costs = [c if np.any(c) else prob.cost(g, gathers) for c, g in zip(costs, unit)]
        if prob.spec.groups[unit[0]].kind != "heads":
            inv[unit[0]] = lap(costs[0])
        else:
            for g, p in zip(unit, solve_heads(costs, prob.spec.groups[unit[0]].heads)):
                inv[g] = p
        done.update(unit)
    return inv


def _descend(prob: MatchingProblem, inv: dict[str, np.ndarray], rng: np.random.Generator,
             max_sweeps: int) -> tuple[dict[str, np.ndarray], list[float]]:
    history: list[float] = []
    for _ in range(max_sweeps):
        progress = False
        for u in rng.permutation(len(prob.units)):
            unit = prob.units[u]
            gathers = prob.gathers(inv)
            costs = [prob.cost(g, gathers) for g in unit]
            if prob.spec.groups[unit[0]].kind != "heads":
                new = [lap(costs[0])]
            else:
                new = solve_heads(costs, prob.spec.groups[unit[0]].heads)
            old_score = sum(c[np.arange(len(p)), inv[g]].sum()
                            for c, g, p in zip(costs, unit, new))
            new_score = sum(c[np.arange(len(p)), p].sum() for c, p in zip(costs, new))
            if new_score > old_score + 1e-9 * max(1.0, abs(old_score)):
                progress = True
                for g, p in zip(unit, new):
                    inv[g] = p
        history.append(prob.objective(inv))
        if not progress:
            break
    return inv, history


def weight_matching(ir: IRGraph, state_a: Mapping[str, torch.Tensor],
                    state_b: Mapping[str, torch.Tensor], *, max_sweeps: int = 100, seed: int = 0,
                    restarts: int = 0, init: str = "topological") -> AlignResult:
    """Align B to A by weight matching.

    ``init="topological"`` (default) starts from :func:`_topological_start`, ``"identity"``
    from the identity as in Ainsworth et al.; ``restarts`` adds runs from random permutations,
    the best final objective wins.  ``objective`` lists ``sum <A, pi(B)>`` after each sweep.
    """
    if init not in ("topological", "identity"):
        raise UserError(f"init must be 'topological' or 'identity', not {init!r}")
    prob = MatchingProblem(ir, state_a, state_b)
    rng = np.random.default_rng(seed)
    best: tuple[float, dict[str, np.ndarray], list[float]] | None = None
    for r in range(restarts + 1):
        if r == 0:
            start = _topological_start(prob) if init == "topological" else prob.identity()
        else:
            start = {}
            for unit in prob.units:
                g0 = prob.spec.groups[unit[0]]
                if g0.kind == "heads":
                    heads = g0.heads
                    order = rng.permutation(heads)
                    for g in unit:
                        dh = prob.sizes[g] // heads
                        start[g] = np.concatenate(
                            [order[a] * dh + rng.permutation(dh) for a in range(heads)])
                else:
                    start[unit[0]] = rng.permutation(prob.sizes[unit[0]])
        inv, hist = _descend(prob, start, rng, max_sweeps)
        if not hist:
            hist = [prob.objective(inv)]
        if best is None or hist[-1] > best[0]:
            best = (hist[-1], inv, hist)
    assert best is not None
    perms = {g: inverse(p) for g, p in best[1].items()}
    state = permute_state_dict(ir, state_b, prob.spec.node_perms(ir, perms))
    return AlignResult(perms=perms, state=state, objective=best[2])
