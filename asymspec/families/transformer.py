"""Pre-LN transformer encoder over token features, mean- or first-token-pooled, with a linear
head.  Attention is spelled out (q, k, v projections, an ``attention`` node, an output
projection) so the IR sees heads and within-head dimensions — what W-Asym masks per §4.3."""

from __future__ import annotations

import math

from asymspec.ir.program import InputDecl, Program


def expand(m: dict) -> Program:
    d = int(m.get("d_model", 64))
    hidden = int(math.ceil(float(m.get("mlp_ratio", 4)) * d))
    prog = Program([InputDecl("x", (int(m.get("seq_len", 16)), int(m["input_dim"])),
                              source=("model", "input_dim"))], [], [])
    src = ("model", "layers")
    h = prog.add("embed", "linear", "x", ("model", "d_model"), out_features=d)
    for i in range(int(m.get("layers", 2))):
        p = f"blocks.{i}"
        a = prog.add(f"{p}.ln1", "layernorm", h, src)
        q = prog.add(f"{p}.q", "linear", a, src, out_features=d)
        k = prog.add(f"{p}.k", "linear", a, src, out_features=d)
        v = prog.add(f"{p}.v", "linear", a, src, out_features=d)
        o = prog.add(f"{p}.attn", "attention", [q, k, v], ("model", "heads"),
                     heads=int(m.get("heads", 4)))
        o = prog.add(f"{p}.proj", "linear", o, src, out_features=d)
        h = prog.add(f"{p}.add1", "add", [h, o], src)
        a = prog.add(f"{p}.ln2", "layernorm", h, src)
        f = prog.add(f"{p}.fc1", "linear", a, ("model", "mlp_ratio"), out_features=hidden)
        f = prog.add(f"{p}.act", "activation", f, ("model", "activation"),
                     fn=m.get("activation", "gelu"))
        f = prog.add(f"{p}.fc2", "linear", f, src, out_features=d)
        h = prog.add(f"{p}.add2", "add", [h, f], src)
    h = prog.add("ln_f", "layernorm", h, src)
    pool = "token_first" if m.get("pooling", "mean") == "first" else "token_mean"
    h = prog.add("pool", pool, h, ("model", "pooling"))
    prog.add("head", "linear", h, ("model", "num_classes"), out_features=int(m["num_classes"]))
    return prog
