"""Benchmark command-line startup: ``asymspec --help`` and ``asymspec show SPEC``.

Each command runs in a fresh interpreter (as a user types it), several times; the best wall
time and the best CPU time (user + system of the child, as ``/usr/bin/time`` reports it) are
printed beside two baselines measured in the same run: a bare ``python -c pass`` and
``python -c "import torch"`` (the floor for any command that builds a model; ``show`` counts
parameters without torch, so it should sit well below it).  The import profile
(``-X importtime``) of ``asymspec --help`` and of ``asymspec show`` names the heaviest modules
each pulls in, so a regression (an eager import of torch, igraph or torch-geometric) shows up
by name.

Wall times on a shared machine are upper bounds: other processes compete for the CPU.  CPU
time is much less sensitive to that load.

Usage: ``python benchmarks/bench_startup.py [--repeat 5] [--spec specs/resnet20_wasym.yaml]``
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_times(args: list[str], repeat: int) -> tuple[float, float]:
    """Best of ``repeat`` wall times and best CPU times (user + sys) of ``args``, in s (the
    runs least disturbed by other load)."""
    walls, cpus = [], []
    for _ in range(repeat):
        cpu0 = _child_cpu()
        t0 = time.perf_counter()
        res = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        cpus.append(_child_cpu() - cpu0)
        if res.returncode != 0:
            sys.exit(f"{' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
        if res.stderr.strip():
            print(f"warning: {' '.join(args[2:])} wrote to stderr:\n{res.stderr[-500:]}")
    return min(walls), min(cpus)


def import_profile(args: list[str], top: int = 8
                   ) -> tuple[float, list[tuple[float, str]], set[str]]:
    """Total import time of running ``python -X importtime ARGS``, its ``top`` heaviest
    imports at the first two levels of nesting (s), and every top-level package imported."""
    res = subprocess.run([sys.executable, "-X", "importtime", *args],
                         cwd=ROOT, env=ENV, capture_output=True, text=True)
    rows, shallow, packages = [], [], set()
    for line in res.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if not cumulative.strip().isdigit():
            continue
        name = name[1:]  # one separating space, then two per level of nesting
        depth = (len(name) - len(name.lstrip())) // 2
        entry = (int(cumulative) / 1e6, name.strip())
        packages.add(entry[1].split(".")[0])
        if depth == 0:
            rows.append(entry)
        if depth <= 1:
            shallow.append(entry)
    return sum(t for t, _ in rows), sorted(shallow, reverse=True)[:top], packages


HEAVY = ("torch", "igraph", "torch_geometric", "scipy", "ray")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--spec", default="specs/resnet20_wasym.yaml")
    args = parser.parse_args()
    py = sys.executable
    cases = [
        ("python -c pass (baseline)", [py, "-c", "pass"]),
        ("python -c 'import torch' (baseline)", [py, "-c", "import torch"]),
        ("asymspec --help", [py, "-m", "asymspec", "--help"]),
        (f"asymspec show {args.spec}", [py, "-m", "asymspec", "show", args.spec]),
    ]
    print(f"best of {args.repeat} runs, fresh interpreter each (wall s are upper bounds on a "
          "shared machine; cpu = user + sys of the child)")
    times = {label: best_times(cmd, args.repeat) for label, cmd in cases}
    (base, _), (floor, floor_cpu) = times[cases[0][0]], times[cases[1][0]]
    for label, (wall, cpu) in times.items():
        print(f"  {label:<48} wall {wall:6.3f} s  cpu {cpu:6.3f} s   "
              f"x{wall / base:5.1f} bare python   x{wall / floor:4.2f} import torch "
              f"(cpu x{cpu / floor_cpu:4.2f})")
    for label, cmd in cases[2:]:
        total, rows, packages = import_profile(cmd[1:])
        print(f"\n{label}: {total:.3f} s of imports; heaviest (cumulative):")
        for seconds, name in rows:
            print(f"  {seconds:6.3f} s  {name}")
        heavy = sorted(packages.intersection(HEAVY))
        print("  heavy libraries imported: " + (", ".join(heavy) if heavy else "none"))


if __name__ == "__main__":
    main()
