"""Figure (midpoint barrier vs coherence 1/c, one line per construction) and ``report.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.report import figure, markdown_table, pm, save_figure, write_report

FIGURE = "coherence_barrier.png"
LABELS = {"exact_copy": "exact copy", "random_tight_frame": "random tight frame"}


def plot(results: dict[str, Any], path: Path) -> Path:
    fig, ax = figure(5.0, 3.6)
    for con, per_c in results["constructions"].items():
        cells = sorted(per_c.values(), key=lambda e: e["coherence"])
        x = [e["coherence"] for e in cells]
        y = [e["midpoint_barrier"]["mean"] for e in cells]
        err = [e["midpoint_barrier"]["std"] for e in cells]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=LABELS.get(con, con))
    ax.set_xlabel("coherence 1/c of the data subspace")
    ax.set_ylabel("midpoint barrier (test MSE)")
    ax.set_title(f"{results['name']}: unaligned merging vs coherence", fontsize=9)
    ax.axhline(0, color="grey", lw=0.8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    n = s["outer_seeds"] * s["pairs"]
    lines = [f"# {results['name']}: synthetic coherence experiment", "",
             f"Sparse networks (width {s['network']['width']}, input {s['network']['input_dim']},"
             f" Bernoulli({s['network']['density']}) masks with zero fixed values) trained on "
             f"data whose 2-d subspace has coherence 1/c; midpoint barrier "
             f"L(½) − max(L(0), L(1)) of unaligned interpolation on test MSE, mean ± std over "
             f"{s['outer_seeds']} outer seeds × {s['pairs']} pairs = {n} pairs per cell, "
             f"{s['training']['epochs']} epochs. Wall time (all units): {results['wall_s']} s.",
             "", f"![barrier vs coherence]({FIGURE})", ""]
    for con, per_c in results["constructions"].items():
        cells = sorted(per_c.values(), key=lambda e: e["c"])
        rows = [[e["c"], f"{e['coherence']:.3f}", pm(e["midpoint_barrier"], 4),
                 pm(e["peak_barrier"], 4), pm(e["endpoint_test_mse"], 5)] for e in cells]
        lines += [f"## {LABELS.get(con, con)}", "",
                  markdown_table(["c", "coherence 1/c", "midpoint barrier", "peak barrier",
                                  "endpoint test MSE"], rows), ""]
    lines += ["The paper shows this experiment as a figure only; our notes hold no numbers "
              "from it to compare with.", ""]
    return "\n".join(lines)


def render(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    return [plot(results, run_dir / FIGURE), write_report(run_dir, markdown(results))]
