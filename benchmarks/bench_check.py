"""Benchmark `asymspec check` against general-purpose tools on the same graphs, in one run.

For each spec: our time (IR -> unit graph -> refinement / reduction / bliss on the reduced
graph), bliss (python-igraph) on the *full* unit graph with edge colours by subdivision, and
networkx VF2 with a time cap.  Prints seconds and ratios (baseline / ours); never asserts.

    python benchmarks/bench_check.py            # default set
    python benchmarks/bench_check.py --big      # adds the GPT-2-small-sized specs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import igraph as ig
import networkx as nx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asymspec  # noqa: E402
from asymspec.check import check_ir  # noqa: E402
from asymspec.ir.units import expand  # noqa: E402

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


def full_graph(ug) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Explicit edges, subdividing every edge whose colour is not the shared trainable one."""
    src, dst, col = _explicit(ug)
    colours = list(ug.vertex_colour.tolist())
    base = max(colours) + 1
    n = ug.n
    mids = np.arange(n, n + src.shape[0])
    edges = np.concatenate([np.stack([src, mids], 1), np.stack([mids, dst], 1)])
    colours += (base + col).tolist()
    return edges, np.array(colours), colours


def _explicit(ug):
    srcs, dsts, cols = [ug.src], [ug.dst], [ug.edge_colour]
    over = ug.edge_block >= 0
    for b in range(ug.block_colour.shape[0]):
        xs = np.arange(*ug.block_src[b])
        ys = np.arange(*ug.block_dst[b])
        xx, yy = np.meshgrid(xs, ys, indexing="ij")
        keep = np.ones(xx.size, dtype=bool)
        sel = over & (ug.edge_block == b)
        if sel.any():
            flat = (ug.src[sel] - xs[0]) * ys.size + (ug.dst[sel] - ys[0])
            keep[flat] = False
        srcs.append(xx.ravel()[keep])
        dsts.append(yy.ravel()[keep])
        cols.append(np.full(int(keep.sum()), ug.block_colour[b]))
    return np.concatenate(srcs), np.concatenate(dsts), np.concatenate(cols)


def bench_bliss_full(ug) -> float:
    edges, _, colours = full_graph(ug)
    t = time.perf_counter()
    g = ig.Graph(n=len(colours), edges=edges.tolist(), directed=True)
    g.count_automorphisms(color=colours)
    return time.perf_counter() - t


def bench_vf2(ug, cap: float) -> str:
    edges, _, colours = full_graph(ug)
    g = nx.DiGraph()
    g.add_nodes_from((i, {"c": c}) for i, c in enumerate(colours))
    g.add_edges_from(edges.tolist())
    matcher = nx.algorithms.isomorphism.DiGraphMatcher(
        g, g, node_match=lambda a, b: a["c"] == b["c"])
    t = time.perf_counter()
    k = 0
    for _ in matcher.isomorphisms_iter():
        k += 1
        if time.perf_counter() - t > cap:
            return f">{cap:.0f}s ({k} maps enumerated, no order)"
    return f"{time.perf_counter() - t:.2f}s ({k} maps)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--vf2-cap", type=float, default=10.0)
    ap.add_argument("--full-limit", type=int, default=2_000_000,
                    help="skip full-graph baselines above this many edges")
    args = ap.parse_args()
    rows = DEFAULT + (BIG if args.big else [])
    print(f"{'spec':<28} {'verdict':<11} {'log10|Aut|':>11} {'ours(s)':>8} "
          f"{'bliss-full(s)':>13} {'ratio':>7}  vf2")
    for name, overrides in rows:
        ir = asymspec.compile_ir(REPO / "specs" / f"{name}.yaml", overrides)
        t = time.perf_counter()
        report = check_ir(ir)
        ours = time.perf_counter() - t
        ug = expand(ir)
        label = name + ("*" if overrides else "")
        if ug.num_edges <= args.full_limit:
            full = bench_bliss_full(ug)
            vf2 = bench_vf2(ug, args.vf2_cap) if ug.num_edges <= 1_000_000 else "skipped"
            ratio = f"{full / ours:7.1f}x"
            full_s = f"{full:13.2f}"
        else:
            full_s, ratio, vf2 = f"{'skipped':>13}", f"{'-':>7}", "skipped"
        print(f"{label:<28} {report.verdict:<11} {report.log10_order:11.2f} {ours:8.2f} "
              f"{full_s} {ratio}  {vf2}", flush=True)
    print("* resnet20 with depth=110, width=2, shortcut A (ResNet-110 x2)")


if __name__ == "__main__":
    main()
