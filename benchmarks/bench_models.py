"""Full training steps of emitted models: asymmetric variants against the dense spec, one run.

A step is zero_grad + forward + cross-entropy + backward + AdamW (weight decay 0.01).  For each
model family and setting it prints the dense step time and ratio = dense / variant step time
(1.0 = as fast as dense) for W-Asym (fast eager path), W-Asym through the reference ``where``
formula (the emitter before the fast path), sigma-Asym (FiGLU) next to its FLOP ratio, and syre.
On CUDA it adds fp32 and bf16-autocast rows and the ``torch.compile`` speed-up (eager step /
compiled step, via :func:`asymspec.nn.maybe_compile`) with the one-off compile time.

Variants run interleaved; the median (``--stat median``, default) or minimum over N steps is
kept.  Never asserts.  ``--json`` writes the rows; ``--compile-only`` limits the compile
columns to some rows, ``--compile-backend`` / ``--compile-cpu`` exercise them elsewhere (smoke
runs of ``benchmarks/gpu_session.py``).

    python benchmarks/bench_models.py                  # CPU, 1 and 2 threads
    python benchmarks/bench_models.py --heavy          # + ResNet20 x8 and GPT-2 8x512 on CPU
    python benchmarks/bench_models.py --only mlp --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asymspec  # noqa: E402
from asymspec.nn import maybe_compile  # noqa: E402
from asymspec.nn.masked import fast_path  # noqa: E402
from asymspec.seeding import generator  # noqa: E402
from benchmarks.bench_layers import clock_for, interleaved_min, sync  # noqa: E402

SYRE = ["asymmetry={seed: 0, syre: {kappa: 0.1}}"]


@dataclass
class Row:
    label: str
    batch: int
    dense: str
    wasym: str | None
    sigma: str | None
    sets: list[str] = field(default_factory=list)
    cpu: bool = True  # part of the default CPU run (else only with --heavy or on CUDA)
    cuda_batch: int | None = None
    cuda_sets: list[str] = field(default_factory=list)


ROWS = [
    Row("MLP 784-512x3-10", 64, "mlp_mnist", "mlp_mnist_wasym", "mlp_mnist_sigma"),
    Row("MLP 784-512x3-10", 1024, "mlp_mnist", "mlp_mnist_wasym", "mlp_mnist_sigma", cpu=False),
    Row("ResNet20", 128, "resnet20", "resnet20_wasym", "resnet20_sigma"),
    Row("ResNet20 x8", 128, "resnet20_8x", "resnet20_8x_wasym", "resnet20_8x_sigma", cpu=False),
    Row("GPT-2-small-sized 8x8 tok", 8, "gpt2_small", "gpt2_small_wasym", None),
    Row("GPT-2-small-sized 8x512 tok", 8, "gpt2_small", "gpt2_small_wasym", None,
        sets=["model.seq_len=512"], cpu=False),
]


def train_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds of a training step through the linear / conv layers: three products
    (forward, input gradient, weight gradient) for trainable weights, two for frozen ones
    (FiGLU's F has no weight gradient)."""
    total = [0.0]

    def hook(mod, inp, out):
        w = getattr(mod, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() not in (2, 4):
            return
        positions = out.numel() / out.shape[-1] if w.dim() == 2 else \
            out.shape[0] * out.shape[2] * out.shape[3]
        total[0] += positions * w.numel() * (3 if isinstance(w, torch.nn.Parameter) else 2)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total[0]


FUSED_ADAMW = [False]  # --fused-adamw: one fused kernel (on a CPU the default per-tensor
#                        AdamW's sqrt is slow on the exact zeros masked weights' moments hold)


def step_fn(model, x, y, autocast, reference: bool = False):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01,
                            **({"fused": True} if FUSED_ADAMW[0] else {}))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with fast_path(not reference), torch.autocast(x.device.type, dtype=autocast,
                                                      enabled=autocast is not None):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
    return step


def data(ir, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    (x,) = asymspec.example_inputs(ir, batch=batch, seed=1)
    classes = ir.node(ir.outputs[0])["size"]
    y = torch.randint(0, classes, (batch,), generator=generator("bench_models", "y"))
    return x.to(device), y.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2],
                    help="CPU thread counts; none (a bare --threads) skips the CPU")
    ap.add_argument("--only", nargs="*", default=None, help="substrings of row labels")
    ap.add_argument("--heavy", action="store_true", help="all rows on CPU")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per measurement")
    ap.add_argument("--no-compile", action="store_true", help="skip the CUDA compile columns")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: thread CPU time for 1-thread CPU runs (robust to other jobs)")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    ap.add_argument("--compile-only", nargs="*", default=None,
                    help="substrings of row labels that get the compile columns")
    ap.add_argument("--compile-rows-only", action="store_true",
                    help="only the compile columns, only for the rows --compile-only names")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--compile-cpu", action="store_true", help="compile columns on CPU too")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) steps")
    args = ap.parse_args()
    FUSED_ADAMW[0] = args.fused_adamw
    records = []

    settings = [(f"CPU {t}T", torch.device("cpu"), t, None) for t in args.threads]
    if torch.cuda.is_available():
        settings += [("CUDA fp32", torch.device("cuda"), None, None),
                     ("CUDA bf16", torch.device("cuda"), None, torch.bfloat16)]
    print(f"torch {torch.__version__}; ratio = dense step / variant step (>1: faster); "
          f"clock {args.clock}; {args.stat} of interleaved steps; AdamW "
          f"{'fused' if args.fused_adamw else 'default implementation'}")
    head = ("| where | model, batch | dense ms | W-Asym / dense | W-Asym ref / dense | "
            "σ-Asym / dense (FLOP ratio) | syre / dense | compile speed-up dense / W-Asym "
            "(compile s) |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for row in ROWS:
        if args.only and not any(s.lower() in row.label.lower() for s in args.only):
            continue
        wanted = args.compile_only is None or any(
            c.lower() in f"{row.label} {row.batch}".lower() for c in args.compile_only)
        if args.compile_rows_only and not wanted:
            continue
        for where, device, threads, autocast in settings:
            if device.type == "cpu" and not row.cpu and not args.heavy:
                continue
            if threads is not None:
                torch.set_num_threads(threads)
            compile_here = (device.type == "cuda" or args.compile_cpu) and not args.no_compile
            if args.compile_rows_only:  # compile columns alone (on CPU only with --compile-cpu)
                if not compile_here:
                    continue
                comp, comp_rec = compile_columns(row, device, autocast, args.budget,
                                                 args.compile_backend, args.stat)
                print(f"| {where} | {row.label}, batch {row.batch} | compile speed-up "
                      f"dense / W-Asym (compile s): {comp} |", flush=True)
                records.append({"where": where, "model": row.label, "batch": row.batch,
                                "compile": comp_rec})
                if args.json:
                    args.json.write_text(json.dumps(records, indent=1))
                continue
            specs = {"dense": row.dense, "wasym": row.wasym, "sigma": row.sigma,
                     "syre": row.dense}
            models, ir = {}, None
            for k, name in specs.items():
                if name is None:
                    continue
                sets = row.sets + (SYRE if k == "syre" else [])
                models[k] = asymspec.build(REPO / "specs" / f"{name}.yaml", sets,
                                           init_seed=0).to(device)
                ir = models[k].ir if k == "dense" else ir
            x, y = data(models["dense"].ir, row.batch, device)
            fns = {k: step_fn(m, x, y, autocast) for k, m in models.items()}
            if "wasym" in models:
                fns["wasym_ref"] = step_fn(models["wasym"], x, y, autocast, reference=True)
            best = interleaved_min(fns, device, args.budget,
                                   clock=clock_for(args.clock, threads, device),
                                   stat=args.stat)
            r = {k: best["dense"] / best[k] for k in best}
            flop_sigma = ""
            if "sigma" in models:
                fd = train_flops(models["dense"], x)
                fs = train_flops(models["sigma"], x)
                flop_sigma = f"{r['sigma']:.2f} ({fd / fs:.2f})"
            comp, comp_rec = "—", None
            if compile_here and wanted:
                comp, comp_rec = compile_columns(row, device, autocast, args.budget,
                                                 args.compile_backend, args.stat)
            cells = [where, f"{row.label}, batch {row.batch}", f"{best['dense'] * 1e3:.2f}",
                     f"{r['wasym']:.2f}" if "wasym" in r else "—",
                     f"{r['wasym_ref']:.2f}" if "wasym_ref" in r else "—",
                     flop_sigma or "—", f"{r['syre']:.2f}", comp]
            print("| " + " | ".join(cells) + " |", flush=True)
            records.append({"where": where, "model": row.label, "batch": row.batch,
                            "dense_ms": best["dense"] * 1e3,
                            **{f"{k}_ratio": v for k, v in r.items() if k != "dense"},
                            "sigma_flop_ratio": fd / fs if flop_sigma else None,
                            "compile": comp_rec})
            if args.json:  # rewritten after every row: a killed run keeps what it measured
                args.json.write_text(json.dumps(records, indent=1))


def compile_columns(row: Row, device, autocast, budget: float, backend: str = "inductor",
                    stat: str = "median") -> tuple[str, dict]:
    """Eager / compiled step time for dense and W-Asym, and the first-call compile time."""
    out = {}
    for key, name in (("dense", row.dense), ("wasym", row.wasym)):
        if name is None:
            continue
        eager = asymspec.build(REPO / "specs" / f"{name}.yaml", row.sets).to(device)
        comp = asymspec.build(REPO / "specs" / f"{name}.yaml", row.sets).to(device)
        maybe_compile(comp, device, "on", backend=backend)
        x, y = data(eager.ir, row.batch, device)
        fe, fc = step_fn(eager, x, y, autocast), step_fn(comp, x, y, autocast)
        t = time.perf_counter()
        fc()
        sync(device)
        first = time.perf_counter() - t
        best = interleaved_min({"eager": fe, "compiled": fc}, device, budget, stat=stat)
        out[key] = {"speedup": best["eager"] / best["compiled"], "compile_s": first,
                    "compiled_ms": best["compiled"] * 1e3, "backend": backend}
    text = " / ".join(f"{v['speedup']:.2f}" for v in out.values()) + " (" + "/".join(
        f"{v['compile_s']:.0f}" for v in out.values()) + ")"
    return text, out


if __name__ == "__main__":
    main()
