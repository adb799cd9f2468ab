"""Multi-layer perceptron: ``fc1 -> [norm1] -> act1 -> ... -> fcL`` (Lim et al. §5.1, Table 10)."""

from __future__ import annotations

from asymspec.ir.program import InputDecl, Program

NORM_OPS = {"layernorm": "layernorm", "batchnorm": "batchnorm"}


def expand(m: dict) -> Program:
    prog = Program([InputDecl("x", (int(m["input_dim"]),), source=("model", "input_dim"))], [], [])
    h = "x"
    widths = list(m.get("widths", []))
    bias = bool(m.get("bias", True))
    norm = m.get("norm", "none")
    for i, w in enumerate(widths, start=1):
        src = ("model", "widths", i - 1)
        h = prog.add(f"fc{i}", "linear", h, src, out_features=int(w), bias=bias)
        if norm != "none":
            h = prog.add(f"norm{i}", NORM_OPS[norm], h, ("model", "norm"))
        h = prog.add(f"act{i}", "activation", h, ("model", "activation"),
                     fn=m.get("activation", "relu"))
    prog.add(f"fc{len(widths) + 1}", "linear", h, ("model", "output_dim"),
             out_features=int(m["output_dim"]), bias=bias)
    return prog
