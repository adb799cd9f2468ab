"""Permutation groups of a network: which units permute together, derived from the IR alone.

This is the object Git Re-Basin calls a *permutation spec*.  Alignment (weight / activation
matching), canonicalisation (NodeSort) and ``asymspec perm-spec`` all read it; none of them has
per-architecture tables.

Construction:

* nodes joined by a **full identity map** (activation, norm, residual add, pooling, FiGLU's
  product, ...) must be permuted identically: they form one :class:`PermGroup` (union-find);
* attention ties ``q`` with ``k`` (scores are q·k) and ``v`` with the attention output; these
  two groups are ``kind="heads"``: a permutation must keep heads as blocks, and both groups
  must use the same head order (``head_partner``);
* a group containing an input or output unit is ``fixed``;
* nodes reached through **non-identity maps** (flatten, channel padding, concat) are *derived*:
  their permutation follows from their inputs' (:meth:`PermSpec.node_perms`).  A group that a
  derived node joins through an identity map would need a partially constrained permutation
  (e.g. a ResNet option-A stream around its zero-padded channels); v1 marks it ``fixed`` —
  sound (the function never changes) but it leaves that group unaligned;
* a node with frozen per-unit biases (fixed_bias) fixes its group; masked / noisy weights do
  not fix anything here — alignment of asymmetric nets is legal, just pointless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from networkx.utils import UnionFind

from asymspec.ir.graph import IRGraph
from asymspec.ir.permute import permute_state_dict, tensor_axes


@dataclass
class PermGroup:
    name: str
    size: int
    nodes: list[str]
    kind: str = "free"  # free | heads | fixed
    heads: int = 0
    head_partner: str | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PermSpec:
    groups: dict[str, PermGroup]
    node_group: dict[str, str]  # every permuted node that belongs to a group
    derived: list[str]  # nodes whose permutation is computed from their inputs
    axes: dict[str, tuple[str | None, ...]] = field(default_factory=dict)  # key -> group/axis

    @property
    def free_groups(self) -> list[PermGroup]:
        return [g for g in self.groups.values() if g.kind != "fixed"]

    def identity(self) -> dict[str, np.ndarray]:
        return {g.name: np.arange(g.size) for g in self.free_groups}

    def node_perms(self, ir: IRGraph, perms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-node unit permutations (for :func:`permute_state_dict`) from group permutations.

        ``perms[group][u]`` is the new position of unit ``u``.  Groups not given stay.
        """
        out: dict[str, np.ndarray] = {}
        for node, g in self.node_group.items():
            if g in perms:
                out[node] = np.asarray(perms[g], dtype=np.int64)
        for node in self.derived:  # in topological order
            p = _derived_perm(ir, node, out)
            if p is not None:
                out[node] = p
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "asymspec-permspec/1",
            "groups": [g.as_dict() for g in self.groups.values()],
            "derived": self.derived,
            "axes": {k: list(v) for k, v in self.axes.items()},
        }


def _derived_perm(ir: IRGraph, node: str, perms: dict[str, np.ndarray]) -> np.ndarray | None:
    """Permutation of a node fed only by index maps: unit j reads (edge e, unit index_e[j]);
    under the inputs' permutations it moves to the unit reading (e, p_e[index_e[j]]) with the
    same extra colour (spatial position / token)."""
    nd = ir.node(node)
    size = nd["size"]
    colour = nd["unit_colour"] if nd["unit_colour"] is not None else np.zeros(size, np.int64)
    keys: dict[tuple[int, int, int], int] = {}
    src_of = np.full(size, -1)
    idx_of = np.full(size, -1)
    moved = False
    for e_i, (src, e) in enumerate(ir.in_edges(node)):
        if e["kind"] != "map" or ir.node(src)["size"] == 0:
            continue
        j = np.nonzero(e["index"] >= 0)[0]
        src_of[j] = e_i
        idx_of[j] = e["index"][j]
        for jj, ii in zip(j.tolist(), e["index"][j].tolist()):
            keys[(e_i, ii, int(colour[jj]))] = jj
        if src in perms:
            moved = True
    if not moved:
        return None
    srcs = [s for s, _ in ir.in_edges(node)]
    out = np.arange(size)
    for jj in range(size):
        if src_of[jj] < 0:
            continue
        p = perms.get(srcs[src_of[jj]])
        if p is None:
            continue
        out[jj] = keys[(int(src_of[jj]), int(p[idx_of[jj]]), int(colour[jj]))]
    return out


def _is_full_identity(ir: IRGraph, src: str, dst: str, e: dict) -> bool:
    return (e["kind"] == "map" and ir.node(src)["size"] == ir.node(dst)["size"] > 0
            and np.array_equal(e["index"], np.arange(ir.node(dst)["size"])))


def perm_spec(ir: IRGraph, state_keys: list[str] | None = None) -> PermSpec:
    """Derive the permutation spec of ``ir`` (``state_keys``: fill ``axes`` for these keys)."""
    # group_tag nodes are the verifier's encoding of grouped convolutions, not units of the
    # network: the block structure they impose is expressed below as "heads" groups
    order = [n for n in ir.topo_order() if ir.node(n)["size"] > 0
             and ir.node(n)["op"] != "group_tag"]
    sizes = set(order)
    uf = UnionFind(order)
    derived = []
    for a, b in ir.ties():  # every use of a shared tensor is permuted alike
        if a in sizes and b in sizes:
            uf.union(a, b)
    for n in order:
        node = ir.node(n)
        ins = [(u, e) for u, e in ir.in_edges(n) if ir.node(u)["size"] > 0]
        if node["op"] == "attention":
            q, k, v = node["inputs"]
            uf.union(q, k)
            uf.union(v, n)
            continue
        # a map copying no unit (a reduction over the channels, e.g. RMSNorm's mean) derives
        # nothing: its node is not a copy of its input's units
        maps = [(u, e) for u, e in ins if e["kind"] == "map" and bool((e["index"] >= 0).any())]
        full = [(u, e) for u, e in maps if _is_full_identity(ir, u, n, e)]
        for u, _ in full:
            uf.union(u, n)
        if maps and len(full) < len(maps):
            derived.append(n)
    members: dict[str, list[str]] = {}
    for n in order:
        members.setdefault(uf[n], []).append(n)
    groups: dict[str, PermGroup] = {}
    node_group: dict[str, str] = {}
    derived_set = set(derived)
    for root, nodes in members.items():
        name = nodes[0]
        g = PermGroup(name, ir.node(root)["size"], nodes)
        for n in nodes:
            node = ir.node(n)
            if node["role"] in ("input", "output"):
                g.kind, g.reason = "fixed", f"contains {node['role']} '{n}'"
            elif isinstance(node["bias"], torch.Tensor):
                g.kind, g.reason = "fixed", f"frozen biases at '{n}'"
            elif node["op"] == "groupnorm" and node["attrs"]["groups"] > 1:
                g.kind, g.reason = "fixed", f"GroupNorm with groups at '{n}'"
            elif n in derived_set and len(nodes) > 1:
                g.kind, g.reason = "fixed", f"'{n}' is partly derived (padding / concat)"
            elif n not in derived_set and node["unit_colour"] is not None \
                    and len(np.unique(node["unit_colour"])) > 1:
                # units told apart by constant values (a constant read as features): only
                # colour-preserving permutations are symmetries, which no group kind states
                g.kind, g.reason = "fixed", f"units of '{n}' carry distinct constant values"
        if g.kind != "fixed" and len(nodes) == 1 and nodes[0] in derived_set:
            continue  # a purely derived node: no group of its own
        groups[name] = g
        for n in nodes:
            node_group[n] = name
    # attention: heads kind, partner groups share the head order
    for n in order:
        node = ir.node(n)
        if node["op"] != "attention":
            continue
        q, _, v = node["inputs"]
        gq, gv = groups[node_group[q]], groups[node_group[v]]
        for g, other in ((gq, gv), (gv, gq)):
            if g.kind != "fixed":
                g.kind, g.heads, g.head_partner = "heads", node["attrs"]["heads"], other.name
        if gq.kind == "fixed" or gv.kind == "fixed":
            gq.kind = gv.kind = "fixed"
            gq.reason = gv.reason = gq.reason or gv.reason
    # a mean over attention heads (GAT with concat=False) needs one within-head permutation
    # shared by every head, which no group kind states: its input and output groups are fixed
    for n in order:
        if ir.node(n)["op"] == "head_mean":
            for m in (n, *ir.node(n)["inputs"]):
                g = groups.get(node_group.get(m, ""))
                if g is not None and g.kind != "fixed":
                    g.kind, g.reason = "fixed", f"mean over attention heads at '{n}'"
    _grouped_convs(ir, groups, node_group)
    # a fixed group containing a derived node pins the groups feeding that node (their units
    # are copied into it); propagate until nothing changes
    changed = True
    while changed:
        changed = False
        for d in derived:
            gd = groups.get(node_group.get(d, ""))
            if gd is None or gd.kind != "fixed":
                continue
            for src in ir.node(d)["inputs"]:
                gs = groups.get(node_group.get(src, ""))
                if gs is not None and gs.kind != "fixed":
                    gs.kind, gs.reason = "fixed", f"feeds '{d}' of a fixed group"
                    changed = True
    for g in groups.values():
        if g.kind == "fixed":
            for n in g.nodes:
                node_group.pop(n, None)
    spec = PermSpec(groups, node_group, [n for n in derived if n not in node_group])
    for key in state_keys or []:
        axes = tensor_axes(ir, key)
        if axes:
            spec.axes[key] = tuple(node_group.get(a) if a else None for a in axes)
    return spec


def _grouped_convs(ir: IRGraph, groups: dict[str, PermGroup], node_group: dict[str, str]
                   ) -> None:
    """A grouped convolution (``groups`` blocks; the audit's ``group_tag`` nodes) lets a
    permutation move its input and output channels only in whole blocks, with one block order
    on both sides, and freely within blocks: both sides become ``heads`` groups linked by
    ``head_partner`` (chains of grouped convolutions form one class sharing the block order)."""
    for t in ir.g:
        nd = ir.node(t)
        if nd["op"] != "group_tag" or nd["inputs"]:
            continue  # the per-conv source of block ids has no inputs
        blocks = nd["size"]
        sides = [ir.node(c)["inputs"][0] for c in ir.consumers(t)]
        gs = [groups.get(node_group.get(n, "")) for n in sides]
        if any(g is None for g in gs):
            continue
        a, b = gs[0], gs[-1]
        why = ""
        if a.kind == "fixed" or b.kind == "fixed":
            why = f"grouped convolution '{t.rpartition('.')[0]}' next to a fixed group"
        elif any(g.kind == "heads" and g.heads != blocks for g in (a, b)):
            why = f"grouped convolution '{t.rpartition('.')[0]}' with another block count"
        elif a is not b and a.head_partner and b.head_partner \
                and b.name not in (a.head_partner, a.name) and a.name != b.head_partner:
            why = f"grouped convolution '{t.rpartition('.')[0]}' joins two block classes"
        if why:
            for g in (a, b):
                if g.kind != "fixed":
                    g.kind, g.reason = "fixed", why
            continue
        for g in (a, b):
            g.kind, g.heads = "heads", blocks
        if a is not b:
            if not a.head_partner:
                a.head_partner = b.name
            else:
                b.head_partner = a.name
    # one block order per class: a class with a fixed member is fixed as a whole
    changed = True
    while changed:
        changed = False
        for g in groups.values():
            p = groups.get(g.head_partner or "")
            if p is None or (g.kind == "fixed") == (p.kind == "fixed"):
                continue
            free, fixed = (g, p) if p.kind == "fixed" else (p, g)
            free.kind, free.reason = "fixed", f"shares its block order with '{fixed.name}' " \
                f"({fixed.reason})"
            changed = True


def head_classes(spec: PermSpec) -> list[tuple[str, ...]]:
    """Free groups that must share one head / block order (linked by ``head_partner``), each
    class in group order; other free groups are singletons."""
    free = [g.name for g in spec.free_groups]
    uf = UnionFind(free)
    for g in spec.free_groups:
        if g.kind == "heads" and g.head_partner in uf.parents:
            uf.union(g.name, g.head_partner)
    classes: dict[str, list[str]] = {}
    for n in free:
        classes.setdefault(uf[n], []).append(n)
    return [tuple(c) for c in classes.values()]


def random_group_perms(spec: PermSpec, gen: torch.Generator) -> dict[str, np.ndarray]:
    """A random permutation for every non-fixed group, respecting head structure."""
    out: dict[str, np.ndarray] = {}
    head_orders: dict[frozenset, np.ndarray] = {}
    cls = {n: frozenset(c) for c in head_classes(spec) for n in c}
    for g in spec.free_groups:
        if g.kind == "heads":
            pair = cls[g.name]
            if pair not in head_orders:
                head_orders[pair] = torch.randperm(g.heads, generator=gen).numpy()
            dh = g.size // g.heads
            order = head_orders[pair]
            perm = np.empty(g.size, dtype=np.int64)
            for h in range(g.heads):
                within = torch.randperm(dh, generator=gen).numpy()
                perm[h * dh + np.arange(dh)] = order[h] * dh + within
            out[g.name] = perm
        else:
            out[g.name] = torch.randperm(g.size, generator=gen).numpy()
    return out


def plant_permutation(
    ir: IRGraph, state: dict[str, torch.Tensor], seed: int = 0, noise: float = 0.0
) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Permute ``state`` by random group permutations and add relative Gaussian noise
    (``noise * std`` per tensor; frozen masks, fixed values and offsets stay exact).

    Returns ``(planted group perms, new state)`` — the standard test of an alignment method:
    it should find permutations undoing ``planted`` (see ``asymspec.align.exact_groups``).
    """
    spec = perm_spec(ir, list(state))
    planted = random_group_perms(spec, torch.Generator().manual_seed(seed))
    moved = permute_state_dict(ir, state, spec.node_perms(ir, planted))
    g = torch.Generator().manual_seed(seed + 1000)
    out = {}
    for k, v in moved.items():
        frozen = k.endswith(("_mask", "_fixed", "_offset"))
        if noise and v.is_floating_point() and v.numel() > 1 and not frozen:
            v = v + noise * v.std() * torch.randn(v.shape, generator=g)
        out[k] = v
    return planted, out
