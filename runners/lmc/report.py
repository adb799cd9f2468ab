"""Figure 3-style plot and Table 1-style ``report.md`` for LMC results (toolkit report helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.report import (
    figure,
    markdown_table,
    paper,
    plot_curves,
    pm,
    save_figure,
    write_report,
)
from asymspec.run.spec import Experiment

FIGURE = "lmc_test_loss.png"


def plot(results: dict[str, Any], path: Path) -> Path:
    fig, ax = figure(5.0, 3.6)
    plot_curves(ax, results["t"], {e["label"]: e["curves"]["test_loss"]
                                   for e in results["variants"].values()})
    ax.set_xlabel("interpolation coefficient t")
    ax.set_ylabel("test loss")
    profile = f" ({results['profile']} profile)" if results.get("profile") else ""
    ax.set_title(f"{results['name']}{profile}: {results['dataset']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def markdown(results: dict[str, Any], experiment: Experiment) -> str:
    v = results["variants"]
    lines = [f"# {results['name']}: linear mode connectivity",
             "",
             f"Dataset `{results['dataset']}`, profile `{results.get('profile') or 'none'}`, "
             f"{results['pairs']} pair(s) per variant, {len(results['t'])} interpolation points. "
             "Barriers are test-loss barriers, mean ± std (ddof 1) over pairs: midpoint "
             "L(½θ₁+½θ₂) − ½(L(θ₁)+L(θ₂)) and the maximum over the path.",
             ""]
    rows = []
    for entry in v.values():
        b = entry["barrier"]
        rows.append([entry["label"], pm(b["test_barrier_mid"]), pm(b["test_barrier_max"]),
                     pm(b["train_barrier_mid"]), pm(entry["endpoint_test_acc"]),
                     paper(entry.get("paper"))])
    lines.append(markdown_table(["variant", "test barrier (midpoint)", "max over path",
                                 "train barrier (midpoint)", "endpoint test acc",
                                 "paper (Table 1)"], rows))
    lines += [f"![test loss along the path]({FIGURE})", ""]
    mids = {k: e["barrier"]["test_barrier_mid"]["mean"] for k, e in v.items()}
    if "standard" in mids and "w_asym" in mids:
        ok = mids["w_asym"] < mids["standard"]
        lines.append(f"W-Asym midpoint barrier {mids['w_asym']:.3f} vs standard "
                     f"{mids['standard']:.3f}: {'lower' if ok else 'NOT lower'} "
                     "(the paper's ordering).")
        lines.append("")
    wall = results.get("wall_s", {})
    lines += ["Appendix A: distance per trainable parameter between the two endpoints "
              "(‖θa − θb‖₂ / #trainable; before → after alignment) beside the barrier, and the "
              "endpoints' train / test accuracy (the train / validation gap).", ""]
    rows = []
    for entry in v.values():
        d, raw = entry.get("distance_per_param"), entry.get("distance_per_param_raw")
        dist = "–" if d is None else (
            f"{raw['mean']:.3g} → {d['mean']:.3g}" if raw and entry.get("align") != "none"
            else f"{d['mean']:.3g}")
        rows.append([entry["label"], dist, pm(entry["barrier"]["test_barrier_mid"]),
                     pm(entry.get("endpoint_train_acc")), pm(entry["endpoint_test_acc"])])
    lines += [markdown_table(["variant", "distance / parameter", "test barrier (midpoint)",
                              "endpoint train acc", "endpoint test acc"], rows), ""]
    lines.append(f"Wall time: training {wall.get('train', 0):.1f} s, alignment + evaluation "
                 f"{wall.get('eval', 0):.1f} s (sum over units).")
    lines += ["", "Per-pair midpoint test barriers:", ""]
    for entry in v.values():
        vals = ", ".join(f"{x:.3f}" for x in entry["barrier"]["test_barrier_mid"]["values"])
        lines.append(f"- {entry['label']}: {vals}")
    src = experiment.spec.file or "<spec>"
    lines += ["", f"Spec: `{src}`; resolved spec in `spec.yaml`; raw numbers in `results.json`.",
              ""]
    return "\n".join(lines)


def render(run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
    fig = plot(results, run_dir / FIGURE)
    return [fig, write_report(run_dir, markdown(results, experiment))]
