"""Benchmark `asymspec check` against general-purpose tools on the same graphs, in one run.

For each spec: our time (IR -> unit graph -> refinement / reduction / bliss on the reduced
graph), bliss (python-igraph) on the *full* unit graph with edge colours by subdivision, and
networkx VF2 with a time cap.  Prints seconds and ratios (baseline / ours); never asserts.

    python benchmarks/bench_check.py            # default set
    python benchmarks/bench_check.py --big      # adds the GPT-2-small-sized specs
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import networkx as nx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asymspec  # noqa: E402
from asymspec.check import check_ir  # noqa: E402
from asymspec.ir.units import expand  # noqa: E402
from benchmarks.bench_verify_core import explicit_bliss_graph  # noqa: E402

torch.set_num_threads(1)

DEFAULT = [
    ("mlp_mnist", []),
    ("resnet20", ["model.depth=110", "model.width=2", "model.shortcut=A"]),
    ("mlp_mnist_wasym", []),
    ("resnet20_wasym", []),
    ("resnet20_8x_wasym", []),
    ("gnn_wasym", []),
    ("transformer_small_wasym", []),
]
BIG = [("gpt2_small_wasym", []), ("gpt2_small", [])]


def bench_bliss_full(ug) -> float:
    """bliss on the full unit graph (block edges explicit; other edges subdivided)."""
    g, colours = explicit_bliss_graph(ug)
    t = time.perf_counter()
    g.count_automorphisms(sh="fl", color=colours)
    return time.perf_counter() - t


def _vf2_worker(edges, colours, out) -> None:
    g = nx.DiGraph()
    g.add_nodes_from((i, {"c": c}) for i, c in enumerate(colours))
    g.add_edges_from(edges)
    matcher = nx.algorithms.isomorphism.DiGraphMatcher(
        g, g, node_match=lambda a, b: a["c"] == b["c"])
    for _ in matcher.isomorphisms_iter():
        out.value += 1


def bench_vf2(ug, cap: float) -> str:
    """networkx VF2 enumerating automorphisms, in a child process killed after ``cap`` s."""
    g, colours = explicit_bliss_graph(ug)
    ctx = mp.get_context("fork")
    count = ctx.Value("q", 0)
    proc = ctx.Process(target=_vf2_worker, args=(g.get_edgelist(), colours, count))
    t = time.perf_counter()
    proc.start()
    proc.join(cap)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return f">{cap:.0f}s ({count.value} maps enumerated, no order)"
    return f"{time.perf_counter() - t:.2f}s ({count.value} maps)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--vf2-cap", type=float, default=10.0)
    ap.add_argument("--full-limit", type=int, default=2_000_000,
                    help="skip full-graph baselines above this many edges")
    args = ap.parse_args()
    sys.set_int_max_str_digits(0)
    rows = DEFAULT + (BIG if args.big else [])
    print(f"{'spec':<28} {'verdict':<11} {'log10|Aut|':>11} {'search(s)':>9} {'ours(s)':>8} "
          f"{'bliss-full(s)':>13} {'ratio':>7}  vf2")
    print("(ours = expand + search + report; ratio = bliss-full / ours)")
    for name, overrides in rows:
        ir = asymspec.compile_ir(REPO / "specs" / f"{name}.yaml", overrides)
        t = time.perf_counter()
        report = check_ir(ir)
        ours = time.perf_counter() - t
        ug = expand(ir)
        label = name + ("*" if overrides else "")
        if ug.num_edges <= args.full_limit:
            full = bench_bliss_full(ug)
            vf2 = bench_vf2(ug, args.vf2_cap)
            ratio = f"{full / ours:7.1f}x"
            full_s = f"{full:13.2f}"
        else:
            full_s, ratio, vf2 = f"{'skipped':>13}", f"{'-':>7}", "skipped"
        search = report.timings["search_s"]
        print(f"{label:<28} {report.verdict:<11} {report.log10_order:11.2f} {search:9.3f} "
              f"{ours:8.3f} "
              f"{full_s} {ratio}  {vf2}", flush=True)
    print("* resnet20 with depth=110, width=2, shortcut A (ResNet-110 x2)")


if __name__ == "__main__":
    main()
