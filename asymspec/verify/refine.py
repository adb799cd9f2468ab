"""Vectorised colour refinement (1-WL with edge colours) on a :class:`UnitGraph`.

Why this is the first phase
---------------------------
Colour refinement computes, in ``O(m)`` per round, a vertex colouring that is an *isomorphism
invariant*: it is a function of the (coloured) graph alone and never of how the vertices are
numbered.  Hence every automorphism ``pi`` maps each colour class ("cell") onto itself, i.e.
``Aut(G) = Aut(G, chi)`` for the stable colouring ``chi``.  In particular, when the final
partition is *discrete* (every cell a singleton), every automorphism fixes every vertex and the
group is trivial -- the refinement itself is the proof (``shared/notes/verifier-techniques.md``:
every W-Asym network ends here after one or two rounds).

Hashing and soundness
---------------------
Each round replaces the colour of ``v`` by a 64-bit hash of
``(old colour, multiset of (edge colour, colour of in-neighbour), same for out-neighbours)``.
A multiset is hashed as the ``uint64`` wrap-around *sum* of a splitmix64-style mix of each
element, so it does not depend on the order in which edges are stored.  The new cell ids are the
ranks of the distinct hash values (``np.unique``), which are invariant too.  A hash *collision*
can only merge two cells that exact refinement would have separated; the merged colouring is
still invariant (it is a fixed function of the graph), so everything built on it stays sound --
we may merely miss a chance to shrink the problem.

Dense blocks without materialising them
---------------------------------------
For a block ``b`` with colour ``c``, source range ``S`` and destination range ``D``, every
``y in D`` receives the same in-contribution ``sum_{x in S} h_in(c, col[x])``; it is computed
once per block (a slice sum, or a prefix-sum difference when many blocks share a colour) and
broadcast to ``D`` through a difference array.  Override edges replace a block pair by an
explicit edge of another colour: the explicit edge adds its own term and subtracts the block
term ``h_in(c_block, col[x])`` that the broadcast wrongly included.  The out-direction is
symmetric.  All arithmetic is modulo ``2**64`` (numpy ``uint64`` wraps silently), so the sums
are exact in that ring and independent of summation order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from asymspec.ir.unitgraph import UnitGraph

__all__ = ["Refinement", "mix64", "refine"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)

# Domain-separation salts: the in- and out-direction, edge colours and vertex colours hash into
# unrelated parts of the 64-bit space, so e.g. an in-edge never cancels an out-edge.
_SALT_EDGE_IN = np.uint64(0x243F6A8885A308D3)
_SALT_EDGE_OUT = np.uint64(0x13198A2E03707344)
_SALT_VERT_IN = np.uint64(0xA4093822299F31D0)
_SALT_VERT_OUT = np.uint64(0x082EFA98EC4E6C89)
_SALT_SELF = np.uint64(0x452821E638D01377)
_SALT_INIT = np.uint64(0xBE5466CF34E90C6C)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a ``uint64`` array (returns a new array)."""
    z = np.asarray(z, dtype=np.uint64) + _GOLDEN
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def _u64(a: np.ndarray) -> np.ndarray:
    """Reinterpret int64 values as uint64 (two's complement; only equality matters)."""
    return np.ascontiguousarray(a, dtype=np.int64).view(np.uint64)


class Refinement(NamedTuple):
    """Result of :func:`refine`: ``colour`` (int64 cell id per vertex, ``0..cells-1``, the
    ids are ranks of invariant hash values), ``rounds`` (rounds computed), ``cells``."""

    colour: np.ndarray
    rounds: int
    cells: int


class _BlockSums:
    """Per-round block contributions for one direction (in or out).

    ``take`` is the range whose colours are summed, ``give`` the range that receives the sum.
    Blocks are grouped by colour; a group whose summed range length exceeds ``n`` uses one
    prefix sum over all vertices (``O(n)``), otherwise per-block slice sums (``O(sum len)``).
    """

    def __init__(self, n: int, colour_hash: np.ndarray, take: np.ndarray, give: np.ndarray):
        self.n = n
        self.take = take
        self.give = give
        self.groups: list[tuple[np.uint64, np.ndarray, bool]] = []
        if colour_hash.shape[0] == 0:
            return
        uniq, inv = np.unique(colour_hash, return_inverse=True)
        lengths = take[:, 1] - take[:, 0]
        for g, h in enumerate(uniq):
            idx = np.flatnonzero(inv == g)
            use_prefix = bool(lengths[idx].sum() > n)
            self.groups.append((np.uint64(h), idx, use_prefix))

    def apply(self, vertex_hash: np.ndarray, out: np.ndarray) -> None:
        """Add every block's contribution to ``out`` (uint64, length ``n``) in place."""
        if not self.groups:
            return
        n = self.n
        sums = np.zeros(self.take.shape[0], dtype=np.uint64)
        for h, idx, use_prefix in self.groups:
            if use_prefix:
                pref = np.zeros(n + 1, dtype=np.uint64)
                np.cumsum(mix64(vertex_hash + h), out=pref[1:])
                sums[idx] = pref[self.take[idx, 1]] - pref[self.take[idx, 0]]
            else:
                for b in idx.tolist():
                    lo, hi = int(self.take[b, 0]), int(self.take[b, 1])
                    sums[b] = mix64(vertex_hash[lo:hi] + h).sum(dtype=np.uint64)
        diff = np.zeros(n + 1, dtype=np.uint64)
        np.add.at(diff, self.give[:, 0], sums)
        np.subtract.at(diff, self.give[:, 1], sums)
        out += np.cumsum(diff[:n], dtype=np.uint64)


def refine(
    ug: UnitGraph, *, initial: np.ndarray | None = None, max_rounds: int | None = None
) -> Refinement:
    """Stable colour refinement of the graph denoted by ``ug``.

    ``initial`` (optional, int64 per vertex) replaces ``ug.vertex_colour`` as the starting
    colouring; it must itself be isomorphism-invariant for the result to be.  Rounds stop when
    the number of cells stops growing (the partition is then stable, up to hash collisions) or
    when it becomes discrete (nothing left to split).  ``max_rounds`` is a safety cap only
    (stopping early still yields an invariant, just coarser, colouring).
    """
    n = int(ug.n)
    start = ug.vertex_colour if initial is None else initial
    colour = np.unique(np.asarray(start, dtype=np.int64), return_inverse=True)[1]
    colour = colour.astype(np.int64).ravel()
    cells = int(colour.max()) + 1 if n else 0
    if n == 0 or cells == n:
        return Refinement(colour, 0, cells)

    src = np.asarray(ug.src, dtype=np.int64)
    dst = np.asarray(ug.dst, dtype=np.int64)
    ec = _u64(ug.edge_colour)
    eb = np.asarray(ug.edge_block, dtype=np.int64)
    ech_in = mix64(ec ^ _SALT_EDGE_IN)
    ech_out = mix64(ec ^ _SALT_EDGE_OUT)
    ovr = np.flatnonzero(eb >= 0)
    has_ovr = ovr.shape[0] > 0
    if has_ovr:
        oc = _u64(np.asarray(ug.block_colour, dtype=np.int64)[eb[ovr]])
        och_in = mix64(oc ^ _SALT_EDGE_IN)
        och_out = mix64(oc ^ _SALT_EDGE_OUT)
        osrc, odst = src[ovr], dst[ovr]

    bsrc = np.asarray(ug.block_src, dtype=np.int64).reshape(-1, 2)
    bdst = np.asarray(ug.block_dst, dtype=np.int64).reshape(-1, 2)
    bcol = _u64(np.asarray(ug.block_colour, dtype=np.int64))
    nonempty = (bsrc[:, 1] > bsrc[:, 0]) & (bdst[:, 1] > bdst[:, 0])
    bsrc, bdst, bcol = bsrc[nonempty], bdst[nonempty], bcol[nonempty]
    blocks_in = _BlockSums(n, mix64(bcol ^ _SALT_EDGE_IN), take=bsrc, give=bdst)
    blocks_out = _BlockSums(n, mix64(bcol ^ _SALT_EDGE_OUT), take=bdst, give=bsrc)

    limit = n if max_rounds is None else int(max_rounds)
    rounds = 0
    while rounds < limit:
        cu = colour.view(np.uint64)
        vh_in = mix64(cu ^ _SALT_VERT_IN)
        vh_out = mix64(cu ^ _SALT_VERT_OUT)

        in_sum = np.zeros(n, dtype=np.uint64)
        out_sum = np.zeros(n, dtype=np.uint64)
        if src.shape[0]:
            np.add.at(in_sum, dst, mix64(ech_in + vh_in[src]))
            np.add.at(out_sum, src, mix64(ech_out + vh_out[dst]))
        if has_ovr:
            # the block broadcast below counted the block colour on overridden pairs: remove it
            np.subtract.at(in_sum, odst, mix64(och_in + vh_in[osrc]))
            np.subtract.at(out_sum, osrc, mix64(och_out + vh_out[odst]))
        blocks_in.apply(vh_in, in_sum)
        blocks_out.apply(vh_out, out_sum)

        new_hash = mix64(mix64(mix64(cu ^ _SALT_SELF) + in_sum) ^ mix64(out_sum ^ _SALT_INIT))
        new_colour = np.unique(new_hash, return_inverse=True)[1].astype(np.int64).ravel()
        new_cells = int(new_colour.max()) + 1
        rounds += 1
        if new_cells <= cells:
            # stable: this round split nothing (the previous colouring is kept; both are
            # invariant, and without collisions they are the same partition)
            break
        colour, cells = new_colour, new_cells
        if cells == n:
            break
    return Refinement(colour, rounds, cells)
