"""Peak memory of every shipped ``cpu`` profile (issue: evaluation must bound its memory).

Each experiment runs in its own fresh process (``asymspec run SPEC --profile cpu`` into a
temporary runs directory, so nothing is reused); the peak resident set size of that run
(``ru_maxrss`` of a per-spec wrapper's children: the largest single process) and the wall
time are printed beside the memory budget the toolkit derives for this machine
(:func:`asymspec.run.memory.memory_budget`) and the machine's RAM, measured in the same run.

A full pass trains every cpu profile (tens of minutes to hours on 2 cores); pick specs with
``--specs``.  Wall times on a shared machine are upper bounds.

Usage: ``python benchmarks/bench_memory.py [--specs lmc_digits lmc_gnn ...] [--timeout 3600]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def cpu_profile_specs() -> list[str]:
    """Experiment specs (those with a ``kind``) that ship a ``cpu`` profile."""
    out = []
    for path in sorted(SPECS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "kind" in data and "cpu" in (data.get("profiles") or {}):
            out.append(path.stem)
    return out


# A fresh wrapper process per spec: its RUSAGE_CHILDREN peak is exactly that run's peak.
WRAPPER = """
import resource, subprocess, sys
res = subprocess.run([sys.executable, "-m", "asymspec", "run", sys.argv[1], "--profile", "cpu",
                      "--quiet", "--runs-dir", sys.argv[2]], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(res.returncode, peak)
"""


def run_one(stem: str, timeout: float) -> tuple[str, float, float]:
    """``(status, wall seconds, peak RSS GiB)`` of one cpu profile in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        try:
            res = subprocess.run([sys.executable, "-c", WRAPPER, str(SPECS / f"{stem}.yaml"),
                                  runs], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - t0, float("nan")
        wall = time.perf_counter() - t0
    code, peak_kib = (int(x) for x in res.stdout.split()[-2:])
    return ("ok" if code == 0 else f"exit {code}"), wall, peak_kib / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", nargs="*", default=None, help="spec stems (default: all)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args()
    from asymspec.run.memory import memory_budget

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine RAM {ram:.1f} GiB; toolkit memory budget for one batched job: "
          f"{memory_budget('cpu') / 2**30:.2f} GiB")
    print(f"{'spec':28s} {'status':>8s} {'wall':>10s} {'peak RSS':>10s}")
    for stem in args.specs or cpu_profile_specs():
        status, wall, peak = run_one(stem, args.timeout)
        print(f"{stem:28s} {status:>8s} {wall:9.1f}s {peak:8.2f}GiB", flush=True)


if __name__ == "__main__":
    main()
