"""Benchmark command-line startup: ``asymspec --help`` and ``asymspec show SPEC``.

Each command runs in a fresh interpreter (as a user types it), several times; the best wall
time is reported beside two baselines measured in the same run: a bare ``python -c pass``
and ``python -c "import torch"`` (the floor for any command that builds a model).  The import
time of ``asymspec.cli`` (``-X importtime``) and the heaviest modules it pulls in are printed
too, so a regression (an eager import of torch, igraph or torch-geometric) shows up by name.

Wall times on a shared machine are upper bounds: other processes compete for the CPU.

Usage: ``python benchmarks/bench_startup.py [--repeat 5] [--spec specs/mlp_mnist.yaml]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def best_wall(args: list[str], repeat: int) -> float:
    """Best of ``repeat`` wall times of ``args`` (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            sys.exit(f"{' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return min(times)


def import_profile(module: str, top: int = 8) -> tuple[float, list[tuple[float, str]]]:
    """Cumulative import time of ``module`` and its ``top`` heaviest top-level imports (s)."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True)
    rows = []
    total = 0.0
    for line in res.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if not cumulative.isdigit():
            continue
        depth = (len(name) - len(name.lstrip())) // 2
        if name.strip() == module:
            total = int(cumulative) / 1e6
        if depth <= 1:
            rows.append((int(cumulative) / 1e6, name.strip()))
    return total, sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--spec", default="specs/mlp_mnist.yaml")
    args = parser.parse_args()
    py = sys.executable
    cases = [
        ("python -c pass (baseline)", [py, "-c", "pass"]),
        ("python -c 'import torch' (baseline)", [py, "-c", "import torch"]),
        ("asymspec --help", [py, "-m", "asymspec", "--help"]),
        (f"asymspec show {args.spec}", [py, "-m", "asymspec", "show", args.spec]),
    ]
    print(f"best of {args.repeat} runs, fresh interpreter each (wall s; upper bounds on a "
          "shared machine)")
    walls = {}
    for label, cmd in cases:
        walls[label] = best_wall(cmd, args.repeat)
    base, torch_floor = walls[cases[0][0]], walls[cases[1][0]]
    for label, wall in walls.items():
        print(f"  {label:<48} {wall:6.3f} s   x{wall / base:5.1f} bare python   "
              f"x{wall / torch_floor:4.2f} import torch")
    total, rows = import_profile("asymspec.cli")
    print(f"\nimport asymspec.cli: {total:.3f} s cumulative; heaviest imports:")
    for seconds, name in rows:
        print(f"  {seconds:6.3f} s  {name}")
    heavy = [n for _, n in rows if n.split(".")[0] in ("torch", "igraph", "networkx",
                                                          "torch_geometric", "numpy")]
    print("heavy libraries imported by --help: " + (", ".join(heavy) if heavy else "none"))


if __name__ == "__main__":
    main()
