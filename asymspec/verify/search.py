"""Exact automorphism group of a :class:`UnitGraph`: refinement, reduction, then bliss.

Pipeline (see ``shared/notes/verifier-techniques.md`` for the measurements behind it)

0. :func:`~asymspec.verify.reduce.check_simple` validates that ``ug`` denotes a simple graph
   (the reduction and the generator check count pairs) -- a sort of the explicit pairs.
1. :func:`~asymspec.verify.refine.refine` computes an isomorphism-invariant stable colouring
   ``chi``.  If it is discrete, the group is trivial and the refinement is the certificate.
2. :func:`~asymspec.verify.reduce.reduce_graph` drops every edge class implied by ``chi`` (all
   dense-block edges in the usual case) and splits off the *free* cells, whose symmetric groups
   are direct factors.
3. bliss (through python-igraph) computes the exact order and generators of the automorphism
   group of what is left, with vertex colours = cells of ``chi`` and edge colours encoded by
   subdividing ``u -> v`` into ``u -> w -> v`` where ``w`` gets a colour reserved for the edge
   colour.  Subdivision is exact: in a simple graph ``w`` is determined by ``(u, v)`` and its
   colour, so the group of the subdivided graph restricted to the original vertices is
   isomorphic to the group of the edge-coloured graph.

``|Aut(G)| = |Aut_bliss| * prod_free |cell|!``.  Every generator returned is checked against the
*original* graph by :func:`verify_generator` (independently of the reduction); a failure is a
bug and raises ``RuntimeError``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import igraph as ig
import numpy as np

from asymspec.ir.unitgraph import UnitGraph
from asymspec.verify.reduce import (
    ReducedGraph,
    check_simple,
    normalise,
    reduce_graph,
)
from asymspec.verify.refine import refine

__all__ = ["AutomorphismResult", "find_automorphisms", "verify_generator"]

_LN10 = math.log(10.0)
_EXACT_CHECK_CHUNK = 1 << 22


class SparsePerms(Sequence):
    """Permutations of ``n`` vertices stored by their support: ``(moved, images)`` pairs.

    Indexing returns the dense int64 array (vertex ``v`` maps to ``p[v]``), built on demand, so a
    GPT-sized group with thousands of generators never holds them all densely.
    """

    def __init__(self, n: int, items: list[tuple[np.ndarray, np.ndarray]] | None = None):
        self.n = n
        self.items: list[tuple[np.ndarray, np.ndarray]] = list(items or [])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return SparsePerms(self.n, self.items[i])
        moved, images = self.items[i]
        p = np.arange(self.n, dtype=np.int64)
        p[moved] = images
        return p


@dataclass
class AutomorphismResult:
    """The automorphism group of a unit graph.

    ``order``: exact group order (a Python int; may have thousands of digits -- call
    ``sys.set_int_max_str_digits(0)`` before printing it).  ``log10_order``: ``log10(order)``.
    ``orbit_id``: int64 ``(n,)``, orbits numbered ``0..k-1`` in order of their smallest vertex.
    ``generators``: permutations ``p`` (int64 ``(n,)``, vertex ``v`` maps to ``p[v]``) that
    generate the group (unless ``certificate["generators_truncated"]``).  ``certificate``: how
    the answer was obtained (kind, refinement rounds and cells, reduced sizes, timings in s).
    """

    order: int
    log10_order: float
    orbit_id: np.ndarray
    generators: Sequence[np.ndarray] = field(default_factory=list)
    certificate: dict = field(default_factory=dict)

    @property
    def sparse_generators(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Generators as ``(moved vertices, their images)``."""
        if isinstance(self.generators, SparsePerms):
            return self.generators.items
        out = []
        for p in self.generators:
            moved = np.flatnonzero(p != np.arange(p.shape[0]))
            out.append((moved, p[moved]))
        return out

    @property
    def is_trivial(self) -> bool:
        return self.order == 1

    @property
    def num_orbits(self) -> int:
        return int(self.orbit_id.max()) + 1 if self.orbit_id.shape[0] else 0


# ----------------------------------------------------------------------------------------------
# generator verification
# ----------------------------------------------------------------------------------------------


class _EdgeIndex:
    """Lookup structures of the denoted graph, built once and reused for many permutations."""

    def __init__(self, ug: UnitGraph, *, checked: bool = False):
        if not checked:
            ug = normalise(ug)
            check_simple(ug)
        self.n = n = int(ug.n)
        self.vertex_colour = np.asarray(ug.vertex_colour, dtype=np.int64)
        self.src = np.asarray(ug.src, dtype=np.int64)
        self.dst = np.asarray(ug.dst, dtype=np.int64)
        self.colour = np.asarray(ug.edge_colour, dtype=np.int64)
        keys = self.src * n + self.dst
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.key_colour = self.colour[order]
        bs = np.asarray(ug.block_src, dtype=np.int64).reshape(-1, 2)
        bd = np.asarray(ug.block_dst, dtype=np.int64).reshape(-1, 2)
        bc = np.asarray(ug.block_colour, dtype=np.int64)
        ne = (bs[:, 1] > bs[:, 0]) & (bd[:, 1] > bd[:, 0])
        self.bs, self.bd, self.bc = bs[ne], bd[ne], bc[ne]
        self.blocks = {
            (int(a), int(b), int(c), int(d), int(e))
            for a, b, c, d, e in zip(
                self.bs[:, 0], self.bs[:, 1], self.bd[:, 0], self.bd[:, 1], self.bc, strict=True
            )
        }

    def explicit_colour(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For pair keys: (is explicit edge, its colour or garbage)."""
        if self.keys.shape[0] == 0:
            return np.zeros(keys.shape[0], dtype=bool), np.zeros(keys.shape[0], dtype=np.int64)
        pos = np.searchsorted(self.keys, keys)
        pos_c = np.minimum(pos, self.keys.shape[0] - 1)
        hit = (pos < self.keys.shape[0]) & (self.keys[pos_c] == keys)
        return hit, self.key_colour[pos_c]

    def has_edges(self, u: np.ndarray, v: np.ndarray, c: np.ndarray | int) -> bool:
        """Are all ``(u[i], v[i])`` edges of colour ``c[i]`` in the denoted graph?"""
        hit, col = self.explicit_colour(u * self.n + v)
        c = np.broadcast_to(np.asarray(c, dtype=np.int64), u.shape)
        if not (col[hit] == c[hit]).all():
            return False
        rest = ~hit
        if not rest.any():
            return True
        u, v, c = u[rest], v[rest], c[rest]
        # not explicit, hence not overridden: must be a pair of a block of colour c
        covered = np.zeros(u.shape[0], dtype=bool)
        for i in range(self.bc.shape[0]):
            covered |= (
                (u >= self.bs[i, 0])
                & (u < self.bs[i, 1])
                & (v >= self.bd[i, 0])
                & (v < self.bd[i, 1])
                & (c == self.bc[i])
            )
        return bool(covered.all())

    # -- checks ------------------------------------------------------------------------
    def check(self, perm: np.ndarray) -> bool:
        n = self.n
        p = np.asarray(perm)
        if p.shape != (n,) or not np.issubdtype(p.dtype, np.integer):
            return False
        p = p.astype(np.int64, copy=False)
        if n and (p.min() < 0 or p.max() >= n):
            return False
        if n and not (np.bincount(p, minlength=n) == 1).all():
            return False
        if not (self.vertex_colour[p] == self.vertex_colour).all():
            return False
        fast = self._fast(p)
        return fast if fast is not None else self._exact(p)

    def incident(self, vertices: np.ndarray) -> np.ndarray:
        """Ids of explicit edges with an endpoint in ``vertices`` (CSR index built once)."""
        if not hasattr(self, "_inc_ptr"):
            m = self.src.shape[0]
            ends = np.concatenate([self.src, self.dst])
            ids = np.concatenate([np.arange(m), np.arange(m)])
            order = np.argsort(ends, kind="stable")
            self._inc_idx = ids[order]
            self._inc_ptr = np.searchsorted(ends[order], np.arange(self.n + 1))
        lo, hi = self._inc_ptr[vertices], self._inc_ptr[vertices + 1]
        if lo.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        lens = hi - lo
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return np.unique(self._inc_idx[starts + np.arange(int(lens.sum()))])

    def check_sparse(self, moved: np.ndarray, images: np.ndarray) -> bool:
        """Like :meth:`check` for a permutation given by its support; only edges and blocks
        touching the support are examined (falls back to the dense check when the block
        representation is not preserved)."""
        n = self.n
        if moved.shape[0] == 0:
            return True
        if np.unique(moved).shape[0] != moved.shape[0] or not np.array_equal(
                np.sort(moved), np.sort(images)):
            return False
        if not (self.vertex_colour[images] == self.vertex_colour[moved]).all():
            return False
        # the permutation on the support only (O(k log k), never O(n): a model with 10^5
        # generators of small support must not cost 10^5 passes over every vertex)
        order = np.argsort(moved, kind="stable")
        ms, im = moved[order], images[order]

        def apply(x: np.ndarray) -> np.ndarray:
            pos = np.minimum(np.searchsorted(ms, x), ms.shape[0] - 1)
            return np.where(ms[pos] == x, im[pos], x)

        def dense() -> np.ndarray:
            p = np.arange(n, dtype=np.int64)
            p[moved] = images
            return p

        if self.src.shape[0]:
            touched = self.incident(moved)
            u, v, c = self.src[touched], self.dst[touched], self.colour[touched]
            hit, col = self.explicit_colour(apply(u) * n + apply(v))
            if not (hit.all() and (col == c).all()):
                return self._exact(dense())
        if self._disjoint_ranges():
            # every block range is mapped onto itself iff each moved vertex stays in its range
            if not (self._range_id(moved) == self._range_id(images)).all():
                return self.check(dense())
            return True
        # overlapping ranges: every range holding a moved vertex must hold its image (only the
        # ranges that meet the support's span are examined, in array chunks)
        lo, hi = self._range_lo, self._range_hi
        cand = np.flatnonzero((lo <= moved.max()) & (hi > moved.min()))
        step = max(1, (1 << 22) // moved.shape[0])
        mv, iv = moved[:, None], images[:, None]
        for c0 in range(0, cand.shape[0], step):
            c = cand[c0:c0 + step]
            lc, hc = lo[c][None, :], hi[c][None, :]
            if ((mv >= lc) & (mv < hc) & ~((iv >= lc) & (iv < hc))).any():
                return self.check(dense())
        return True

    def _disjoint_ranges(self) -> bool:
        """Are the distinct block ranges pairwise disjoint? (Then a range id per vertex exists.)"""
        if not hasattr(self, "_range_lo"):
            r = np.unique(np.concatenate([self.bs, self.bd]).reshape(-1, 2), axis=0)
            self._range_lo, self._range_hi = r[:, 0], r[:, 1]
            self._ranges_disjoint = bool((r[1:, 0] >= r[:-1, 1]).all()) if r.shape[0] else True
        return self._ranges_disjoint

    def _range_id(self, v: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self._range_lo, v, side="right") - 1
        kc = np.maximum(k, 0)
        inside = (k >= 0) & (v < self._range_hi[kc]) if self._range_hi.shape[0] else k >= 0
        return np.where(inside, k, -1)

    def _fast(self, p: np.ndarray) -> bool | None:
        """``O(m + n + b)`` proof: explicit edges onto explicit edges (same colour) and every
        block onto a block of the same colour.  Then a non-overridden block pair ``(x, y)`` maps
        into a block; its image is not explicit (else ``p^-1`` -- which also permutes the
        explicit edges -- would make ``(x, y)`` explicit), so it is a block edge of the same
        colour.  Thus ``p`` maps edges into edges with colours, injectively on a finite set:
        an automorphism.  Returns None when the representation is not preserved (the exact
        check decides then)."""
        n = self.n
        if self.keys.shape[0]:
            new_keys = p[self.src] * n + p[self.dst]
            order = np.argsort(new_keys, kind="stable")
            if not (
                (new_keys[order] == self.keys).all()
                and (self.colour[order] == self.key_colour).all()
            ):
                return None
        for i in range(self.bc.shape[0]):
            s = p[self.bs[i, 0] : self.bs[i, 1]]
            d = p[self.bd[i, 0] : self.bd[i, 1]]
            smin, smax, dmin, dmax = int(s.min()), int(s.max()), int(d.min()), int(d.max())
            if smax - smin + 1 != s.shape[0] or dmax - dmin + 1 != d.shape[0]:
                return None
            if (smin, smax + 1, dmin, dmax + 1, int(self.bc[i])) not in self.blocks:
                return None
        return True

    def _exact(self, p: np.ndarray) -> bool:
        """Exact check that ``p`` maps every denoted edge to an edge of the same colour
        (then, being injective on a finite edge set, it permutes the edges).  Memory bounded by
        chunking; time ``O(|E| * b)`` -- only reached when ``_fast`` is inconclusive."""
        n = self.n
        if self.src.shape[0] and not self.has_edges(p[self.src], p[self.dst], self.colour):
            return False
        for i in range(self.bc.shape[0]):
            slo, shi = int(self.bs[i, 0]), int(self.bs[i, 1])
            dlo, dhi = int(self.bd[i, 0]), int(self.bd[i, 1])
            ys = np.arange(dlo, dhi, dtype=np.int64)
            rows = max(1, _EXACT_CHECK_CHUNK // (dhi - dlo))
            for r0 in range(slo, shi, rows):
                xs = np.arange(r0, min(shi, r0 + rows), dtype=np.int64)
                x = np.repeat(xs, ys.shape[0])
                y = np.tile(ys, xs.shape[0])
                overridden, _ = self.explicit_colour(x * n + y)
                x, y = x[~overridden], y[~overridden]
                if not self.has_edges(p[x], p[y], int(self.bc[i])):
                    return False
        return True


def verify_generator(ug: UnitGraph, perm: np.ndarray) -> bool:
    """Is ``perm`` (vertex ``v`` maps to ``perm[v]``) an automorphism of the graph ``ug`` denotes?

    Checks that ``perm`` is a permutation, preserves vertex colours, and maps edges to edges of
    the same colour (direction included).  The common case is an ``O(m + n + b)`` structural
    proof (explicit edges onto explicit edges, blocks onto blocks); if the permutation does not
    preserve the block representation, an exact edge-by-edge check over the denoted graph
    decides.  Raises ``ValueError`` if ``ug`` does not denote a simple graph.
    """
    return _EdgeIndex(ug).check(perm)


# ----------------------------------------------------------------------------------------------
# search
# ----------------------------------------------------------------------------------------------


def _canonical_orbits(membership: np.ndarray) -> np.ndarray:
    """Renumber components ``0..k-1`` in order of their smallest vertex."""
    if membership.shape[0] == 0:
        return membership.astype(np.int64)
    _, first, inv = np.unique(membership, return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0], dtype=np.int64)
    return rank[inv.ravel()]


def _bliss_graph(red: ReducedGraph, cell: np.ndarray, k: int) -> tuple[ig.Graph, list[int]]:
    """Directed igraph graph of the reduced graph; subdivision vertices coloured ``k + c``."""
    n_all = cell.shape[0]
    verts = red.vertices
    nv = verts.shape[0]
    loc = np.full(n_all, -1, dtype=np.int64)
    loc[verts] = np.arange(nv, dtype=np.int64)
    s, d = loc[red.src], loc[red.dst]
    direct = ~red.subdivide
    sub = np.flatnonzero(red.subdivide)
    w = nv + np.arange(sub.shape[0], dtype=np.int64)
    edges = np.concatenate(
        [
            np.stack([s[direct], d[direct]], axis=1),
            np.stack([s[sub], w], axis=1),
            np.stack([w, d[sub]], axis=1),
        ]
    )
    colours = np.concatenate([cell[verts], k + red.colour[sub]])
    g = ig.Graph(n=nv + sub.shape[0], edges=edges.tolist(), directed=True)
    return g, colours.tolist()


def _bliss(g: ig.Graph, colours: list[int], what: str):
    # igraph converts big orders through a decimal string: lift CPython's 4,300-digit limit
    old = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else None
    if old is not None:
        sys.set_int_max_str_digits(0)
    try:
        if what == "count":
            return int(g.count_automorphisms(sh="fl", color=colours))
        if what == "canon":
            return g.canonical_permutation(sh="fl", color=colours)
        return g.automorphism_group(sh="fl", color=colours)
    finally:
        if old is not None:
            sys.set_int_max_str_digits(old)


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit hash of integer pairs (splitmix64 finaliser; wrapping arithmetic, no RNG)."""
    with np.errstate(over="ignore"):
        x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             ^ (b.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019))
             * np.uint64(0xBF58476D1CE4E5B9))
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
    return x


def _segment_sums(values: np.ndarray, seg: np.ndarray, nseg: int) -> np.ndarray:
    """Wrapping uint64 sums of ``values`` per segment id ``seg`` (sorted ascending)."""
    out = np.zeros(nseg, dtype=np.uint64)
    if values.shape[0]:
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        with np.errstate(over="ignore"):
            out[seg[starts]] = np.add.reduceat(values, starts)
    return out


def _discrete_classes(el: np.ndarray, col: np.ndarray, membership: np.ndarray, ncomp: int
                      ) -> tuple[list[np.ndarray], np.ndarray]:
    """Classes of isomorphic *colour-discrete* components (no two vertices of one component share
    a colour), found without bliss.

    A colour-preserving isomorphism between two such components can only map each vertex to the
    vertex of the same colour, so they are isomorphic iff their colour sequences (sorted) and
    their edge lists (in colour ranks) are equal, and each has the trivial group.  Components are
    grouped by a hash of both and every member is then compared *exactly* with the first one; a
    group with any mismatch (a hash collision) is left to bliss.  Returns (classes: each a
    ``(k, size)`` array of vertices, row ``j`` = component ``j`` aligned by colour rank, rows in
    order of their smallest vertex; a bool mask of the components handled)."""
    nvert = membership.shape[0]
    o = np.lexsort((col, membership))
    m_s, c_s = membership[o], col[o]
    size = np.bincount(membership, minlength=ncomp)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    discrete = np.ones(ncomp, dtype=bool)
    dup = (m_s[1:] == m_s[:-1]) & (c_s[1:] == c_s[:-1])
    discrete[m_s[1:][dup]] = False
    handled = np.zeros(ncomp, dtype=bool)
    if not discrete.any():
        return [], handled
    rank = np.empty(nvert, dtype=np.int64)
    rank[o] = np.arange(nvert, dtype=np.int64) - start[m_s]
    ecomp = membership[el[:, 0]] if el.shape[0] else np.zeros(0, dtype=np.int64)
    ekey = rank[el[:, 0]] * nvert + rank[el[:, 1]] if el.shape[0] else ecomp
    eo = np.lexsort((ekey, ecomp))
    ecomp_s, ekey_s = ecomp[eo], ekey[eo]
    ecount = np.bincount(ecomp, minlength=ncomp)
    estart = np.concatenate([[0], np.cumsum(ecount)[:-1]])
    hv = _segment_sums(_mix(c_s, rank[o]), m_s, ncomp)
    he = _segment_sums(_mix(ekey_s, ekey_s + 1), ecomp_s, ncomp)
    dc = np.flatnonzero(discrete)
    keys = np.stack([size[dc].astype(np.uint64), ecount[dc].astype(np.uint64),
                     hv[dc], he[dc]], axis=1).view(np.int64)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    classes: list[np.ndarray] = []
    by_group = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[by_group])) + 1
    for members in np.split(dc[by_group], bounds):
        # members are in component order; components are numbered by first appearance
        sz, ec = int(size[members[0]]), int(ecount[members[0]])
        cols = c_s[start[members][:, None] + np.arange(sz)]
        edges = ekey_s[estart[members][:, None] + np.arange(ec)]
        if not ((cols == cols[0]).all() and (edges == edges[0]).all()):
            continue  # a hash collision: bliss decides these
        handled[members] = True
        verts = o[start[members][:, None] + np.arange(sz)]
        classes.append(verts[np.argsort(verts.min(axis=1), kind="stable")])
    return classes, handled


def _class_generators(rows: list[np.ndarray], orig: np.ndarray, vertices: np.ndarray
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generators of the symmetric group permuting ``k`` isomorphic components: the swap of the
    first two and, for ``k >= 3``, the cycle ``C_1 -> C_2 -> ... -> C_k -> C_1`` (two generators
    for any ``k``, where ``k - 1`` swaps would cost ``k - 1`` checks and results).  ``rows[j]``
    holds component ``j``'s vertices aligned by an isomorphism from component 1; ``orig``
    marks the original (non-subdivision) positions."""
    k = len(rows)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    if k < 2:
        return out
    a, b = rows[0][orig], rows[1][orig]
    out.append((vertices[np.concatenate([a, b])], vertices[np.concatenate([b, a])]))
    if k >= 3:
        stack = np.stack([r[orig] for r in rows])
        out.append((vertices[stack.ravel()], vertices[np.roll(stack, -1, axis=0).ravel()]))
    return out


class _Layouts:
    """Components laid out identically: the same colours and edges in *local* vertex order
    (ascending vertex ids), e.g. the key-value head groups of one attention layer.  The
    order-preserving bijection between two such components is then a colour-preserving
    isomorphism, so the second gets the first's canonical labelling without a bliss call.
    Candidates are found by a hash and confirmed by exact comparison."""

    def __init__(self, el: np.ndarray, col: np.ndarray, membership: np.ndarray,
                 order_idx: np.ndarray, ncomp: int) -> None:
        nvert = membership.shape[0]
        size = np.bincount(membership, minlength=ncomp)
        start = np.concatenate([[0], np.cumsum(size)[:-1]])
        m_s = membership[order_idx]
        rank = np.empty(nvert, dtype=np.int64)
        rank[order_idx] = np.arange(nvert, dtype=np.int64) - start[m_s]
        ecomp = membership[el[:, 0]] if el.shape[0] else np.zeros(0, dtype=np.int64)
        ekey = rank[el[:, 0]] * nvert + rank[el[:, 1]] if el.shape[0] else ecomp
        eo = np.lexsort((ekey, ecomp))
        self.ekey = ekey[eo]
        self.ecount = np.bincount(ecomp, minlength=ncomp)
        self.estart = np.concatenate([[0], np.cumsum(self.ecount)[:-1]])
        self.col_s = col[order_idx]
        self.size, self.start = size, start
        hv = _segment_sums(_mix(self.col_s, rank[order_idx]), m_s, ncomp)
        he = _segment_sums(_mix(self.ekey, self.ekey + 1), ecomp[eo], ncomp)
        self.hv, self.he = hv, he
        self.seen: dict[tuple, list[tuple[int, bytes, np.ndarray]]] = {}

    def _same(self, a: int, b: int) -> bool:
        sa, sb, ea, eb = self.start[a], self.start[b], self.estart[a], self.estart[b]
        n, m = int(self.size[a]), int(self.ecount[a])
        return bool(np.array_equal(self.col_s[sa:sa + n], self.col_s[sb:sb + n])
                    and np.array_equal(self.ekey[ea:ea + m], self.ekey[eb:eb + m]))

    def hash(self, c: int) -> tuple[int, int, int, int]:
        return (int(self.size[c]), int(self.ecount[c]), int(self.hv[c]), int(self.he[c]))

    def match(self, c: int) -> tuple[bytes, np.ndarray] | None:
        for r, key, canon in self.seen.get(self.hash(c), ()):
            if self._same(c, r):
                return key, canon
        return None

    def add(self, c: int, key: bytes, canon: np.ndarray) -> None:
        self.seen.setdefault(self.hash(c), []).append((c, key, canon))


def _product(factors: list[int]) -> int:
    """Exact product of big integers as a balanced tree: a full-size LLM's order has millions
    of digits, and multiplying factors into a running product one by one costs a multiplication
    of that size per factor (tens of seconds); pairing them keeps the operands balanced."""
    xs = [x for x in factors if x != 1] or [1]
    while len(xs) > 1:
        xs = [xs[i] * xs[i + 1] if i + 1 < len(xs) else xs[i] for i in range(0, len(xs), 2)]
    return xs[0]


def _search_components(
    g: ig.Graph, colours: list[int], nv: int, vertices: np.ndarray
) -> tuple[int, float, list[tuple[np.ndarray, np.ndarray]], int, int]:
    """Exact group of ``g`` as a product over connected components.

    Components are grouped into classes by their canonical form (bliss canonical labelling,
    colours included: equal forms <=> colour-preserving isomorphic).  For a class of ``k``
    isomorphic components the group is ``Aut(C) wr S_k``: order ``|Aut(C)|^k * k!``, generated
    by ``Aut(C_1)``'s generators, the swap ``C_1 <-> C_2`` and the cycle ``C_1 -> ... -> C_k``
    along the canonical isomorphisms.  Components of different classes cannot be mapped onto
    each other.  Colour-discrete components (an MLP unit with its activation and gate: one vertex
    per layer) are classified without bliss (:func:`_discrete_classes`), so a model with 10^5
    of them costs a few array passes.  Generators come back sparse, in original vertex ids
    (subdivision vertices dropped).
    """
    col = np.asarray(colours, dtype=np.int64)
    membership = np.asarray(g.connected_components(mode="weak").membership, dtype=np.int64)
    ncomp = int(membership.max()) + 1 if membership.shape[0] else 0
    el = np.asarray(g.get_edgelist(), dtype=np.int64).reshape(-1, 2)
    factors: list[int] = []  # of the order, multiplied at the end (see _product)
    log10 = 0.0
    gens: list[tuple[np.ndarray, np.ndarray]] = []
    fast, handled = _discrete_classes(el, col, membership, ncomp)
    for rows in fast:  # trivial Aut(C): the class contributes S_k
        k = rows.shape[0]
        factors.append(math.factorial(k))
        log10 += math.lgamma(k + 1) / _LN10
        gens += _class_generators(list(rows), rows[0] < nv, vertices)
    order_idx = np.argsort(membership, kind="stable")
    classes: dict[bytes, list[tuple[np.ndarray, np.ndarray]]] = {}
    layout = _Layouts(el, col, membership, order_idx, ncomp)
    for c in np.flatnonzero(~handled).tolist():  # components in order of their first vertex
        vs = order_idx[layout.start[c]:layout.start[c] + layout.size[c]]
        same = layout.match(c)
        if same is not None:  # laid out exactly like an earlier component: its canon applies
            key, canon = same
            classes[key].append((vs, canon))
            continue
        sub = g.induced_subgraph(vs.tolist(), implementation="create_from_scratch")
        ccol = col[vs].tolist()
        canon = np.asarray(_bliss(sub, ccol, "canon"), dtype=np.int64)
        inv = np.empty_like(canon)
        inv[canon] = np.arange(canon.shape[0])
        sel = np.asarray(sub.get_edgelist(), dtype=np.int64).reshape(-1, 2)
        cel = canon[sel]
        cel = cel[np.lexsort((cel[:, 1], cel[:, 0]))]
        key = (np.int64(vs.shape[0]).tobytes() + col[vs][inv].tobytes() + cel.tobytes())
        classes.setdefault(key, []).append((vs, canon))
        layout.add(c, key, canon)
    for members in classes.values():
        k = len(members)
        vs1, canon1 = members[0]
        sub = g.induced_subgraph(vs1.tolist(), implementation="create_from_scratch")
        ccol = col[vs1].tolist()
        c_order = _bliss(sub, ccol, "count")
        factors += [c_order**k, math.factorial(k)]
        log10 += k * math.log10(c_order) + math.lgamma(k + 1) / _LN10  # exact for big ints
        orig = vs1 < nv
        if c_order > 1:
            for gen in _bliss(sub, ccol, "gens"):
                a = np.asarray(gen, dtype=np.int64)
                moved = np.flatnonzero((a != np.arange(a.shape[0])) & orig)
                if moved.size:
                    if (vs1[a[moved]] >= nv).any():
                        raise RuntimeError("bliss mapped an original vertex to a subdivision one")
                    gens.append((vertices[vs1[moved]], vertices[vs1[a[moved]]]))
        rows = [vs1]
        for vsj, canonj in members[1:]:
            invj = np.empty_like(canonj)
            invj[canonj] = np.arange(canonj.shape[0])
            rows.append(vsj[invj[canon1]])  # C_1 local x -> vertex of C_j with the same canon id
        gens += _class_generators(rows, orig, vertices)
    return _product(factors), log10, gens, ncomp, len(classes) + len(fast)


def find_automorphisms(
    ug: UnitGraph, *, want_generators: bool = True, max_generators: int | None = None
) -> AutomorphismResult:
    """Exact automorphism group of the graph denoted by ``ug``.

    ``want_generators=False`` returns no generators (the bliss-derived ones are still built and
    verified, and orbits are always computed).  ``max_generators`` caps the number returned
    (orbits are computed from all of them; ``certificate["generators_truncated"]`` says so).
    Raises ``ValueError`` for a malformed / non-simple unit graph and ``RuntimeError`` if a
    generator fails verification (a bug).
    """
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    n = int(ug.n)
    t = time.perf_counter()
    g0 = normalise(ug)
    check_simple(g0)
    timings["validate"] = time.perf_counter() - t

    t = time.perf_counter()
    ref = refine(g0)
    timings["refine"] = time.perf_counter() - t
    cell = ref.colour
    cert: dict = {"rounds": ref.rounds, "cells": ref.cells, "vertices": n}

    if ref.cells == n:
        timings["total"] = time.perf_counter() - t_all
        cert.update({"kind": "discrete-refinement", "timings": timings})
        return AutomorphismResult(
            order=1,
            log10_order=0.0,
            orbit_id=np.arange(n, dtype=np.int64),
            generators=[],
            certificate=cert,
        )

    t = time.perf_counter()
    red = reduce_graph(g0, cell)
    timings["reduce"] = time.perf_counter() - t
    cert["reduced"] = dict(red.stats)

    # ---- exact search on the rest, one connected component at a time ------------------
    bliss_order = 1
    bliss_log10 = 0.0
    sparse: list[tuple[np.ndarray, np.ndarray]] = []  # original vertex ids
    nv = int(red.vertices.shape[0])
    if nv:
        t = time.perf_counter()
        g, colours = _bliss_graph(red, cell, ref.cells)
        timings["bliss_build"] = time.perf_counter() - t
        cert["reduced"]["bliss_vertices"] = g.vcount()
        cert["reduced"]["bliss_edges"] = g.ecount()
        t = time.perf_counter()
        bliss_order, bliss_log10, sparse, ncomp, nclass = _search_components(
            g, colours, nv, red.vertices)
        timings["bliss"] = time.perf_counter() - t
        cert["reduced"]["components"] = ncomp
        cert["reduced"]["component_classes"] = nclass

    # ---- order -------------------------------------------------------------------------
    sizes = red.free_cell_sizes
    order = _product([bliss_order] + [math.factorial(int(s)) for s in sizes])
    log10_order = bliss_log10 + float(
        sum(math.lgamma(int(s) + 1) for s in sizes) / _LN10
    )

    # ---- generators, verification, orbits ----------------------------------------------
    t = time.perf_counter()
    index = _EdgeIndex(g0, checked=True)
    for moved, images in sparse:
        if not index.check_sparse(moved, images):
            raise RuntimeError("bliss generator failed verification on the original graph")
    n_bliss = len(sparse)
    gens = list(sparse)
    if want_generators:
        for cv in red.free_cells:
            gens.append((cv[:2].copy(), cv[1::-1].copy()))
            if cv.shape[0] > 2:
                gens.append((cv.copy(), np.roll(cv, -1)))
        for moved, images in gens[n_bliss:]:
            if not index.check_sparse(moved, images):
                raise RuntimeError("free-cell generator failed verification (reduction bug)")
    timings["verify"] = time.perf_counter() - t

    t = time.perf_counter()
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    for moved, images in sparse:
        pairs.append(np.stack([moved, images], axis=1))
    for cv in red.free_cells:
        pairs.append(np.stack([cv[:-1], cv[1:]], axis=1))
    edges = np.concatenate(pairs)
    if edges.shape[0]:
        # union of the generators' cycles: connected components of a sparse graph (scipy works
        # on the arrays directly; an igraph graph would need a Python list of every pair)
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        adj = coo_matrix((np.ones(edges.shape[0], dtype=np.int8), (edges[:, 0], edges[:, 1])),
                         shape=(n, n))
        _, membership = connected_components(adj, directed=False)
        orbit_id = _canonical_orbits(membership.astype(np.int64))
    else:
        orbit_id = np.arange(n, dtype=np.int64)
    timings["orbits"] = time.perf_counter() - t
    gens = SparsePerms(n, gens)

    truncated = False
    if not want_generators:
        gens = []
    elif max_generators is not None and len(gens) > max_generators:
        gens = gens[: max(0, int(max_generators))]
        truncated = True
    timings["total"] = time.perf_counter() - t_all
    cert.update(
        {
            "kind": "refinement+reduction+bliss" if nv else "refinement+reduction",
            "bliss_log10_order": bliss_log10,
            "free_log10_order": log10_order - bliss_log10,
            "generators_truncated": truncated,
            "timings": timings,
        }
    )
    return AutomorphismResult(
        order=order,
        log10_order=log10_order,
        orbit_id=orbit_id,
        generators=gens,
        certificate=cert,
    )
