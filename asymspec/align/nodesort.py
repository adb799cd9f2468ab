"""NodeSort (Sorensen 2020): a canonical representative of a network's permutation orbit.

Every free group's units are put in the exact lexicographic order of their *keys*, a row per
unit built from the tensors having an axis permuted by the group (state_dict order):

1. incoming tensors (the group is axis 0: weights flattened, biases, norm affine parameters) whose
   other axes are decided — input / output axes, or groups already canonicalised (groups are
   visited in topological order) — rearranged by those decisions;
2. incoming tensors with undecided axes (e.g. a residual stream's ``conv2`` rows, whose inputs
   are the block's inner channels): each row's values sorted, which no permutation of the other
   axes changes;
3. outgoing tensors (the group on a later axis), by the same two rules.

The thesis' key ``<row, (p^0, p^1, ...)>`` overflows; ``np.lexsort`` compares exactly.  A group
is one permutation for all its nodes (residual streams sort once, consistently); attention head
groups sort within each head, then the heads by their sorted blocks of both partner groups.
``canonicalize(pi(theta)) == canonicalize(theta)`` for every pi unless two units have equal
keys (then they are interchangeable as far as those keys tell; exact ties do not occur for
trained or randomly initialised float weights).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from asymspec.align.weight_matching import group_units, inverse, matched_leaf
from asymspec.errors import UserError
from asymspec.ir.graph import IRGraph
from asymspec.ir.permgroups import PermSpec, perm_spec
from asymspec.ir.permute import permute_state_dict, tensor_axes

_FAST_COLUMNS = 8


def lex_order(keys: np.ndarray) -> np.ndarray:
    """Row indices in exact lexicographic order of the rows of ``keys`` (column 0 first)."""
    n = keys.shape[0]
    if keys.shape[1] == 0 or n <= 1:
        return np.arange(n)
    head = keys[:, :_FAST_COLUMNS]
    order = np.lexsort(head.T[::-1])
    s = head[order]
    if not np.any(np.all(s[1:] == s[:-1], axis=1)):
        return order  # the first columns already decide: same order as the full sort
    return np.lexsort(keys.T[::-1])


class _Sorter:
    def __init__(self, ir: IRGraph, spec: PermSpec, state: Mapping[str, torch.Tensor]) -> None:
        self.ir, self.spec = ir, spec
        derived = set(spec.derived)
        self.tensors: list[tuple[np.ndarray, list[tuple[str, str] | None]]] = []
        for key, v in state.items():
            if not (v.is_floating_point() and matched_leaf(key)):
                continue
            axes = tensor_axes(ir, key) or ()
            labels: list[tuple[str, str] | None] = []
            for node in axes[: v.dim()]:
                if node is not None and node in spec.node_group:
                    labels.append(("g", spec.node_group[node]))
                elif node is not None and node in derived:
                    labels.append(("d", node))
                else:
                    labels.append(None)
            if any(lab is not None for lab in labels):
                self.tensors.append((v.detach().cpu().double().numpy(), labels))
        self.sources = {d: {spec.node_group[s] for s in ir.node(d)["inputs"]
                            if s in spec.node_group} for d in derived}

    def keys(self, g: str, inv: Mapping[str, np.ndarray]) -> np.ndarray:
        """The key matrix of group ``g`` given the decided groups' gather indices ``inv``."""
        node_inv: dict[tuple[str, str], np.ndarray] = {("g", h): p for h, p in inv.items()}
        if self.sources:
            node_perms = self.spec.node_perms(self.ir, {h: inverse(p) for h, p in inv.items()})
            for d, srcs in self.sources.items():
                if srcs <= set(inv) and d in node_perms:
                    node_inv[("d", d)] = inverse(node_perms[d])
        exact_in, sorted_in, exact_out, sorted_out = [], [], [], []
        for t, labels in self.tensors:
            for dim, lab in enumerate(labels):
                if lab != ("g", g):
                    continue
                decided, u = True, t
                for d2, lab2 in enumerate(labels):
                    if d2 == dim or lab2 is None:
                        continue
                    if lab2 in node_inv:
                        u = np.take(u, node_inv[lab2], axis=d2)
                    elif lab2[0] == "d" and not self.sources.get(lab2[1]):
                        continue  # a derived axis no free group moves
                    else:
                        decided = False
                rows = np.moveaxis(u, dim, 0).reshape(u.shape[dim], -1)
                if not decided:
                    rows = np.sort(rows, axis=1)
                target = (exact_in if decided else sorted_in) if dim == 0 else \
                    (exact_out if decided else sorted_out)
                target.append(rows)
        parts = exact_in + sorted_in + exact_out + sorted_out
        if not parts:
            return np.zeros((self.spec.groups[g].size, 0))
        return np.concatenate(parts, axis=1)


def _heads_order(keys: list[np.ndarray], heads: int) -> list[np.ndarray]:
    within = []
    for k in keys:
        dh = k.shape[0] // heads
        within.append([h * dh + lex_order(k[h * dh:(h + 1) * dh]) for h in range(heads)])
    head_keys = np.concatenate(
        [np.stack([k[w[h]].reshape(-1) for h in range(heads)]) for k, w in zip(keys, within)],
        axis=1)
    head_order = lex_order(head_keys)
    return [np.concatenate([w[h] for h in head_order]) for w in within]


def canonicalize(ir: IRGraph, state: Mapping[str, torch.Tensor]
                 ) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """NodeSort: ``(perms, canonical state_dict)``; ``perms[g][u]`` is the new position of unit
    ``u`` of group ``g``."""
    spec = perm_spec(ir, list(state))
    sorter = _Sorter(ir, spec, state)
    inv: dict[str, np.ndarray] = {}
    for unit in group_units(spec):
        keys = [sorter.keys(g, inv) for g in unit]
        if spec.groups[unit[0]].kind != "heads":
            inv[unit[0]] = lex_order(keys[0])
        else:
            for g, order in zip(unit, _heads_order(keys, spec.groups[unit[0]].heads)):
                inv[g] = order
    perms = {g: inverse(p) for g, p in inv.items()}
    return perms, permute_state_dict(ir, state, spec.node_perms(ir, perms))


def _check_same_keys(states: list[Mapping[str, torch.Tensor]]) -> None:
    ref = states[0]
    for i, s in enumerate(states[1:], 1):
        if set(s) != set(ref):
            diff = sorted(set(s) ^ set(ref))
            raise UserError(f"state_dict {i} has different keys from state_dict 0: "
                            f"{', '.join(diff[:5])}")
        for k in ref:
            if tuple(s[k].shape) != tuple(ref[k].shape):
                raise UserError(f"shape mismatch for '{k}': {tuple(ref[k].shape)} vs "
                                f"{tuple(s[k].shape)}")


def _combine(states: list[Mapping[str, torch.Tensor]], weights: list[float]
             ) -> dict[str, torch.Tensor]:
    _check_same_keys(states)
    out: dict[str, torch.Tensor] = {}
    for k, ref in states[0].items():
        if ref.is_floating_point():
            acc = sum(w * s[k].double() for w, s in zip(weights, states))
            out[k] = acc.to(ref.dtype)
        elif k.endswith("num_batches_tracked"):
            out[k] = ref.clone()  # a counter, not a per-network constant
        else:
            for s in states[1:]:
                if not torch.equal(s[k], ref):
                    raise UserError(f"non-float tensor '{k}' differs between the networks "
                                    "(masks / fixed buffers must be equal to interpolate)")
            out[k] = ref.clone()
    return out


def interpolate(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                t: float) -> dict[str, torch.Tensor]:
    """``(1 - t) * a + t * b`` for every float tensor (parameters and buffers alike); bool / int
    buffers must be equal and are copied (``num_batches_tracked`` is taken from ``a``)."""
    return _combine([state_a, state_b], [1.0 - t, t])


def average(ir: IRGraph, states: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Canonicalise every network (NodeSort), then take the mean of the canonical states."""
    if not states:
        raise UserError("average needs at least one state_dict")
    canon = [canonicalize(ir, s)[1] for s in states]
    return _combine(canon, [1.0 / len(canon)] * len(canon))
