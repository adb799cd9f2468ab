"""Benchmark ``asymspec audit`` on torchvision models: trace + IR + verification + numeric check.

Target (issue 4): resnet50 at 1x3x224x224 in <= 10 s on this machine, end to end (model
construction excluded).  Prints one line per model with the stages' seconds; never asserts.

    python benchmarks/bench_audit.py                       # resnet50 (224), resnet18, vgg11
    python benchmarks/bench_audit.py resnet50:224 vit_b_16:224
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", category=FutureWarning)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asymspec.audit import audit  # noqa: E402

torch.set_num_threads(1)

DEFAULT = ["resnet50:224", "resnet18:224", "vgg11:32", "mobilenet_v3_large:224",
           "vit_b_16:224"]


def bench(name: str, size: int, repeat: int = 1) -> dict:
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = audit(model, x)
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, report)
    wall, report = best
    t = report.timings
    return {"model": name, "input": size, "wall_s": wall, "lower_s": t["lower_s"],
            "check_s": t["check_s"], "numeric_s": t["numeric_s"],
            "verdict": report.verdict, "log10_order": report.log10_order,
            "generators": len(report.generators), "unsupported": len(report.unsupported)}


def main(argv: list[str]) -> None:
    items = argv or DEFAULT
    print(f"{'model':<20} {'input':>5} {'total':>7} {'lower':>6} {'check':>6} {'numeric':>7}  "
          f"verdict     log10|Aut|  gens  unsupported")
    for item in items:
        name, _, size = item.partition(":")
        r = bench(name, int(size or 224), repeat=2 if name == "resnet50" else 1)
        note = "  (target <= 10 s)" if name == "resnet50" else ""
        print(f"{r['model']:<20} {r['input']:>5} {r['wall_s']:>6.2f}s {r['lower_s']:>5.2f}s "
              f"{r['check_s']:>5.2f}s {r['numeric_s']:>6.2f}s  {r['verdict']:<10} "
              f"{r['log10_order']:>11.2f} {r['generators']:>5} {r['unsupported']:>5}{note}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
