"""CIFAR-style ResNet of depth 6n+2 (He et al. 2016), as used by Lim et al. (§5.1, F.1–F.3).

Three stages of ``n`` basic blocks with widths ``base_width * width * (1, 2, 4)`` (or explicit
``stage_widths``); stages 2 and 3 start with stride 2.  Shortcut ``B`` is a 1x1 conv + norm
where the shape changes, shortcut ``A`` zero-pads channels (and subsamples).
``norm: layernorm`` is ``GroupNorm(1, C)`` as in the paper.  Convolutions have no bias unless
``norm: none`` (or ``conv_bias: true``).
"""

from __future__ import annotations

from asymspec.ir.program import InputDecl, Program


def _norm(prog: Program, name: str, h: str, norm: str) -> str:
    if norm == "batchnorm":
        return prog.add(name, "batchnorm", h, ("model", "norm"))
    if norm == "layernorm":
        return prog.add(name, "groupnorm", h, ("model", "norm"), groups=1)
    return h


def expand(m: dict) -> Program:
    depth = int(m.get("depth", 20))
    n = (depth - 2) // 6
    if m.get("stage_widths"):
        widths = [int(w) for w in m["stage_widths"]]
    else:
        widths = [int(m.get("base_width", 16)) * int(m.get("width", 1)) * f for f in (1, 2, 4)]
    norm = m.get("norm", "batchnorm")
    act = m.get("activation", "relu")
    bias = norm == "none" if m.get("conv_bias") is None else bool(m["conv_bias"])
    size = int(m.get("input_size", 32))
    prog = Program([InputDecl("x", (int(m.get("in_channels", 3)), size, size),
                              source=("model", "in_channels"))], [], [])
    src = ("model", "depth")
    h = prog.add("conv1", "conv2d", "x", ("model", "width"), out_channels=widths[0],
                 kernel_size=3, stride=1, bias=bias)
    h = _norm(prog, "norm1", h, norm)
    h = prog.add("act1", "activation", h, ("model", "activation"), fn=act)
    c_in = widths[0]
    for s, w in enumerate(widths, start=1):
        for b in range(n):
            stride = 2 if (s > 1 and b == 0) else 1
            p = f"layer{s}.{b}"
            x = h
            h = prog.add(f"{p}.conv1", "conv2d", x, src, out_channels=w, kernel_size=3,
                         stride=stride, bias=bias)
            h = _norm(prog, f"{p}.norm1", h, norm)
            h = prog.add(f"{p}.act1", "activation", h, ("model", "activation"), fn=act)
            h = prog.add(f"{p}.conv2", "conv2d", h, src, out_channels=w, kernel_size=3,
                         stride=1, bias=bias)
            h = _norm(prog, f"{p}.norm2", h, norm)
            if stride != 1 or c_in != w:
                if m.get("shortcut", "B") == "B":
                    sc = prog.add(f"{p}.shortcut.conv", "conv2d", x, ("model", "shortcut"),
                                  out_channels=w, kernel_size=1, stride=stride, padding=0,
                                  bias=bias)
                    sc = _norm(prog, f"{p}.shortcut.norm", sc, norm)
                else:
                    sc = prog.add(f"{p}.shortcut", "pad_channels", x, ("model", "shortcut"),
                                  out_channels=w, stride=stride)
            else:
                sc = x
            h = prog.add(f"{p}.add", "add", [h, sc], src)
            h = prog.add(f"{p}.act2", "activation", h, ("model", "activation"), fn=act)
            c_in = w
    h = prog.add("pool", "global_avg_pool", h, src)
    prog.add("fc", "linear", h, ("model", "num_classes"),
             out_features=int(m.get("num_classes", 10)), bias=True)
    return prog
