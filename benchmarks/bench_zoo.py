"""Benchmark zoo training: member-steps per second, batched (``torch.func`` vmap + stacked
AdamW) against the per-member loop (``torch.optim.AdamW`` + ``LambdaLR``) on the same work.

Both paths train the same members (same seeds, hyperparameters, data order, augmentation) of a
ResNet8 variant on CIFAR-shaped synthetic data (3x32x32; no data set needed) for the same number
of steps, in this process, with one torch thread on CPU.  Printed per device and batch size:
member-steps/s of each path and the ratio.  Then the projected time of the paper-scale zoo
(10,000 nets x 2 variants, Table 13 epochs drawn with the zoo's own sampler, 50,000 CIFAR-10
images at batch 512 with the last partial batch dropped) from the faster measured rate at batch
512; when no GPU is present the projection comes from the CPU rate and says so.

Wall times on a shared machine are upper bounds.

Usage: ``python benchmarks/bench_zoo.py [--members 4] [--steps 4] [--batch 128 512]
[--spec specs/resnet8_zoo.yaml] [--device cpu cuda]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import torch  # noqa: E402

import asymspec  # noqa: E402
from asymspec.zoo import TrainSettings, ZooData, plan_members, resolve  # noqa: E402
from asymspec.zoo.train import train_members  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER_MEMBERS, PAPER_VARIANTS, CIFAR_TRAIN, PAPER_BATCH = 10_000, 2, 50_000, 512


def synthetic(n: int) -> ZooData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return ZooData.from_tensors(x, y, x[:256], y[:256], num_classes=10)


def measure(ir, members: int, steps: int, batch: int, path: str, device: str,
            precision: str) -> float:
    """Member-steps per second of ``path``: ``members`` members, 2 epochs of ``steps // 2``."""
    spe = max(1, steps // 2)
    dists = resolve({"epochs": 2})
    plans = plan_members(0, range(members), dists)
    settings = TrainSettings(batch_size=batch, peak_epoch=1, path=path, precision=precision,
                             chunk_members=members)
    data = synthetic(spe * batch)
    if device == "cuda":  # warm-up (kernels, cuDNN autotuning), not timed
        train_members(ir, plans[:2], data, settings, device)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = train_members(ir, plans, data, settings, device)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    assert all(r["diverged"] is None for r in res.records)
    return members * 2 * spe / wall


def paper_member_steps() -> int:
    """Member-steps of the paper-scale zoo with Table 13 epochs (the zoo's own draws)."""
    from asymspec.zoo.hparams import sample_member

    d = resolve(None)
    epochs = sum(sample_member(d, 0, i)["epochs"] for i in range(PAPER_MEMBERS))
    return PAPER_VARIANTS * epochs * (CIFAR_TRAIN // PAPER_BATCH)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=None,
                    help="members trained together (default 4 on CPU, 64 on CUDA)")
    ap.add_argument("--steps", type=int, default=4, help="steps per member (two epochs)")
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "resnet8_zoo.yaml"))
    ap.add_argument("--device", nargs="+", default=None)
    ap.add_argument("--precision", default=None, help="fp32 or bf16 (default: bf16 on CUDA)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    record: dict = {"spec": Path(args.spec).name, "torch": torch.__version__, "rows": []}
    torch.set_num_threads(1)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    ir = asymspec.compile_ir(args.spec)
    print(f"spec {Path(args.spec).name}; torch {torch.__version__}; one CPU thread; "
          "wall times on a shared machine are upper bounds")
    print(f"{'device':6} {'batch':>5} {'members':>7} {'batched/s':>10} {'loop/s':>8} "
          f"{'ratio':>6}")
    at512: dict[str, float] = {}
    for device in devices:
        members = args.members or (64 if device == "cuda" else 4)
        precision = args.precision or ("bf16" if device == "cuda" else "fp32")
        for batch in args.batch:
            rates = {p: measure(ir, members, args.steps, batch, p, device, precision)
                     for p in ("batched", "loop")}
            ratio = rates["batched"] / rates["loop"]
            print(f"{device:6} {batch:5d} {members:7d} {rates['batched']:10.2f} "
                  f"{rates['loop']:8.2f} {ratio:6.2f}x")
            if batch == PAPER_BATCH:
                at512[device] = max(rates.values())
            record["rows"].append({"device": device, "batch": batch, "members": members,
                                   "precision": precision, "batched_per_s": rates["batched"],
                                   "loop_per_s": rates["loop"], "ratio": ratio})
            if args.json:  # rewritten after every row: a killed run keeps what it measured
                args.json.write_text(json.dumps(record, indent=1))
    total = paper_member_steps()
    print(f"\npaper-scale zoo: {PAPER_VARIANTS} variants x {PAPER_MEMBERS} nets, Table 13 "
          f"epochs, {CIFAR_TRAIN // PAPER_BATCH} steps/epoch at batch {PAPER_BATCH}: "
          f"{total / 1e6:.1f} M member-steps")
    record["paper_member_steps"] = total
    if "cuda" in at512:
        hours = total / at512["cuda"] / 3600
        record["projected_gpu_hours"] = hours
        record["gpu"] = torch.cuda.get_device_name()
        print(f"projected: {hours:.1f} GPU-hours on {torch.cuda.get_device_name()} "
              f"({at512['cuda']:.1f} member-steps/s, faster path); paper: ~400 on 2080 Ti")
    elif "cpu" in at512:
        hours = total / at512["cpu"] / 3600
        record["projected_cpu_thread_hours"] = hours
        print(f"projected FROM CPU (no GPU here): {hours:,.0f} hours on one CPU thread "
              f"({at512['cpu']:.2f} member-steps/s); this says nothing about GPU-hours — run "
              "this benchmark on a GPU for the GPU projection (paper: ~400 GPU-hours)")

    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
