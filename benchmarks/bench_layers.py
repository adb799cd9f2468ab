"""Emitted layers against dense ``nn.Linear`` / ``nn.Conv2d`` of the same shape, in one run.

Shapes, W-Asym masks and fixed values come from the shipped specs' IRs (MLP 784-512, ResNet20
x1 and x8 convs, GPT-2-small 768x3072).  For each shape, batch, device (CPU at 1 and 2 threads;
CUDA fp32 and bf16 autocast when present) and figure (forward+backward; + AdamW step) it prints
the dense time and ratio = dense time / variant time (1.0 = as fast as dense) for:

* ``W-Asym``      the emitted masked layer (eager fast path),
* ``W-Asym ref``  the same layer through the reference ``where`` formula (the pre-fast-path code),
* ``syre``        dense weight plus a frozen Gaussian offset,
* ``FiGLU``       the layer followed by FiGLU, against the layer followed by ReLU; ``flops`` is
  the arithmetic's own ratio (dense layer / layer + F product), the bound FiGLU can reach.

Figures: ``fwd+bwd``; ``+AdamW`` adds ``torch.optim.AdamW`` (weight decay 0.01) with torch's
default implementation for the device (on a CPU the per-tensor loop, whose ``sqrt`` is slow on
the exact zeros a masked weight's second moment holds at frozen positions, see the README);
``+AdamW fused`` the same step with ``fused=True`` (one kernel, no such slow path).

Timing: every variant runs interleaved with dense, N rounds; ``--stat median`` (default) keeps
the median of each variant's N calls, ``min`` the minimum (other jobs on the machine only ever
make a call slower).  The load average is printed before and after: on a shared machine every
time is an upper bound.  Never asserts.

    python benchmarks/bench_layers.py                 # CPU 1 and 2 threads, batch 64 and 256
    python benchmarks/bench_layers.py --heavy         # adds the ResNet20 x8 stage-1 conv on CPU
    python benchmarks/bench_layers.py --only mlp --batches 64 --threads 1
    python benchmarks/bench_layers.py --threads --json layers.json   # CUDA only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asymspec  # noqa: E402
from asymspec.nn.masked import AsymConv2d, AsymLinear, fast_path  # noqa: E402
from asymspec.seeding import generator  # noqa: E402


@dataclass
class Shape:
    label: str
    spec: str
    node: str
    heavy: bool = False  # CPU only with --heavy (tens of GFLOP per call)


SHAPES = [
    Shape("MLP 784-512", "mlp_mnist_wasym", "fc1"),
    Shape("MLP 512-512", "mlp_mnist_wasym", "fc2"),
    Shape("ResNet20 16ch 32x32", "resnet20_wasym", "layer1.0.conv1"),
    Shape("ResNet20 64ch 8x8", "resnet20_wasym", "layer3.0.conv2"),
    Shape("ResNet20x8 512ch 8x8", "resnet20_8x_wasym", "layer3.0.conv2"),
    Shape("ResNet20x8 128ch 32x32", "resnet20_8x_wasym", "layer1.0.conv1", heavy=True),
    Shape("GPT-2 768-3072", "gpt2_small_wasym", "blocks.0.fc1"),
    Shape("GPT-2 3072-768", "gpt2_small_wasym", "blocks.0.fc2"),
]


# ------------------------------------------------------------------------------ timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock_for(kind: str, threads: int | None, device: torch.device) -> Callable[[], float]:
    """``wall``: perf_counter.  ``cpu``: CPU seconds of this thread, which other processes
    cannot inflate by preempting it — exact for single-threaded CPU runs only, so any other
    setting falls back to wall time."""
    if kind == "cpu" and threads == 1 and device.type == "cpu":
        return time.thread_time
    return time.perf_counter


def interleaved_min(fns: dict[str, Callable[[], None]], device: torch.device,
                    budget_s: float = 6.0, min_reps: int = 3, max_reps: int = 200,
                    warmup: int = 2, clock: Callable[[], float] = time.perf_counter,
                    stat: str = "min") -> dict[str, float]:
    """Seconds per call of each function (minimum or median of the rounds), run round-robin
    so that every variant sees the same machine load; the number of rounds fits ``budget_s``
    (of wall time)."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    sync(device)
    t0 = time.perf_counter()
    for f in fns.values():
        f()
    sync(device)
    per_round = time.perf_counter() - t0
    reps = max(min_reps, min(max_reps, int(budget_s / max(per_round, 1e-6))))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            sync(device)
            t = clock()
            f()
            sync(device)
            times[k].append(clock() - t)
    if stat == "median":
        return {k: statistics.median(v) for k, v in times.items()}
    return {k: min(v) for k, v in times.items()}


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # not Linux
        return "unknown"


def make_optimizer(module: nn.Module, figure: str) -> torch.optim.Optimizer | None:
    if figure == "fwd+bwd" or not list(module.parameters()):
        return None
    fused = figure.endswith("fused")
    return torch.optim.AdamW(module.parameters(), lr=1e-4, weight_decay=0.01,
                             **({"fused": True} if fused else {}))


FIGURES = ("fwd+bwd", "+AdamW", "+AdamW fused")


def train_call(module: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer | None,
               autocast: torch.dtype | None) -> Callable[[], None]:
    """One forward + backward (+ optimizer step) of ``module`` on ``x``."""
    def call() -> None:
        module.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            out = module(x)
        out.float().square().mean().backward()
        if opt is not None:
            opt.step()
    return call


# ------------------------------------------------------------------------------ layers
class Reference(nn.Module):
    """A masked layer evaluated by the reference ``where`` formula (the code before)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fast_path(False):
            return self.layer(x)


class WithFiGLU(nn.Module):
    """``layer`` followed by FiGLU, x * sigmoid(F x), with F frozen (as the pass emits it)."""

    def __init__(self, layer: nn.Module, d: int, conv: bool, gen: torch.Generator) -> None:
        super().__init__()
        self.layer = layer
        shape = (d, d, 1, 1) if conv else (d, d)
        f = torch.randn(shape, generator=gen) / d ** 0.5
        frozen = torch.zeros(shape, dtype=torch.bool)
        self.gate = (AsymConv2d(d, d, 1, 1, 0, None, frozen, f, None, gen) if conv
                     else AsymLinear(d, d, None, frozen, f, None, gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer(x)
        return h * torch.sigmoid(self.gate(h))


class WithReLU(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.layer(x))


def build_variants(shape: Shape, ir) -> tuple[dict[str, nn.Module], tuple, float]:
    """Dense and emitted variants of one IR layer; the input shape; FiGLU's FLOP ratio."""
    node = ir.node(shape.node)
    src, edge = ir.dense_edge(shape.node)
    gen = generator("bench_layers", shape.label)
    a = node["attrs"]
    conv = node["op"] == "conv2d"
    offset = torch.randn(edge["weight_shape"], generator=gen) * 0.1
    if conv:
        cin, cout, k = a["in_channels"], node["size"], a["kernel_size"]
        args = (cin, cout, k, a["stride"], a["padding"])
        dense = nn.Conv2d(*args)
        wasym = AsymConv2d(*args, "trainable", edge["mask"], edge["fixed"], None, gen)
        syre = AsymConv2d(*args, "trainable", None, None, offset, gen)
        wasym2 = AsymConv2d(*args, "trainable", edge["mask"], edge["fixed"], None, gen)
        in_shape = tuple(ir.node(src)["shape"])
        macs = cin * k * k
    else:
        cin, cout = a["in_features"], node["size"]
        dense = nn.Linear(cin, cout)
        wasym = AsymLinear(cin, cout, "trainable", edge["mask"], edge["fixed"], None, gen)
        syre = AsymLinear(cin, cout, "trainable", None, None, offset, gen)
        wasym2 = AsymLinear(cin, cout, "trainable", edge["mask"], edge["fixed"], None, gen)
        in_shape = (cin,)
        macs = cin
    variants = {
        "dense": dense,
        "W-Asym": wasym,
        "W-Asym ref": Reference(wasym2),
        "syre": syre,
        "+ReLU": WithReLU(nn.Conv2d(*args) if conv else nn.Linear(cin, cout)),
        "+FiGLU": WithFiGLU(nn.Conv2d(*args) if conv else nn.Linear(cin, cout), cout, conv, gen),
    }
    # per output position: dense layer 3 products (fwd, grad x, grad W) of macs x cout;
    # FiGLU's frozen F adds 2 (fwd, grad x) of cout x cout
    flop_ratio = 3 * macs * cout / (3 * macs * cout + 2 * cout * cout)
    return variants, in_shape, flop_ratio


# ------------------------------------------------------------------------------ driver
def settings(args) -> list[tuple[str, torch.device, int | None, torch.dtype | None]]:
    out = []
    for t in args.threads:
        out.append((f"CPU {t}T", torch.device("cpu"), t, None))
    if torch.cuda.is_available() and not args.cpu_only:
        out.append(("CUDA fp32", torch.device("cuda"), None, None))
        out.append(("CUDA bf16", torch.device("cuda"), None, torch.bfloat16))
    return out


COLUMNS = ["W-Asym", "W-Asym ref", "syre"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2],
                    help="CPU thread counts; none (a bare --threads) skips the CPU")
    ap.add_argument("--only", nargs="*", default=None, help="substrings of shape labels")
    ap.add_argument("--heavy", action="store_true", help="all x8 shapes on CPU too")
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--budget", type=float, default=6.0, help="seconds per measurement")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: thread CPU time for 1-thread CPU runs (robust to other jobs)")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    ap.add_argument("--figures", nargs="+", default=list(FIGURES), choices=FIGURES)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    irs: dict[str, object] = {}
    rows = []
    print(f"torch {torch.__version__}; ratio = dense time / variant time (>1 faster); "
          f"clock {args.clock}; {args.stat} of interleaved rounds; load average "
          f"{load_average()}")
    header = (f"{'setting':10s} {'layer':24s} {'batch':>5s} {'figure':12s} {'dense ms':>9s} "
              + " ".join(f"{c:>10s}" for c in COLUMNS) + f" {'FiGLU':>7s} {'flops':>6s}")
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        if args.only and not any(s.lower() in shape.label.lower() for s in args.only):
            continue
        if shape.spec not in irs:
            irs[shape.spec] = asymspec.compile_ir(REPO / "specs" / f"{shape.spec}.yaml")
        for label, device, threads, autocast in settings(args):
            if shape.heavy and device.type == "cpu" and not args.heavy:
                continue
            if threads is not None:
                torch.set_num_threads(threads)
            variants, in_shape, flop_ratio = build_variants(shape, irs[shape.spec])
            for m in variants.values():
                m.to(device)
            for batch in args.batches:
                x = torch.randn((batch,) + in_shape, generator=generator("x", batch))
                x = x.to(device)
                for figure in args.figures:
                    fns = {k: train_call(m, x, make_optimizer(m, figure), autocast)
                           for k, m in variants.items()}
                    best = interleaved_min(fns, device, args.budget,
                                           clock=clock_for(args.clock, threads, device),
                                           stat=args.stat)
                    ratios = {k: best["dense"] / best[k] for k in COLUMNS}
                    figlu = best["+ReLU"] / best["+FiGLU"]
                    rows.append((label, shape.label, batch, figure, best["dense"], ratios,
                                 figlu, flop_ratio))
                    print(f"{label:10s} {shape.label:24s} {batch:5d} {figure:12s} "
                          f"{best['dense'] * 1e3:9.3f} "
                          + " ".join(f"{ratios[c]:10.2f}" for c in COLUMNS)
                          + f" {figlu:7.2f} {flop_ratio:6.2f}", flush=True)
    print(f"load average after: {load_average()}")
    if args.json:
        args.json.write_text(json.dumps([dict(
            setting=r[0], layer=r[1], batch=r[2], figure=r[3], dense_ms=r[4] * 1e3, **r[5],
            figlu=r[6], figlu_flop_ratio=r[7]) for r in rows], indent=1))
    if rows:
        worst = min(r[5]["W-Asym"] for r in rows)
        print(f"\nworst W-Asym / dense: {worst:.2f}; worst syre / dense: "
              f"{min(r[5]['syre'] for r in rows):.2f} ({args.stat} of N; on a shared machine "
              "every time is an upper bound)")


if __name__ == "__main__":
    main()
