"""The computation-graph IR: a networkx DiGraph with one node per *group of units*.

A node is a tensor-producing operation together with the units (neurons, channels, features) of
the tensor it produces: a linear layer's output neurons, a conv's output channels, a residual
sum's stream, an attention block's head dimensions.  This is the granularity users think in and
the one every consumer reads: the torch emitter, the verifier (through the unit-level expansion
in :mod:`asymspec.ir.units`), permutation specs for alignment, and the audit.

Node attributes (all plain Python / torch values):

``op``        operation name, a key of :data:`asymspec.ir.ops.OPS` (its category, emitter, layout)
``inputs``    ordered list of input node names (order matters for concat, mul, attention)
``size``      number of units (the channel / feature dimension); 0 for non-feature inputs
``shape``     per-sample shape: ``(F,)`` vector, ``(C, H, W)`` image, ``(T, F)`` tokens
``layout``    ``"vector" | "image" | "tokens" | "edges"``
``role``      ``input | output | hidden | gate | residual | norm | ...`` (informational)
``attrs``     op parameters (kernel_size, stride, fn, heads, ...)
``bias``      ``None`` | ``"trainable"`` | a float32 tensor of fixed bias values
``unit_colour``  optional int64 array (size,) of extra per-unit colours (e.g. the spatial
              position of a flattened unit) that automorphisms must preserve
``source``    JSON path of the spec field that produced the node (for error messages)
``added_by``  name of the pass that inserted the node, if any
``shares``    for a linear/conv that reuses another layer's weight and bias: that owner's name
              (its dense edge's ``param`` names the owner's tensor; masks are the owner's)

Graph attribute ``ties``: ``[(a, b, reason), ...]`` pairs of equal-size nodes whose units every
permutation must move alike because one tensor is read along an axis of each (weight tying found
by the audit: an embedding matrix reused as the output layer).  :meth:`IRGraph.ties` returns
these together with the ties implied by ``shares``; the unit expansion, the permutation spec and
everything built on them read that one list.

Edge attributes (edge ``u -> v`` means ``v`` reads ``u``):

``kind``      ``"dense"``: a weight tensor ``W[out, in, *kernel]``; ``"map"``: a structural,
              parameter-free wiring where output unit ``j`` reads input unit ``index[j]``
              (``-1``: none) — identity, concat slices, zero-padding, flatten;
              ``"attention"``: q/k/v inputs of an attention node (``slot`` 0/1/2).
``slot``      position of ``u`` in ``v``'s ``inputs``
``param``     for dense edges: the parameter name (``"<node>.weight"``); equal names = shared
``weight_shape`` tuple
``mask``      ``None`` (all entries trainable) or a bool tensor, True = trainable
``fixed``     ``None`` or float32 tensor of the values used where ``mask`` is False
``offset``    ``None`` or float32 tensor added to every entry (syre noise)
              (in an IR compiled with ``draw=False`` — graph attribute ``drawn`` False — masks,
              fixed values, offsets and fixed biases are :class:`asymspec.ir.deferred.Deferred`
              placeholders of the same shapes: counts only)
``index``     for map edges: int64 numpy array (size of ``v``,)
``decided_by`` list of pass names that changed the edge

Effective weight of a dense edge: ``where(mask, W, fixed) + offset``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are used: counting (``show``) needs none
    import torch

LAYOUTS = ("vector", "image", "tokens", "edges")


class IRGraph:
    """Thin, typed wrapper around ``nx.DiGraph`` (available as ``.g``)."""

    def __init__(self, name: str = "model") -> None:
        self.g = nx.DiGraph(name=name, inputs=[], outputs=[], passes=[])

    # ------------------------------------------------------------------ construction
    def add_node(
        self,
        name: str,
        op: str,
        inputs: list[str],
        size: int,
        shape: tuple[int, ...],
        layout: str,
        role: str = "hidden",
        attrs: dict[str, Any] | None = None,
        bias: Any = None,
        source: tuple = (),
        added_by: str | None = None,
    ) -> None:
        if name in self.g:
            raise ValueError(f"duplicate IR node {name!r}")
        assert layout in LAYOUTS, layout
        self.g.add_node(
            name,
            op=op,
            inputs=list(inputs),
            size=int(size),
            shape=tuple(int(s) for s in shape),
            layout=layout,
            role=role,
            attrs=dict(attrs or {}),
            bias=bias,
            unit_colour=None,
            shares=None,
            source=tuple(source),
            added_by=added_by,
        )

    def add_dense_edge(
        self, src: str, dst: str, weight_shape: tuple[int, ...], slot: int = 0
    ) -> None:
        self.g.add_edge(
            src,
            dst,
            kind="dense",
            slot=slot,
            param=f"{dst}.weight",
            weight_shape=tuple(weight_shape),
            mask=None,
            fixed=None,
            offset=None,
            decided_by=[],
        )

    def add_map_edge(self, src: str, dst: str, index: np.ndarray, slot: int = 0) -> None:
        self.g.add_edge(src, dst, kind="map", slot=slot, index=np.asarray(index, dtype=np.int64))

    def add_attention_edge(self, src: str, dst: str, slot: int) -> None:
        self.g.add_edge(src, dst, kind="attention", slot=slot)

    def add_tie(self, a: str, b: str, reason: str = "") -> None:
        """Units of ``a`` and ``b`` must be permuted alike (one tensor indexes both)."""
        if self.node(a)["size"] != self.node(b)["size"]:
            raise ValueError(f"tie between {a!r} and {b!r} of different sizes")
        self.g.graph.setdefault("ties", []).append((a, b, reason))

    # ------------------------------------------------------------------ queries
    def ties(self) -> list[tuple[str, str]]:
        """Every pair of nodes permuted alike because of a shared tensor: explicit ties and,
        for each layer that ``shares`` an owner's weight, (owner, layer) and their inputs."""
        out = [(a, b) for a, b, *_ in self.g.graph.get("ties", ())]
        for n, d in self.g.nodes(data=True):
            owner = d.get("shares")
            if owner:
                (src_n, _), (src_o, _) = self.dense_edge(n), self.dense_edge(owner)
                out += [(owner, n), (src_o, src_n)]
        return out

    @property
    def inputs(self) -> list[str]:
        return self.g.graph["inputs"]

    @property
    def outputs(self) -> list[str]:
        return self.g.graph["outputs"]

    @property
    def name(self) -> str:
        return self.g.graph["name"]

    def node(self, name: str) -> dict[str, Any]:
        return self.g.nodes[name]

    def edge(self, src: str, dst: str) -> dict[str, Any]:
        return self.g.edges[src, dst]

    def topo_order(self) -> list[str]:
        """Topological order, ties broken by insertion order (deterministic)."""
        order = {n: i for i, n in enumerate(self.g.nodes)}
        return list(nx.lexicographical_topological_sort(self.g, key=order.__getitem__))

    def in_edges(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """Incoming edges of ``name`` ordered by slot."""
        edges = [(u, d) for u, _, d in self.g.in_edges(name, data=True)]
        return sorted(edges, key=lambda e: e[1]["slot"])

    def dense_edge(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """The (single) dense input edge of a linear/conv node, if any."""
        for u, d in self.in_edges(name):
            if d["kind"] == "dense":
                return u, d
        return None

    def dense_edges(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for u, v, d in self.g.edges(data=True):
            if d["kind"] == "dense":
                yield u, v, d

    def consumers(self, name: str) -> list[str]:
        return list(self.g.successors(name))

    def copy(self) -> IRGraph:
        """Deep-enough copy: graph structure and attribute dicts are new; tensors are shared
        (passes replace tensors, they never modify them in place)."""
        new = IRGraph.__new__(IRGraph)
        new.g = nx.DiGraph()
        new.g.graph.update(
            {k: (list(v) if isinstance(v, list) else v) for k, v in self.g.graph.items()}
        )
        for n, d in self.g.nodes(data=True):
            nd = dict(d)
            nd["inputs"] = list(d["inputs"])
            nd["attrs"] = dict(d["attrs"])
            new.g.add_node(n, **nd)
        for u, v, d in self.g.edges(data=True):
            ed = dict(d)
            if "decided_by" in ed:
                ed["decided_by"] = list(ed["decided_by"])
            new.g.add_edge(u, v, **ed)
        return new

    # ------------------------------------------------------------------ summaries
    def effective_weight(self, src: str, dst: str, weight: torch.Tensor) -> torch.Tensor:
        """The weight a forward pass uses, given the raw trainable tensor."""
        import torch

        d = self.edge(src, dst)
        w = weight
        if d["mask"] is not None:
            w = torch.where(d["mask"].to(w.device), w, d["fixed"].to(w.device, w.dtype))
        if d["offset"] is not None:
            w = w + d["offset"].to(w.device, w.dtype)
        return w

    def lint(self) -> None:
        """Check every node against the op vocabulary (:mod:`asymspec.ir.ops`) and the graph's
        structure: known op, inputs that exist and match the in-edges, a dense edge for every
        ``dense`` op, ties between existing equal-size nodes.  Raises ``ValueError``."""
        from asymspec.ir.ops import OPS

        for n, d in self.g.nodes(data=True):
            if d["op"] not in OPS:
                raise ValueError(f"IR node {n!r}: unknown op {d['op']!r}")
            missing = [u for u in d["inputs"] if u not in self.g]
            if missing:
                raise ValueError(f"IR node {n!r}: inputs {missing} do not exist")
            if set(d["inputs"]) != set(self.g.predecessors(n)):
                raise ValueError(f"IR node {n!r}: inputs {d['inputs']} differ from its in-edges "
                                 f"{sorted(self.g.predecessors(n))}")
            if OPS[d["op"]].category == "dense" and self.dense_edge(n) is None:
                raise ValueError(f"IR node {n!r}: {d['op']} without a dense input edge")
        for a, b in self.ties():
            if a not in self.g or b not in self.g or \
                    self.node(a)["size"] != self.node(b)["size"]:
                raise ValueError(f"tie between {a!r} and {b!r}: missing node or sizes differ")

    def __repr__(self) -> str:
        return (
            f"IRGraph({self.name!r}, nodes={self.g.number_of_nodes()}, "
            f"edges={self.g.number_of_edges()}, inputs={self.inputs}, outputs={self.outputs})"
        )
