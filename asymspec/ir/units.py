"""Expand the IR to the unit-level graph the automorphism search needs (a pure function).

Vertices are the units of every IR node (inputs and outputs included), plus a few auxiliary
vertices that encode structure a plain edge cannot: attention's query/key pairing and heads,
and GroupNorm's groups.  Colours:

* vertex colours separate IR nodes (an automorphism permutes units *within* a node); input and
  output units get one colour each (they are fixed points); a flattened unit carries its spatial
  position or token index; a frozen bias carries its value.
* a fully trainable weight is one dense block; frozen entries (W-Asym), noise offsets (syre) and
  FiGLU's F become override edges coloured by the exact float32 bits of their values — a conv
  filter's colour is its whole kernel pattern.  Bits, not rounded floats: values from the mask
  generator and from a loaded checkpoint give identical colours; -0.0 is folded into 0.0.
* parameter-free wiring (identity, concat slices, padding, flatten) becomes explicit edges
  coloured by the IR edge they come from.
"""

from __future__ import annotations

import numpy as np
import torch

from asymspec.ir.graph import IRGraph
from asymspec.ir.unitgraph import UnitGraph


def float_bits(t: torch.Tensor) -> np.ndarray:
    """Exact category of float values: float32 bits as int64, with -0.0 folded into +0.0."""
    a = t.detach().to(torch.float32).cpu().contiguous().numpy().copy()
    a[a == 0] = 0.0
    return a.view(np.int32).astype(np.int64)


class _Edges:
    def __init__(self) -> None:
        self.src: list[np.ndarray] = []
        self.dst: list[np.ndarray] = []
        self.col: list[np.ndarray] = []
        self.blk: list[np.ndarray] = []
        self.blocks: list[tuple[int, int, int, int, int]] = []
        self.next_colour = 0

    def colours(self, n: int) -> int:
        """Reserve ``n`` fresh edge colours; returns the first."""
        first = self.next_colour
        self.next_colour += n
        return first

    def add(self, src, dst, colour, block: int = -1) -> None:
        src = np.asarray(src, dtype=np.int64)
        self.src.append(src)
        self.dst.append(np.asarray(dst, dtype=np.int64))
        self.col.append(np.broadcast_to(np.asarray(colour, dtype=np.int64), src.shape).copy())
        self.blk.append(np.full(src.shape, block, dtype=np.int64))

    def add_block(self, s0: int, s1: int, d0: int, d1: int) -> tuple[int, int]:
        colour = self.colours(1)
        self.blocks.append((s0, s1, d0, d1, colour))
        return len(self.blocks) - 1, colour


def _entry_codes(edge: dict) -> np.ndarray | None:
    """Per (out, in) pair, an int64 code row describing its entries; None if all plain-trainable.

    Row layout: for each kernel position, (frozen?, fixed value bits, offset bits).
    """
    shape = edge["weight_shape"]
    out, inn = shape[0], shape[1]
    k = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    if edge["mask"] is None and edge["offset"] is None:
        return None
    parts = []
    if edge["mask"] is not None:
        frozen = (~edge["mask"]).reshape(out, inn, k).numpy().astype(np.int64)
        fixed = float_bits(edge["fixed"]).reshape(out, inn, k) * frozen
        parts += [frozen, fixed]
    if edge["offset"] is not None:
        parts.append(float_bits(edge["offset"]).reshape(out, inn, k))
    return np.concatenate(parts, axis=2).reshape(out, inn, -1)


def _is_full_identity(ir: IRGraph, u: str, v: str, e: dict) -> bool:
    size = ir.node(v)["size"]
    return (e["kind"] == "map" and ir.node(u)["size"] == size > 0
            and ir.node(v)["unit_colour"] is None
            and np.array_equal(e["index"], np.arange(size)))


def _merge_groups(ir: IRGraph, names: list[str]) -> dict[str, str]:
    """Representative node of each node: nodes joined by a full identity map share vertices.

    A full identity map ``u -> v`` forces every automorphism to permute ``u`` and ``v`` alike
    (unit ``i`` of ``v`` is the only neighbour of unit ``i`` of ``u`` along that edge colour),
    so the two unit sets can be one vertex set: colours of all members are folded into the
    vertex colours, edges keep their own colours, and identity maps inside a merged set are
    dropped (they are implied).  This shrinks residual streams and norm/activation chains to
    one vertex set each, which is what keeps the exact search small.  A merge that would put
    any other edge inside one set, or two edges between the same pair of sets, is skipped —
    such graphs keep the plain encoding.
    """
    topo = {n: i for i, n in enumerate(names)}
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # group-level adjacency, maintained under merges: neighbours and, per ordered pair, how many
    # edges are NOT full identities (those may never become internal)
    out: dict[str, set[str]] = {n: set() for n in names}
    inn: dict[str, set[str]] = {n: set() for n in names}
    hard: dict[tuple[str, str], int] = {}
    candidates = []
    for u, v, e in ir.g.edges(data=True):
        if u not in parent or v not in parent:
            continue
        out[u].add(v)
        inn[v].add(u)
        if _is_full_identity(ir, u, v, e):
            candidates.append((u, v))
        else:
            hard[(u, v)] = hard.get((u, v), 0) + 1
    candidates.sort(key=lambda c: (topo[c[1]], topo[c[0]]))
    for u, v in candidates:
        ru, rv = find(u), find(v)
        if ru == rv:
            continue
        a, b = (ru, rv) if topo[ru] <= topo[rv] else (rv, ru)
        if hard.get((a, b)) or hard.get((b, a)):
            continue  # a weighted edge would end up inside one vertex set
        if (out[a] & out[b]) - {a, b} or (inn[a] & inn[b]) - {a, b}:
            continue  # two edges between the same pair of vertex sets
        parent[b] = a
        for c in out.pop(b):
            inn[c].discard(b)
            if c != a:
                inn[c].add(a)
                out[a].add(c)
            if (b, c) in hard:
                hard[(a, c)] = hard.get((a, c), 0) + hard.pop((b, c))
        for c in inn.pop(b):
            out[c].discard(b)
            if c != a:
                out[c].add(a)
                inn[a].add(c)
            if (c, b) in hard:
                hard[(c, a)] = hard.get((c, a), 0) + hard.pop((c, b))
        out[a].discard(b)
        inn[a].discard(b)
    return {n: find(n) for n in names}


def expand(ir: IRGraph) -> UnitGraph:
    """The unit-level graph of ``ir`` (see :mod:`asymspec.ir.unitgraph` for its semantics)."""
    names = [n for n in ir.topo_order() if ir.node(n)["size"] > 0]
    index = {n: i for i, n in enumerate(names)}
    rep = _merge_groups(ir, names)
    members: dict[str, list[str]] = {}
    for n in names:
        members.setdefault(rep[n], []).append(n)
    offsets: dict[str, int] = {}
    sizes: dict[str, int] = {n: ir.node(n)["size"] for n in names}
    v = 0
    for r in members:
        offsets[r] = v
        v += sizes[r]
    for n in names:
        offsets[n] = offsets[rep[n]]
    n_units = v

    # ---- vertex colours: per group, unique rows of the members' per-unit keys
    colour_parts = []
    vnode = []
    vunit = []
    next_id = 0
    for r, group in members.items():
        s = sizes[r]
        units = np.arange(s, dtype=np.int64)
        cols = []
        for m in group:
            node = ir.node(m)
            k = np.zeros((s, 3), dtype=np.int64)
            if node["role"] in ("input", "output"):
                k[:, 0] = units + 1
            if node["unit_colour"] is not None:
                k[:, 1] = node["unit_colour"]
            if isinstance(node["bias"], torch.Tensor):
                k[:, 2] = float_bits(node["bias"])
            cols.append(k)
        rows = np.concatenate(cols, axis=1)
        local = _lex_row_ids(rows)
        colour_parts.append(next_id + local)
        next_id += int(local.max()) + 1
        vnode.append(np.full(s, index[r], dtype=np.int64))
        vunit.append(units)

    edges = _Edges()
    aux_colours: list[np.ndarray] = []

    def new_aux(count: int, node_name: str, tag: int) -> int:
        nonlocal v, next_id
        first = v
        aux_colours.append(np.full(count, next_id, dtype=np.int64))
        next_id += 1
        v += count
        return first

    for n in names:
        node = ir.node(n)
        d0 = offsets[n]
        for src, e in ir.in_edges(n):
            if sizes.get(src, 0) == 0 or rep[src] == rep[n]:
                continue  # identity maps inside a merged vertex set are implied
            s0 = offsets[src]
            if e["kind"] == "map":
                j = np.nonzero(e["index"] >= 0)[0]
                edges.add(s0 + e["index"][j], d0 + j, edges.colours(1))
            elif e["kind"] == "dense":
                _dense(edges, e, s0, sizes[src], d0, sizes[n])
        if node["op"] == "attention":
            _attention(edges, ir, n, offsets, new_aux)
        elif node["op"] == "groupnorm" and node["attrs"]["groups"] > 1:
            groups = node["attrs"]["groups"]
            per = sizes[n] // groups
            (src,) = node["inputs"]
            gv = new_aux(groups, n, 0)
            u = np.arange(sizes[n])
            edges.add(offsets[src] + u, gv + u // per, edges.colours(1))
            edges.add(gv + u // per, d0 + u, edges.colours(1))

    # weight sharing / tying: tie unit i of every use to unit i of the owner, so an automorphism
    # permutes all uses of one tensor by the same index maps
    for a, b in ir.ties():
        if rep.get(a) is None or rep.get(b) is None or rep[a] == rep[b]:
            continue
        u = np.arange(sizes[a])
        tv = new_aux(sizes[a], b, 3)
        colour = edges.colours(1)
        edges.add(offsets[a] + u, tv + u, colour)
        edges.add(offsets[b] + u, tv + u, colour)

    vertex_colour = np.concatenate(colour_parts + aux_colours).astype(np.int64)
    n_aux = v - n_units
    cat = np.concatenate
    empty = np.zeros(0, dtype=np.int64)
    blocks = np.array(edges.blocks, dtype=np.int64).reshape(-1, 5)
    src, dst, col, blk = _merge_parallel(
        v, cat(edges.src) if edges.src else empty, cat(edges.dst) if edges.dst else empty,
        cat(edges.col) if edges.col else empty, cat(edges.blk) if edges.blk else empty,
        edges.next_colour)
    return UnitGraph(
        n=v,
        vertex_colour=vertex_colour,
        src=src,
        dst=dst,
        edge_colour=col,
        edge_block=blk,
        block_src=blocks[:, 0:2].copy(),
        block_dst=blocks[:, 2:4].copy(),
        block_colour=blocks[:, 4].copy(),
        vertex_node=cat(vnode + [np.full(n_aux, -1, dtype=np.int64)]),
        vertex_unit=cat(vunit + [np.zeros(n_aux, dtype=np.int64)]),
        node_names=names,
        node_offsets=offsets,
        node_sizes=sizes,
    )


def _merge_parallel(n: int, src: np.ndarray, dst: np.ndarray, col: np.ndarray, blk: np.ndarray,
                    next_colour: int) -> tuple[np.ndarray, ...]:
    """One explicit edge per (src, dst) pair.  A layer reading one tensor through several slots
    (attention with ``in: [x, x, x]``: q, k and v from the same units) adds parallel edges of
    different colours; the coloured multigraph has exactly the automorphisms of the simple graph
    whose pair colour is the *multiset* of its parallel colours, so parallel plain edges become
    one edge with a fresh colour per distinct multiset (block overrides are left as they are)."""
    if src.shape[0] < 2:
        return src, dst, col, blk
    key = src * n + dst
    plain = blk < 0
    order = np.lexsort((col, key))
    ks, ps = key[order], plain[order]
    dup = np.zeros(key.shape[0], dtype=bool)
    same = (ks[1:] == ks[:-1]) & ps[1:] & ps[:-1]
    if not same.any():
        return src, dst, col, blk
    dup[order[1:][same]] = True
    dup[order[:-1][same]] = True
    keep = ~dup
    idx = np.flatnonzero(dup)
    groups: dict[int, list[int]] = {}
    for i in idx[np.lexsort((col[idx], key[idx]))].tolist():
        groups.setdefault(int(key[i]), []).append(int(col[i]))
    fresh: dict[tuple[int, ...], int] = {}
    m_key = np.fromiter(groups.keys(), dtype=np.int64, count=len(groups))
    m_col = np.array([fresh.setdefault(tuple(c), next_colour + len(fresh))
                      for c in groups.values()], dtype=np.int64)
    return (np.concatenate([src[keep], m_key // n]), np.concatenate([dst[keep], m_key % n]),
            np.concatenate([col[keep], m_col]),
            np.concatenate([blk[keep], np.full(m_key.shape[0], -1, dtype=np.int64)]))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _lex_row_ids(rows: np.ndarray) -> np.ndarray:
    """``np.unique(rows, axis=0, return_inverse=True)[1]`` (ids in lexicographic row order),
    without sorting a void dtype: constant columns are dropped (they do not change the order)
    and the rest is lexsorted -- most groups (hidden units without colours) are all constant."""
    n = rows.shape[0]
    if n == 0 or rows.shape[1] == 0:
        return np.zeros(n, dtype=np.int64)
    varying = (rows != rows[0]).any(axis=0)
    if not varying.any():
        return np.zeros(n, dtype=np.int64)
    r = rows[:, varying]
    order = np.lexsort(r.T[::-1])
    rs = r[order]
    new = np.concatenate([[True], (rs[1:] != rs[:-1]).any(axis=1)])
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


def exact_row_ids(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids with ``id[i] == id[j]`` exactly when ``rows[i] == rows[j]`` (and the id count).

    Rows are hashed to 64 bits first (``np.unique`` on wide rows sorts a void dtype and is slow),
    then every hash group is checked for a collision; colliding groups fall back to the exact
    row comparison, so the ids are always exact — colours must never merge by accident.
    """
    with np.errstate(over="ignore"):
        h = np.zeros(rows.shape[0], dtype=np.uint64)
        for j in range(rows.shape[1]):
            h = _mix(h ^ rows[:, j].astype(np.uint64) ^ np.uint64(j * 0x9E3779B97F4A7C15 % 2**64))
    uniq, first, ids = np.unique(h, return_index=True, return_inverse=True)
    ids = ids.reshape(-1)
    if not (rows == rows[first[ids]]).all():  # a collision: exact (slow) path
        _, ids = np.unique(rows, axis=0, return_inverse=True)
        ids = ids.reshape(-1)
        return ids, int(ids.max()) + 1 if ids.size else 0
    return ids, int(uniq.shape[0])


def _dense(edges: _Edges, e: dict, s0: int, s_size: int, d0: int, d_size: int) -> None:
    codes = _entry_codes(e)
    if codes is None:  # all entries plain-trainable: one implicit complete block
        edges.add_block(s0, s0 + s_size, d0, d0 + d_size)
        return
    out, inn, width = codes.shape
    flat = codes.reshape(out * inn, width)
    plain = ~flat.any(axis=1)  # trainable entries without offset share the block colour
    block, _ = edges.add_block(s0, s0 + s_size, d0, d0 + d_size)
    special = np.nonzero(~plain)[0]
    if special.size == 0:
        return
    local, count = exact_row_ids(flat[special])
    base = edges.colours(count)
    o, i = np.divmod(special, inn)
    edges.add(s0 + i, d0 + o, base + local.reshape(-1), block=block)


def _attention(edges: _Edges, ir: IRGraph, n: str, offsets: dict, new_aux) -> None:
    """q/k pairing and heads: q_u -> P_u <- k_u, P_u -> H_h, H_h -> out_u <- v_u (u in head h).

    Permuting dimensions inside a head must move q and k together (the scores are q·k) while
    v/out move independently; heads move as wholes.  This wiring admits exactly those maps.
    """
    node = ir.node(n)
    size, heads = node["size"], node["attrs"]["heads"]
    dh = size // heads
    q, k, vv = node["inputs"]
    u = np.arange(size)
    pair = new_aux(size, n, 1)
    head = new_aux(heads, n, 2)
    edges.add(offsets[q] + u, pair + u, edges.colours(1))
    edges.add(offsets[k] + u, pair + u, edges.colours(1))
    edges.add(pair + u, head + u // dh, edges.colours(1))
    edges.add(head + u // dh, offsets[n] + u, edges.colours(1))
    edges.add(offsets[vv] + u, offsets[n] + u, edges.colours(1))
