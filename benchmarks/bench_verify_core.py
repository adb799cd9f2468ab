"""Benchmark the exact automorphism search core against bliss on the fully explicit graph.

Builds the neuron-level unit graph of the MLP 784-512-512-512-10 through the real pipeline
(spec -> IR -> :func:`asymspec.ir.units.expand`), in two variants:

* standard: expected log10|Aut| = 3 log10 512! = 3499.62 with 797 orbits
  (784 inputs + 10 outputs as singletons + 3 hidden layers), see
  ``shared/notes/verifier-techniques.md``;
* W-Asym: 64 fixed entries per row with Gaussian float32 values (override edges whose colours
  are the exact float bits); expected trivial, certified by refinement alone.

For each it times :func:`asymspec.verify.find_automorphisms` (best of ``--repeat`` runs) and,
in the same process, igraph/bliss ``count_automorphisms`` on the fully explicit graph
(trainable edges share one colour and are not subdivided; fixed entries are subdivided with a
vertex coloured by their value), and prints the ratio.

Usage: ``python benchmarks/bench_verify_core.py [--repeat 5] [--skip-bliss]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import igraph as ig  # noqa: E402
import numpy as np  # noqa: E402

from asymspec.compiler import compile_ir  # noqa: E402
from asymspec.ir.unitgraph import UnitGraph  # noqa: E402
from asymspec.ir.units import expand  # noqa: E402
from asymspec.verify import find_automorphisms  # noqa: E402

SIZES = [784, 512, 512, 512, 10]


def build_mlp(sizes: list[int], fixed_per_row: int = 0, seed: int = 0) -> UnitGraph:
    """The unit graph of a bias-free ReLU MLP, through the real pipeline (spec -> IR -> expand)."""
    spec = {
        "name": "bench_mlp",
        "model": {"family": "mlp", "input_dim": sizes[0], "widths": list(sizes[1:-1]),
                  "output_dim": sizes[-1], "bias": False},
        "asymmetry": ({"seed": seed, "w_asym": {"nfix": fixed_per_row, "kappa": 1.0}}
                      if fixed_per_row else "none"),
    }
    return expand(compile_ir(spec))


def explicit_bliss_graph(ug: UnitGraph) -> tuple[ig.Graph, list[int]]:
    """Fully explicit igraph graph; only non-trainable (override / explicit) edges subdivided."""
    n = ug.n
    key_ovr = ug.src * n + ug.dst
    edges = []
    for b in range(ug.block_colour.shape[0]):
        xs = np.arange(*ug.block_src[b])
        ys = np.arange(*ug.block_dst[b])
        xx = np.repeat(xs, ys.shape[0])
        yy = np.tile(ys, xs.shape[0])
        keep = ~np.isin(xx * n + yy, key_ovr[ug.edge_block == b])
        edges.append(np.stack([xx[keep], yy[keep]], axis=1))
    # block edges are left unsubdivided: vertex colours separate layers, so each block's
    # colour is implied by its endpoints
    _, vcol = np.unique(ug.vertex_colour, return_inverse=True)
    base = int(vcol.max()) + 1
    m = ug.src.shape[0]
    colours = vcol.ravel()
    if m:
        _, ecol = np.unique(ug.edge_colour, return_inverse=True)
        w = n + np.arange(m)
        edges += [np.stack([ug.src, w], axis=1), np.stack([w, ug.dst], axis=1)]
        colours = np.concatenate([colours, base + ecol.ravel()])
    all_edges = np.concatenate(edges)
    g = ig.Graph(n=n + m, edges=all_edges.tolist(), directed=True)
    return g, colours.tolist()


def time_best(fn, repeat: int):
    best = math.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-bliss", action="store_true", help="skip the full-graph bliss runs")
    args = ap.parse_args()
    sys.set_int_max_str_digits(0)

    for name, fixed in (("standard", 0), ("w-asym (64 fixed/row)", 64)):
        t = time.perf_counter()
        ug = build_mlp(SIZES, fixed_per_row=fixed)
        t_build = time.perf_counter() - t
        t_ours, res = time_best(lambda ug=ug: find_automorphisms(ug), args.repeat)
        cert = res.certificate
        print(f"== MLP {'-'.join(map(str, SIZES))} {name}")
        print(
            f"   unit graph: n={ug.n}, edges={ug.num_edges:,} "
            f"({ug.num_explicit_edges:,} explicit), built in {t_build:.3f} s"
        )
        print(
            f"   find_automorphisms: {t_ours:.4f} s (best of {args.repeat}); "
            f"log10|Aut|={res.log10_order:.2f}, orbits={res.num_orbits}, "
            f"generators={len(res.generators)}, kind={cert['kind']}, rounds={cert['rounds']}, "
            f"cells={cert['cells']}"
        )
        phases = ", ".join(f"{k}={v * 1e3:.1f}ms" for k, v in cert["timings"].items())
        print(f"   phases: {phases}")
        if "reduced" in cert:
            r = cert["reduced"]
            print(
                f"   reduced: edges {r['edges_in']:,} -> {r['edges_kept']:,}, "
                f"free cells={r['free_cells']} ({r['free_vertices']} vertices)"
            )
        if args.skip_bliss:
            continue
        t = time.perf_counter()
        g, colours = explicit_bliss_graph(ug)
        t_gbuild = time.perf_counter() - t
        t = time.perf_counter()
        order = int(g.count_automorphisms(sh="fl", color=colours))
        t_bliss = time.perf_counter() - t
        log10_b = math.log10(order)
        print(
            f"   bliss on explicit graph ({g.vcount():,} vertices, {g.ecount():,} edges, "
            f"built in {t_gbuild:.2f} s): count {t_bliss:.3f} s, log10|Aut|={log10_b:.2f} "
            f"[{'agrees' if order == res.order else 'DISAGREES'}]"
        )
        print(
            f"   ratio bliss-count / find_automorphisms = {t_bliss / t_ours:.1f}x "
            f"(incl. graph build: {(t_bliss + t_gbuild) / t_ours:.1f}x)"
        )


if __name__ == "__main__":
    main()
