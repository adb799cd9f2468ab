"""Plain convolutional stack: ``conv -> [norm] -> act`` per entry of ``channels``, global pooling,
optional hidden linear layers, and a linear head."""

from __future__ import annotations

from asymspec.ir.program import InputDecl, Program


def expand(m: dict) -> Program:
    size = int(m.get("input_size", 32))
    prog = Program([InputDecl("x", (int(m.get("in_channels", 3)), size, size),
                              source=("model", "in_channels"))], [], [])
    channels = list(m["channels"])
    strides = m.get("strides") or [1] * len(channels)
    norm = m.get("norm", "none")
    act = m.get("activation", "relu")
    bias = bool(m.get("bias", True))
    h = "x"
    for i, (c, s) in enumerate(zip(channels, strides), start=1):
        h = prog.add(f"conv{i}", "conv2d", h, ("model", "channels", i - 1), out_channels=int(c),
                     kernel_size=int(m.get("kernel_size", 3)), stride=int(s), bias=bias)
        if norm == "batchnorm":
            h = prog.add(f"norm{i}", "batchnorm", h, ("model", "norm"))
        elif norm == "layernorm":
            h = prog.add(f"norm{i}", "groupnorm", h, ("model", "norm"), groups=1)
        h = prog.add(f"act{i}", "activation", h, ("model", "activation"), fn=act)
    pool = "global_max_pool" if m.get("global_pool", "avg") == "max" else "global_avg_pool"
    h = prog.add("pool", pool, h, ("model", "global_pool"))
    for j, w in enumerate(m.get("hidden", []), start=1):
        h = prog.add(f"fc{j}", "linear", h, ("model", "hidden", j - 1), out_features=int(w))
        h = prog.add(f"fc{j}_act", "activation", h, ("model", "activation"), fn=act)
    prog.add("head", "linear", h, ("model", "num_classes"),
             out_features=int(m.get("num_classes", 10)))
    return prog
