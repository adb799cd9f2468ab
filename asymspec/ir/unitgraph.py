"""The unit-level graph: one vertex per neuron / channel, as flat numpy arrays.

This is what the automorphism search works on.  It is produced from the IR by
:func:`asymspec.ir.units.expand` (a pure function of the IR) and never stored.

Why arrays and "dense blocks": a standard 784-512-512-512-10 MLP has 0.93M weight entries and a
GPT-2-sized transformer 85M; building one Python object per entry is too slow and too big
(see ``shared/notes/ir-granularity.md``).  Fully trainable weight matrices are complete bipartite
blocks of one colour, so they are stored as a *range x range* block; only the entries that
differ from the block colour (fixed entries, noisy entries) are stored explicitly as *override*
edges.

Semantics (the graph this object denotes):

* vertices ``0 .. n-1`` with initial colours ``vertex_colour`` (int64, any values; only equality
  matters).  Input and output units have colours of their own, so they are fixed points.
* for every dense block ``b``: an edge ``x -> y`` of colour ``block_colour[b]`` for every
  ``x in [block_src[b,0], block_src[b,1])`` and ``y in [block_dst[b,0], block_dst[b,1])``, EXCEPT
  the pairs that have an override edge with ``edge_block == b``;
* every explicit edge ``src[i] -> dst[i]`` with colour ``edge_colour[i]``.  If
  ``edge_block[i] == b >= 0`` the edge lies inside block ``b`` and *replaces* that pair's block
  edge (there is at most one override per pair).  ``edge_block[i] == -1`` for ordinary edges.

Edge colours and block colours share one colour space.  All edges go from a vertex of one IR
node to a vertex of another IR node and the graph is acyclic.

Book-keeping: ``vertex_node[v]`` is the index into ``node_names`` of the IR node that vertex ``v``
is a unit of (``-1`` for auxiliary vertices the encoding adds, e.g. attention head vertices
belong to a node too, but tie vertices do not); ``vertex_unit[v]`` is the unit index within that
node.  Units of one IR node are contiguous, starting at ``node_offsets[name]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class UnitGraph:
    n: int
    vertex_colour: np.ndarray  # int64 (n,)
    src: np.ndarray  # int64 (m,)
    dst: np.ndarray  # int64 (m,)
    edge_colour: np.ndarray  # int64 (m,)
    edge_block: np.ndarray  # int64 (m,), -1 or block index
    block_src: np.ndarray  # int64 (b, 2) half-open vertex ranges
    block_dst: np.ndarray  # int64 (b, 2)
    block_colour: np.ndarray  # int64 (b,)
    vertex_node: np.ndarray  # int64 (n,)
    vertex_unit: np.ndarray  # int64 (n,)
    node_names: list[str] = field(default_factory=list)
    node_offsets: dict[str, int] = field(default_factory=dict)
    node_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_explicit_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_edges(self) -> int:
        """Number of edges in the denoted graph (block edges counted)."""
        sizes = (self.block_src[:, 1] - self.block_src[:, 0]) * (
            self.block_dst[:, 1] - self.block_dst[:, 0]
        )
        overrides = int(np.count_nonzero(self.edge_block >= 0))
        return int(sizes.sum()) - overrides + self.num_explicit_edges

    def to_explicit(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All edges as explicit ``(src, dst, colour)`` arrays (for tests and small graphs)."""
        srcs = [self.src]
        dsts = [self.dst]
        cols = [self.edge_colour]
        overridden = set(
            zip(self.src[self.edge_block >= 0].tolist(), self.dst[self.edge_block >= 0].tolist())
        )
        for b in range(self.block_colour.shape[0]):
            xs = np.arange(*self.block_src[b])
            ys = np.arange(*self.block_dst[b])
            xx, yy = np.meshgrid(xs, ys, indexing="ij")
            xx = xx.ravel()
            yy = yy.ravel()
            if overridden:
                keep = np.array(
                    [(int(a), int(c)) not in overridden for a, c in zip(xx, yy)], dtype=bool
                )
                xx, yy = xx[keep], yy[keep]
            srcs.append(xx)
            dsts.append(yy)
            cols.append(np.full(xx.shape[0], self.block_colour[b], dtype=np.int64))
        return (
            np.concatenate(srcs).astype(np.int64),
            np.concatenate(dsts).astype(np.int64),
            np.concatenate(cols).astype(np.int64),
        )

    @staticmethod
    def from_explicit(
        vertex_colour: np.ndarray, src: np.ndarray, dst: np.ndarray, colour: np.ndarray
    ) -> UnitGraph:
        """A graph with no dense blocks (every vertex its own node ``v<i>``)."""
        n = int(vertex_colour.shape[0])
        names = [f"v{i}" for i in range(n)]
        return UnitGraph(
            n=n,
            vertex_colour=np.asarray(vertex_colour, dtype=np.int64),
            src=np.asarray(src, dtype=np.int64),
            dst=np.asarray(dst, dtype=np.int64),
            edge_colour=np.asarray(colour, dtype=np.int64),
            edge_block=np.full(len(src), -1, dtype=np.int64),
            block_src=np.zeros((0, 2), dtype=np.int64),
            block_dst=np.zeros((0, 2), dtype=np.int64),
            block_colour=np.zeros(0, dtype=np.int64),
            vertex_node=np.arange(n, dtype=np.int64),
            vertex_unit=np.zeros(n, dtype=np.int64),
            node_names=names,
            node_offsets={nm: i for i, nm in enumerate(names)},
            node_sizes={nm: 1 for nm in names},
        )
