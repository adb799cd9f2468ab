"""Complete-block reduction of a :class:`UnitGraph` under an invariant vertex colouring.

Setting
-------
Let ``G`` be the (simple, coloured, directed) graph that ``ug`` denotes and ``chi`` an
*isomorphism-invariant* vertex colouring refining the vertex colours (the stable colouring of
:func:`asymspec.verify.refine.refine`).  Because ``chi`` is invariant, every automorphism maps
each cell onto itself, so ``Aut(G) = Aut(G, chi)``: it suffices to compute the automorphisms of
``G`` that preserve ``chi``.  Every statement below is about such ``chi``-preserving
permutations ``pi``, which map each *cell rectangle* ``X x Y`` (``X``, ``Y`` cells) onto itself.

Edge classes
------------
Group the edges of ``G`` -- dense-block edges and explicit edges alike -- into *classes*
``(X, Y, c)``: the edges of colour ``c`` from cell ``X`` to cell ``Y``.  A ``chi``-preserving
``pi`` is an automorphism iff it maps every class onto itself.  The sizes of all classes are
computed *without materialising the blocks*: block ``b`` contributes ``|X & S_b| * |Y & D_b|``
to ``(X, Y, c_b)`` (a product of two cell histograms), minus one per override pair.

Step 1 -- drop implied classes (this covers the dense blocks)
    Call ``X x Y`` *full* if every pair in it carries an edge (``sum_c |(X,Y,c)| = |X||Y|``;
    the graph is simple, so this counts pairs).  In a full rectangle the pairs are partitioned
    by colour, so one class -- we drop the largest -- is determined by the others: if ``pi``
    preserves the other classes of ``X x Y`` (and ``X x Y`` itself), it preserves their union and
    hence its complement in ``X x Y``.  A *complete* class (all ``|X||Y|`` pairs) is the special
    case with a single class; it is preserved by every ``chi``-preserving ``pi``.  Conversely
    every automorphism preserves every class, so dropping classes loses no automorphism:
    ``Aut(G, chi) = Aut(G', chi)`` for the reduced graph ``G'``.  In the usual case, where a
    block's ranges are unions of cells, every cell rectangle of the block is full and its
    majority class is the block colour, so all dense-block edges disappear; only override edges
    (fixed entries, masks) survive.  When that is not so (e.g. two symmetric branches whose units
    share cells), the kept block edges are materialised -- correctness never depends on how the
    graph was split into blocks.

Step 2 -- colours implied by the endpoints
    If only one class of ``X x Y`` survives, its edges need no colour: a ``chi``-preserving map
    sends them to edges of ``X x Y``, all of which have that colour.  Only rectangles with two
    or more surviving classes need the edge colour encoded (the search subdivides those edges).

Step 3 -- free cells
    A cell none of whose vertices is incident to a surviving edge is *free*: permuting its
    vertices arbitrarily (and fixing everything else) preserves ``chi`` and every surviving edge.
    So ``Aut(G', chi) = prod_free Sym(cell) x Aut(G'[rest], chi)`` and
    ``|Aut(G)| = prod_free |cell|! * |Aut(rest)|``.  (If hash collisions merged cells so that a
    cell is only *partly* isolated, it is not free and goes to the exact search whole.)

Preconditions (checked by :func:`check_simple`): the denoted graph is simple -- explicit pairs
are distinct, blocks are pairwise disjoint, an explicit edge inside a block's rectangle is an
override of that block, and overrides lie inside their block.  Overrides whose colour equals
their block's colour are redundant; :func:`normalise` removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from asymspec.ir.unitgraph import UnitGraph

__all__ = ["ReducedGraph", "check_basic", "check_simple", "normalise", "reduce_graph"]

_CHUNK_PAIRS = 1 << 22  # pairs materialised at once when a kept class lies inside a block


@dataclass
class ReducedGraph:
    """What remains for the exact search after the complete-block reduction.

    ``vertices``: sorted original ids handed to the exact search (every vertex of a non-free
    cell).  ``src``/``dst``: original ids of the surviving edges; ``colour``: their compact
    colour ids (``0..num_colours-1``); ``subdivide``: whether the edge's colour must be encoded
    (its rectangle keeps two or more classes).  ``free_cells``: vertex arrays of the free cells
    of size >= 2 (their symmetric groups are direct factors).  ``stats``: sizes for the
    certificate.
    """

    vertices: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    colour: np.ndarray
    subdivide: np.ndarray
    num_colours: int
    free_cells: list[np.ndarray] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def free_cell_sizes(self) -> np.ndarray:
        return np.array([c.shape[0] for c in self.free_cells], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def check_basic(ug: UnitGraph) -> None:
    """Cheap ``O(n + m + b)`` shape / range checks (raise ``ValueError``)."""
    n = int(ug.n)
    m = int(np.asarray(ug.src).shape[0])
    for name in ("src", "dst", "edge_colour", "edge_block"):
        if np.asarray(getattr(ug, name)).shape != (m,):
            raise ValueError(f"UnitGraph.{name} must have shape ({m},)")
    if np.asarray(ug.vertex_colour).shape != (n,):
        raise ValueError(f"UnitGraph.vertex_colour must have shape ({n},)")
    nb = int(np.asarray(ug.block_colour).shape[0])
    bs = np.asarray(ug.block_src).reshape(-1, 2)
    bd = np.asarray(ug.block_dst).reshape(-1, 2)
    if bs.shape != (nb, 2) or bd.shape != (nb, 2):
        raise ValueError("UnitGraph.block_src/block_dst must have shape (b, 2)")
    if m and (
        np.asarray(ug.src).min() < 0
        or np.asarray(ug.dst).min() < 0
        or np.asarray(ug.src).max() >= n
        or np.asarray(ug.dst).max() >= n
    ):
        raise ValueError("UnitGraph edge endpoint out of range")
    if nb:
        for r in (bs, bd):
            if (r[:, 0] < 0).any() or (r[:, 1] > n).any() or (r[:, 1] < r[:, 0]).any():
                raise ValueError("UnitGraph block range out of range")
    eb = np.asarray(ug.edge_block)
    if m and (eb.min() < -1 or eb.max() >= nb):
        raise ValueError("UnitGraph.edge_block out of range")


def normalise(ug: UnitGraph) -> UnitGraph:
    """Drop overrides whose colour equals their block's colour (they change nothing).

    Returns ``ug`` itself when there are none.  The denoted graph is unchanged.
    """
    eb = np.asarray(ug.edge_block, dtype=np.int64)
    o = eb >= 0
    if not o.any():
        return ug
    redundant = np.zeros(eb.shape[0], dtype=bool)
    redundant[o] = np.asarray(ug.block_colour)[eb[o]] == np.asarray(ug.edge_colour)[o]
    if not redundant.any():
        return ug
    keep = ~redundant
    return replace(
        ug,
        src=np.asarray(ug.src)[keep],
        dst=np.asarray(ug.dst)[keep],
        edge_colour=np.asarray(ug.edge_colour)[keep],
        edge_block=eb[keep],
    )


def check_simple(ug: UnitGraph) -> None:
    """Check that ``ug`` denotes a simple graph (raise ``ValueError`` otherwise).

    The reduction's pair counting and the fast generator check rely on "at most one edge per
    ordered pair".  Cost: a sort of the explicit pairs, range tests of the explicit edges
    against the blocks whose source range contains them, and ``O(b^2)`` rectangle tests.
    """
    check_basic(ug)
    n = int(ug.n)
    src = np.asarray(ug.src, dtype=np.int64)
    dst = np.asarray(ug.dst, dtype=np.int64)
    eb = np.asarray(ug.edge_block, dtype=np.int64)
    keys = np.sort(src * n + dst)
    if keys.shape[0] > 1 and (keys[1:] == keys[:-1]).any():
        raise ValueError("UnitGraph has two explicit edges on the same (src, dst) pair")
    bs = np.asarray(ug.block_src, dtype=np.int64).reshape(-1, 2)
    bd = np.asarray(ug.block_dst, dtype=np.int64).reshape(-1, 2)
    o = np.flatnonzero(eb >= 0)
    if o.shape[0]:
        b = eb[o]
        inside = (
            (src[o] >= bs[b, 0]) & (src[o] < bs[b, 1]) & (dst[o] >= bd[b, 0]) & (dst[o] < bd[b, 1])
        )
        if not inside.all():
            raise ValueError("UnitGraph override edge lies outside its block")
    nonempty = np.flatnonzero((bs[:, 1] > bs[:, 0]) & (bd[:, 1] > bd[:, 0]))
    # explicit non-override edges must not lie in any block rectangle
    plain = np.flatnonzero(eb < 0)
    if plain.shape[0] and nonempty.shape[0]:
        order = plain[np.argsort(src[plain], kind="stable")]
        ps = src[order]
        for bi in nonempty.tolist():
            lo = np.searchsorted(ps, bs[bi, 0], side="left")
            hi = np.searchsorted(ps, bs[bi, 1], side="left")
            if hi > lo:
                d = dst[order[lo:hi]]
                if ((d >= bd[bi, 0]) & (d < bd[bi, 1])).any():
                    raise ValueError(
                        f"UnitGraph explicit edge inside block {bi} is not marked as override"
                    )
    # blocks pairwise disjoint
    k = nonempty.shape[0]
    step = max(1, (1 << 22) // max(k, 1))
    for start in range(0, k, step):
        a = nonempty[start : start + step]
        s_ov = (bs[a, 0, None] < bs[None, nonempty, 1]) & (bs[None, nonempty, 0] < bs[a, 1, None])
        d_ov = (bd[a, 0, None] < bd[None, nonempty, 1]) & (bd[None, nonempty, 0] < bd[a, 1, None])
        both = s_ov & d_ov
        both[np.arange(a.shape[0]), np.arange(start, start + a.shape[0])] = False
        if both.any():
            raise ValueError("UnitGraph dense blocks overlap")


# ----------------------------------------------------------------------------------------------
# reduction
# ----------------------------------------------------------------------------------------------


def _group_rows(cols: list[np.ndarray], bounds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Group rows of non-negative int columns: returns (inverse, index of first row per group).

    Groups are ordered lexicographically by the column values (first column most significant).
    """
    total = 1
    for b in bounds:
        total *= max(int(b), 1)
    if total < (1 << 62):
        key = np.zeros(cols[0].shape[0], dtype=np.int64)
        for c, b in zip(cols, bounds, strict=True):
            key = key * max(int(b), 1) + c
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        return inv.ravel().astype(np.int64), first
    stacked = np.stack(cols, axis=1)
    _, first, inv = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    return inv.ravel().astype(np.int64), first


def reduce_graph(ug: UnitGraph, cell: np.ndarray) -> ReducedGraph:
    """Complete-block reduction of ``ug`` (simple, normalised) under the invariant ``cell``.

    See the module docstring for why ``|Aut(G)| = prod_free |cell|! * |Aut(G'[rest], chi)|``
    and why the automorphisms of the returned graph (coloured by ``cell``, edges coloured where
    ``subdivide``) extended by the identity are exactly the automorphisms of ``G`` that fix
    the free cells pointwise.
    """
    n = int(ug.n)
    cell = np.asarray(cell, dtype=np.int64)
    k = int(cell.max()) + 1 if n else 0
    size = np.bincount(cell, minlength=k).astype(np.int64)

    src = np.asarray(ug.src, dtype=np.int64)
    dst = np.asarray(ug.dst, dtype=np.int64)
    eb = np.asarray(ug.edge_block, dtype=np.int64)
    m = src.shape[0]
    bs = np.asarray(ug.block_src, dtype=np.int64).reshape(-1, 2)
    bd = np.asarray(ug.block_dst, dtype=np.int64).reshape(-1, 2)
    bcol_raw = np.asarray(ug.block_colour, dtype=np.int64)
    nb = bcol_raw.shape[0]

    all_col, col_inv = np.unique(
        np.concatenate([np.asarray(ug.edge_colour, dtype=np.int64), bcol_raw]),
        return_inverse=True,
    )
    col_inv = col_inv.ravel().astype(np.int64)
    ncol = int(all_col.shape[0])
    ecid, bcid = col_inv[:m], col_inv[m:]

    # ---- records (X, Y, colour, weight) -------------------------------------------------
    rx = [cell[src]]
    ry = [cell[dst]]
    rc = [ecid]
    rw = [np.ones(m, dtype=np.int64)]
    ovr = np.flatnonzero(eb >= 0)
    if ovr.shape[0]:
        rx.append(cell[src[ovr]])
        ry.append(cell[dst[ovr]])
        rc.append(bcid[eb[ovr]])
        rw.append(np.full(ovr.shape[0], -1, dtype=np.int64))
    offset = m + ovr.shape[0]
    block_info: list[tuple[int, int, np.ndarray, np.ndarray, int, int]] = []
    for b in range(nb):
        slo, shi = int(bs[b, 0]), int(bs[b, 1])
        dlo, dhi = int(bd[b, 0]), int(bd[b, 1])
        if shi <= slo or dhi <= dlo:
            continue
        cs, s_inv, s_cnt = np.unique(cell[slo:shi], return_inverse=True, return_counts=True)
        cd, d_inv, d_cnt = np.unique(cell[dlo:dhi], return_inverse=True, return_counts=True)
        ns, nd = cs.shape[0], cd.shape[0]
        rx.append(np.repeat(cs, nd))
        ry.append(np.tile(cd, ns))
        rc.append(np.full(ns * nd, bcid[b], dtype=np.int64))
        rw.append(np.outer(s_cnt, d_cnt).ravel().astype(np.int64))
        block_info.append((b, offset, s_inv.ravel(), d_inv.ravel(), ns, nd))
        offset += ns * nd
    X = np.concatenate(rx)
    Y = np.concatenate(ry)
    C = np.concatenate(rc)
    W = np.concatenate(rw)

    # ---- classes and rectangles --------------------------------------------------------
    if X.shape[0] == 0:
        gid = np.zeros(0, dtype=np.int64)
        cls_first = np.zeros(0, dtype=np.int64)
    else:
        gid, cls_first = _group_rows([X, Y, C], [k, k, ncol])
    ncls = cls_first.shape[0]
    count = np.zeros(ncls, dtype=np.int64)
    np.add.at(count, gid, W)
    if (count < 0).any():
        raise ValueError("UnitGraph: more overrides than block pairs in a cell rectangle")
    cX, cY, cC = X[cls_first], Y[cls_first], C[cls_first]
    if ncls:
        pid, pair_first = _group_rows([cX, cY], [k, k])
    else:
        pid, pair_first = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    npairs = pair_first.shape[0]
    coverage = np.zeros(npairs, dtype=np.int64)
    np.add.at(coverage, pid, count)
    pair_area = size[cX[pair_first]] * size[cY[pair_first]]
    if (coverage > pair_area).any():
        raise ValueError("UnitGraph is not simple: a cell rectangle has more edges than pairs")
    full = coverage == pair_area

    # Step 1: in a full rectangle drop the largest class (ties: smallest colour id)
    keep = count > 0
    if ncls:
        order = np.lexsort((cC, -count, pid))
        first_of_pair = np.ones(ncls, dtype=bool)
        first_of_pair[1:] = pid[order][1:] != pid[order][:-1]
        majority = order[first_of_pair]  # one class per rectangle, the largest
        drop = majority[full[pid[majority]]]
        keep[drop] = False
    # Step 2: rectangles with >= 2 surviving classes need their edge colours encoded
    kept_per_pair = np.bincount(pid, weights=keep.astype(np.float64), minlength=npairs)
    cls_subdiv = kept_per_pair[pid] >= 2

    # ---- materialise surviving edges ---------------------------------------------------
    out_src = []
    out_dst = []
    out_col = []
    out_sub = []
    if m:
        ke = keep[gid[:m]]
        out_src.append(src[ke])
        out_dst.append(dst[ke])
        out_col.append(ecid[ke])
        out_sub.append(cls_subdiv[gid[:m]][ke])
    materialised = 0
    if block_info:
        ovr_block = eb[ovr]
        ovr_keys = src[ovr] * n + dst[ovr]
    for b, off, s_inv, d_inv, ns, nd in block_info:
        gb = gid[off : off + ns * nd]
        kb = keep[gb].reshape(ns, nd)
        if not kb.any():
            continue
        sb = cls_subdiv[gb].reshape(ns, nd)
        slo, shi = int(bs[b, 0]), int(bs[b, 1])
        dlo, dhi = int(bd[b, 0]), int(bd[b, 1])
        okeys = np.sort(ovr_keys[ovr_block == b])
        ndst = dhi - dlo
        rows = max(1, _CHUNK_PAIRS // ndst)
        for r0 in range(0, shi - slo, rows):
            r1 = min(shi - slo, r0 + rows)
            si = s_inv[r0:r1]
            mask = kb[si][:, d_inv]
            xs, ys = np.nonzero(mask)
            if xs.shape[0] == 0:
                continue
            sub = sb[si][:, d_inv][xs, ys]
            x = xs.astype(np.int64) + slo + r0
            y = ys.astype(np.int64) + dlo
            if okeys.shape[0]:
                kk = x * n + y
                pos = np.searchsorted(okeys, kk)
                hit = (pos < okeys.shape[0]) & (okeys[np.minimum(pos, okeys.shape[0] - 1)] == kk)
                x, y, sub = x[~hit], y[~hit], sub[~hit]
            out_src.append(x)
            out_dst.append(y)
            out_col.append(np.full(x.shape[0], bcid[b], dtype=np.int64))
            out_sub.append(sub)
            materialised += int(x.shape[0])
    if out_src:
        r_src = np.concatenate(out_src)
        r_dst = np.concatenate(out_dst)
        r_col = np.concatenate(out_col)
        r_sub = np.concatenate(out_sub).astype(bool)
    else:
        r_src = r_dst = r_col = np.zeros(0, dtype=np.int64)
        r_sub = np.zeros(0, dtype=bool)

    # ---- Step 3: free cells ------------------------------------------------------------
    touched_cell = np.zeros(k, dtype=bool)
    touched_cell[cell[r_src]] = True
    touched_cell[cell[r_dst]] = True
    free = ~touched_cell
    vertices = np.flatnonzero(~free[cell]).astype(np.int64)
    big_free = np.flatnonzero(free[cell] & (size[cell] >= 2))
    free_cells: list[np.ndarray] = []
    if big_free.shape[0]:
        fo = big_free[np.argsort(cell[big_free], kind="stable")]
        cuts = np.flatnonzero(np.diff(cell[fo])) + 1
        free_cells = [a.astype(np.int64) for a in np.split(fo, cuts)]

    stats = {
        "classes": int(ncls),
        "classes_kept": int(keep.sum()),
        "rectangles": int(npairs),
        "rectangles_full": int(full.sum()),
        "edges_in": int(ug.num_edges),
        "edges_kept": int(r_src.shape[0]),
        "edges_subdivided": int(r_sub.sum()),
        "block_edges_materialised": materialised,
        "vertices_kept": int(vertices.shape[0]),
        "free_cells": int(free[size >= 2].sum()),
        "free_vertices": int(size[free & (size >= 2)].sum()),
    }
    return ReducedGraph(
        vertices=vertices,
        src=r_src,
        dst=r_dst,
        colour=r_col,
        subdivide=r_sub,
        num_colours=ncol,
        free_cells=free_cells,
        stats=stats,
    )
