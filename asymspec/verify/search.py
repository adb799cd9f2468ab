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
        p = np.arange(n, dtype=np.int64)
        p[moved] = images
        if self.src.shape[0]:
            touched = self.incident(moved)
            u, v, c = self.src[touched], self.dst[touched], self.colour[touched]
            hit, col = self.explicit_colour(p[u] * n + p[v])
            if not (hit.all() and (col == c).all()):
                return self._exact(p)
        if self._disjoint_ranges():
            # every block range is mapped onto itself iff each moved vertex stays in its range
            if not (self._range_id(moved) == self._range_id(images)).all():
                return self.check(p)
            return True
        for i in range(self.bc.shape[0]):
            for lo, hi in ((self.bs[i, 0], self.bs[i, 1]), (self.bd[i, 0], self.bd[i, 1])):
                inside = (moved >= lo) & (moved < hi)
                if inside.any() and not ((images[inside] >= lo) & (images[inside] < hi)).all():
                    return self.check(p)
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


def _search_components(
    g: ig.Graph, colours: list[int], nv: int, vertices: np.ndarray
) -> tuple[int, float, list[tuple[np.ndarray, np.ndarray]], int, int]:
    """Exact group of ``g`` as a product over connected components.

    Components are grouped into classes by their canonical form (bliss canonical labelling,
    colours included: equal forms <=> colour-preserving isomorphic).  For a class of ``k``
    isomorphic components the group is ``Aut(C) wr S_k``: order ``|Aut(C)|^k * k!``, generated
    by ``Aut(C_1)``'s generators and the swaps ``C_1 <-> C_j`` along the canonical isomorphism.
    Components of different classes cannot be mapped onto each other.  Generators come back
    sparse, in original vertex ids (subdivision vertices dropped).
    """
    col = np.asarray(colours, dtype=np.int64)
    membership = np.asarray(g.connected_components(mode="weak").membership, dtype=np.int64)
    order_idx = np.argsort(membership, kind="stable")
    bounds = np.flatnonzero(np.diff(membership[order_idx])) + 1
    comps = np.split(order_idx, bounds) if membership.shape[0] else []
    classes: dict[bytes, list[tuple[np.ndarray, np.ndarray]]] = {}
    for vs in comps:
        sub = g.induced_subgraph(vs.tolist(), implementation="create_from_scratch")
        ccol = col[vs].tolist()
        canon = np.asarray(_bliss(sub, ccol, "canon"), dtype=np.int64)
        inv = np.empty_like(canon)
        inv[canon] = np.arange(canon.shape[0])
        el = np.asarray(sub.get_edgelist(), dtype=np.int64).reshape(-1, 2)
        cel = canon[el]
        cel = cel[np.lexsort((cel[:, 1], cel[:, 0]))]
        key = (np.int64(vs.shape[0]).tobytes() + col[vs][inv].tobytes() + cel.tobytes())
        classes.setdefault(key, []).append((vs, canon))
    order = 1
    log10 = 0.0
    gens: list[tuple[np.ndarray, np.ndarray]] = []
    for members in classes.values():
        k = len(members)
        vs1, canon1 = members[0]
        sub = g.induced_subgraph(vs1.tolist(), implementation="create_from_scratch")
        ccol = col[vs1].tolist()
        c_order = _bliss(sub, ccol, "count")
        order *= c_order**k * math.factorial(k)
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
        for vsj, canonj in members[1:]:
            invj = np.empty_like(canonj)
            invj[canonj] = np.arange(canonj.shape[0])
            image = vsj[invj[canon1]]  # C_1 local x -> vertex of C_j with the same canon id
            keep = orig
            a, b = vs1[keep], image[keep]
            gens.append((vertices[np.concatenate([a, b])], vertices[np.concatenate([b, a])]))
    return order, log10, gens, len(comps), len(classes)


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
    order = bliss_order * math.prod(math.factorial(int(s)) for s in sizes)
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
        comp = ig.Graph(n=n, edges=edges.tolist(), directed=False).connected_components()
        orbit_id = _canonical_orbits(np.asarray(comp.membership, dtype=np.int64))
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
