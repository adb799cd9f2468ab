"""GIN-like message-passing network with mean aggregation (Lim et al. F.1.2).

Layer ``l``: ``h <- act(norm(lin(h + aggr_{j in N(i)} h_j)))``; a linear head follows.  With
``hidden_dim: 256``, 3 layers, ogbn-arxiv's 128 features and 40 classes this has 176,424
trainable parameters, Table 5's count.  The model takes ``(x, edge_index)`` like torch-geometric.
"""

from __future__ import annotations

from asymspec.ir.program import InputDecl, Program


def expand(m: dict) -> Program:
    prog = Program(
        [InputDecl("x", (int(m["in_dim"]),), source=("model", "in_dim")),
         InputDecl("edge_index", (2,), kind="edge_index", source=("model", "in_dim"))],
        [], [],
    )
    aggr = {"mean": "mean_aggr", "sum": "sum_aggr", "max": "max_aggr"}[m.get("aggregation",
                                                                            "mean")]
    norm = m.get("norm", "layernorm")
    bias = bool(m.get("bias", True))
    h = "x"
    for layer in range(1, int(m.get("layers", 3)) + 1):
        src = ("model", "layers")
        a = prog.add(f"conv{layer}.aggr", aggr, [h, "edge_index"], ("model", "aggregation"))
        s = prog.add(f"conv{layer}.add", "add", [h, a], src)
        h = prog.add(f"conv{layer}.lin", "linear", s, ("model", "hidden_dim"),
                     out_features=int(m.get("hidden_dim", 256)), bias=bias)
        if norm != "none":
            h = prog.add(f"norm{layer}", norm, h, ("model", "norm"))
        h = prog.add(f"act{layer}", "activation", h, ("model", "activation"),
                     fn=m.get("activation", "relu"))
    prog.add("head", "linear", h, ("model", "out_dim"), out_features=int(m["out_dim"]),
             bias=bias)
    return prog
